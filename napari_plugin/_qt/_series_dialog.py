"""Ask which DICOM series to open: the reader's questions, as small modal dialogs."""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListWidget,
    QMessageBox,
    QVBoxLayout,
)


def ask_series(source: str, choices: Sequence[str], default: int) -> list[int] | None:
    """Ask which of several series to open.

    Parameters
    ----------
    source : str
        The folder's name, for the question.
    choices : sequence of str
        One line per volume series ("number: description (N slices)").
    default : int
        The row chosen beforehand (the CLI's ``--series auto`` choice).

    Returns
    -------
    list of int or None
        The chosen rows, in list order; ``None`` when the user cancelled.
    """
    dialog = QDialog(QApplication.activeWindow())
    dialog.setWindowTitle("medrecon: choose a DICOM series")
    layout = QVBoxLayout(dialog)
    layout.addWidget(QLabel(
        f"{source} holds {len(choices)} volume series. Open which? "
        "(Ctrl-click picks several; the first is shown.)"
    ))
    box = QListWidget()
    box.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
    box.addItems(list(choices))
    box.setCurrentRow(default)
    box.setToolTip("Preselected: CT before MR, then the thinnest slices, then the most slices")
    box.itemDoubleClicked.connect(lambda _item: dialog.accept())
    layout.addWidget(box)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    layout.addWidget(buttons)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return None
    rows = sorted(box.row(item) for item in box.selectedItems())
    return rows or None


def ask_whole_series(file_name: str, series: str) -> bool | None:
    """Ask whether to open the whole series a dropped DICOM file belongs to.

    Returns
    -------
    bool or None
        True: the whole series; False: only the file; None: cancelled.
    """
    box = QMessageBox(QApplication.activeWindow())
    box.setWindowTitle("medrecon: open the whole series?")
    box.setText(f"{file_name} is one slice of the series {series}.")
    whole = box.addButton("Open the whole series", QMessageBox.ButtonRole.AcceptRole)
    single = box.addButton("Only this file", QMessageBox.ButtonRole.RejectRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(whole)
    box.exec()
    clicked = box.clickedButton()
    if clicked is whole:
        return True
    if clicked is single:
        return False
    return None
