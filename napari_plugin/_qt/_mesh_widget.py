"""Mesh and export: mesh options, a live print-readiness table, export to files."""

from __future__ import annotations

from pathlib import Path

from napari.layers import Labels
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from medrecon.errors import InputError, MedreconError
from medrecon.io.formats import MESH_FORMATS
from medrecon.mesh import MeshOptions
from napari_plugin._jobs import ReconstructRequest, parse_organs, reconstruct_for_viewer
from napari_plugin._layers import META_KEY, labelmap_from_layer, reconstruction_steps
from napari_plugin._qt._layer_combo import LayerCombo
from napari_plugin._qt._runner import JobRunner
from napari_plugin._view import attach

#: (header, report key, format, tooltip) of the table's number columns; short
#: headers (two lines at most) keep the table readable in a narrow dock.
COLUMNS = (
    ("Closed", "watertight", None,
     "Watertight: the mesh encloses a volume with no holes, as a 3D printer needs"),
    ("Volume\n(mL)", "mesh_volume_ml", "{:.1f}", "Volume enclosed by the printable mesh, millilitres"),
    ("Faces", "faces", "{:d}", "Triangles in the printable mesh (what is exported)"),
    ("HD95 to\nmask (mm)", "hd95_mm", "{:.2f}",
     "95th-percentile distance (both ways) between the printable mesh and the raw marching-cubes "
     "surface of the label mask: how far smoothing and decimation moved the surface"),
    ("Plausible", "plausible", None,
     "The organ checks (volume, position, mean HU, pieces, model confidence) passed"),
    ("Why not", "reasons", None, "Why the organ checks failed"),
)
#: An organ name the table shows whole at its smallest width (longer ones are elided).
WIDTH_NAME = "inferior_vena_cava"
#: Milliseconds between the last option change and the automatic rebuild.
LIVE_DELAY_MS = 600


class MeshExportWidget(QWidget):
    """Turn a Labels layer into printable meshes, report on them, and export them.

    Changing an option rebuilds the meshes (after a short pause, cancelling a
    build in progress) so that the table and the 3D view stay current. The
    table has one row per organ; ticked rows are exported.
    """

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        attach(napari_viewer)  # orientation, per-view visibility, contours (see napari_plugin._view)
        self.organ_meshes: list = []
        self._source = ""
        self._pending = False
        defaults = MeshOptions()
        self.labels_combo = LayerCombo(napari_viewer, Labels)
        self.labels_combo.setToolTip("The Labels layer whose organs become meshes")
        self.organs_edit = QLineEdit()
        self.organs_edit.setPlaceholderText("all (or e.g. liver, spleen, 2)")
        self.organs_edit.setToolTip(
            "Organs to mesh, by name or label id, separated by commas; empty meshes all. Enter builds"
        )
        self.smooth_spin = _spin(0.0, 1.0, 0.05, defaults.smooth, 2)
        self.smooth_spin.setToolTip(
            "Smoothing strength, 0 (none) to 1 (strong); volume-preserving, removes the voxel steps"
        )
        self.decimate_spin = _spin(0.0, 0.95, 0.05, defaults.decimate, 2)
        self.decimate_spin.setToolTip(
            "Fraction of triangles to remove (0.5 halves them); the mesh stays watertight"
        )
        self.keep_largest_check = QCheckBox("keep the largest piece only")
        self.keep_largest_check.setChecked(defaults.keep_largest)
        self.keep_largest_check.setToolTip("Drop the small loose pieces of each organ")
        self.hollow_spin = _spin(0.0, 20.0, 0.5, defaults.hollow_mm, 1, suffix=" mm")
        self.hollow_spin.setToolTip("Wall thickness of a hollow print in mm; 0 prints solid")
        self.live_check = QCheckBox("rebuild on every change")
        self.live_check.setChecked(True)
        self.live_check.setToolTip("Rebuild the meshes shortly after each option change")
        self.runner = JobRunner("Build meshes", self)
        self.runner.run_button.clicked.connect(self.build)
        self.runner.job_finished.connect(self._job_finished)

        self.table = QTableWidget(0, 1 + len(COLUMNS))
        self.table.setHorizontalHeaderLabels(["Organ", *(c[0] for c in COLUMNS)])
        self.table.horizontalHeaderItem(0).setToolTip("Tick the organs to export")
        for col, column in enumerate(COLUMNS, start=1):
            self.table.horizontalHeaderItem(col).setToolTip(column[3])
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)  # names take what is left
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setToolTip("Print readiness of each organ's mesh; ticked rows are exported")
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        # wide enough for the numbers and an organ name such as inferior_vena_cava, in this font
        metrics = self.table.fontMetrics()
        numbers = sum(max(metrics.horizontalAdvance(line) for line in column[0].split("\n")) + 16
                      for column in COLUMNS)
        self.table.setMinimumWidth(numbers + metrics.horizontalAdvance(WIDTH_NAME) + 72)
        self.table.setMinimumHeight(6 * metrics.height() + 40)

        self.folder_edit = QLineEdit(str(Path.home() / "medrecon_export"))
        self.folder_edit.setToolTip("Folder to write meshes/<organ> files and report.json into")
        browse = QPushButton("Browse...")
        browse.setToolTip("Choose the export folder")
        browse.clicked.connect(self._browse)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder_edit)
        folder_row.addWidget(browse)
        self.format_combo = QComboBox()
        self.format_combo.addItems(list(MESH_FORMATS))
        self.format_combo.setToolTip("Mesh file format (all in millimetres)")
        self.frame_combo = QComboBox()
        self.frame_combo.addItems(["LPS", "RAS"])
        self.frame_combo.setToolTip(
            "Coordinate frame of the written vertices: LPS (DICOM, ITK, Slicer 5) or RAS (NIfTI, Slicer 4)"
        )
        self.export_button = QPushButton("Export ticked organs")
        self.export_button.setToolTip("Write the ticked organs' full-resolution meshes and report.json")
        self.export_button.clicked.connect(self.export)

        options = QFormLayout()
        options.addRow("Labels", self.labels_combo)
        options.addRow("Organs", self.organs_edit)
        options.addRow("Smoothing", self.smooth_spin)
        options.addRow("Decimation", self.decimate_spin)
        options.addRow("", self.keep_largest_check)
        options.addRow("Hollow wall", self.hollow_spin)
        options.addRow("", self.live_check)
        export = QFormLayout()
        export.addRow("Folder", folder_row)
        export.addRow("Format", self.format_combo)
        export.addRow("Frame", self.frame_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(options)
        layout.addWidget(self.runner.widget)
        layout.addWidget(self.table, 1)  # the table takes the height left
        layout.addLayout(export)
        layout.addWidget(self.export_button)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(LIVE_DELAY_MS)
        self._timer.timeout.connect(self._live_rebuild)
        self.labels_combo.currentTextChanged.connect(self._labels_changed)
        self._labels_changed()
        for spin in (self.smooth_spin, self.decimate_spin, self.hollow_spin):
            spin.valueChanged.connect(self._option_changed)
        self.keep_largest_check.toggled.connect(self._option_changed)
        self.runner.run_on_enter(self)

    # --- options and building ---------------------------------------------------------
    def options(self) -> MeshOptions:
        """Return the mesh options set in the widget."""
        try:
            return MeshOptions(
                smooth=self.smooth_spin.value(),
                decimate=self.decimate_spin.value(),
                keep_largest=self.keep_largest_check.isChecked(),
                hollow_mm=self.hollow_spin.value(),
            )
        except ValueError as exc:  # out-of-range values are the user's to fix
            raise InputError(str(exc)) from exc

    def build(self):
        """Build the meshes of the chosen Labels layer in a worker; returns it (or ``None``, said in the status line)."""
        try:
            layer = self.labels_combo.layer()
            if layer is None:
                raise InputError("no Labels layer to mesh: reconstruct organs or open a label file first")
            labels = labelmap_from_layer(layer)
            name = layer.name
            request = ReconstructRequest(method="labels", organs=parse_organs(self.organs_edit.text()),
                                         mesh=self.options())
            return self.runner.start(
                reconstruct_for_viewer, lambda result: self._show(result[1], name, result[2]),
                None, request, labels=labels,
            )
        except MedreconError as exc:
            self.runner.refuse(exc)
            return None

    def _labels_changed(self, *_args) -> None:
        """Show the meshes already made for the chosen layer (by a reconstruction), if any."""
        layer = self.labels_combo.layer()
        meta = layer.metadata.get(META_KEY, {}) if layer is not None else {}
        self.organ_meshes = list(meta.get("organ_meshes", [])) if isinstance(meta, dict) else []
        self._source = layer.name if layer is not None else ""
        self._fill_table()

    def _option_changed(self, *_args) -> None:
        if self.live_check.isChecked() and self.labels_combo.layer() is not None:
            self._timer.start()

    def _live_rebuild(self) -> None:
        if self.runner.running:
            self._pending = True
            self.runner.cancel()
        else:
            self.build()

    def _job_finished(self, _outcome: str) -> None:
        if self._pending:
            self._pending = False
            self.build()

    def _show(self, organ_meshes: list, name: str, display: list):
        """Yield the steps that show the meshes (run a few at a time by the job runner)."""
        self.organ_meshes = list(organ_meshes)
        self._source = name
        self._fill_table()
        yield from reconstruction_steps(self.viewer, None, self.organ_meshes, name=name, display=display)

    def _fill_table(self) -> None:
        self.table.setRowCount(len(self.organ_meshes))
        for row, om in enumerate(self.organ_meshes):
            organ = QTableWidgetItem(om.name)
            organ.setToolTip(f"{om.name} (label {om.label}); tick to export")
            organ.setFlags(organ.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            organ.setCheckState(Qt.CheckState.Checked)
            self.table.setItem(row, 0, organ)
            for col, (_header, key, fmt, _tip) in enumerate(COLUMNS, start=1):
                self.table.setItem(row, col, QTableWidgetItem(_cell(om.report.get(key), fmt)))

    # --- export ------------------------------------------------------------------
    def ticked(self) -> list:
        """Return the organ meshes whose rows are ticked."""
        return [
            om for row, om in enumerate(self.organ_meshes)
            if self.table.item(row, 0).checkState() == Qt.CheckState.Checked
        ]

    def export(self) -> dict | None:
        """Write the ticked organs and ``report.json`` to the folder; returns the report."""
        from napari.utils.notifications import show_error, show_info

        from medrecon.pipeline import export_meshes

        try:
            chosen = self.ticked()
            if not chosen:
                raise InputError("no organ to export: build meshes and tick at least one row")
            folder = self.folder_edit.text().strip()
            if not folder:
                raise InputError("choose an output folder")
            report = export_meshes(
                chosen, folder, fmt=self.format_combo.currentText(),
                frame=self.frame_combo.currentText(),
                fields={"labels_layer": self._source, "options": self.options().to_dict()},
            )
        except MedreconError as exc:
            self.runner.status.setText(f"not exported: {exc}")
            show_error(str(exc))
            return None
        self.runner.status.setText(f"exported {len(chosen)} mesh(es) to {folder}")
        show_info(f"medrecon: wrote {len(chosen)} mesh(es) and report.json to {folder}")
        return report

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export folder", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)


def _spin(lo: float, hi: float, step: float, value: float, decimals: int, *, suffix: str = ""):
    spin = QDoubleSpinBox()
    spin.setRange(lo, hi)
    spin.setSingleStep(step)
    spin.setDecimals(decimals)
    spin.setValue(value)
    spin.setSuffix(suffix)
    return spin


def _cell(value, fmt: str | None) -> str:
    if value is None:
        return "-"
    if fmt is None:
        if isinstance(value, list | tuple):
            return "; ".join(str(v) for v in value)
        return "yes" if value is True else "no" if value is False else str(value)
    return fmt.format(int(value) if fmt.endswith("d}") else float(value))
