"""Mesh and export: mesh and print options, a live print-readiness table, export to files.

The options are those of ``medrecon mesh`` (:class:`medrecon.mesh.MeshOptions`),
print process, minimum wall, drain holes and fit to the printer included; the
checks and the table's numbers come from the pipeline's report.
"""

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
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from medrecon.errors import InputError, MedreconError
from medrecon.io.formats import MESH_FORMATS
from medrecon.mesh import MeshOptions
from medrecon.mesh.printcheck import PROCESSES
from napari_plugin._jobs import ReconstructRequest, parse_organs, reconstruct_for_viewer
from napari_plugin._layers import META_KEY, labelmap_from_layer, reconstruction_steps
from napari_plugin._qt._layer_combo import LayerCombo
from napari_plugin._qt._runner import JobRunner, canvas_widget
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
    ("Print-\nready", "print_ready", None,
     "Every print check passed: closed and manifold, no self-intersection, walls not thinner than "
     "the process's minimum, no piece below its resolution (hover a cell for what failed)"),
    ("Self-\ncrossings", "self_intersections", "{:d}",
     "Pairs of faces of the mesh that cut through each other (a slicer prints them unpredictably)"),
    ("Thinnest\nwall (mm)", ("wall_thickness_mm", "min"), "{:.2f}",
     "Thinnest wall, measured inward along the surface normal (mm)"),
    ("Plausible", "plausible", None,
     "The organ checks (volume, position, mean HU, pieces, model confidence) passed"),
    ("Why not", "reasons", None, "Why the organ checks failed"),
)
#: An organ name the table shows whole at its smallest width (longer ones are elided).
WIDTH_NAME = "inferior_vena_cava"
#: Most drain holes per cavity the widget offers.
MAX_DRAIN_HOLES = 8
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
        self._built_with: dict | None = None  # the options of the meshes built here
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
        self.process_combo = QComboBox()
        self.process_combo.addItems(list(PROCESSES))
        self.process_combo.setCurrentText(defaults.process)
        self.process_combo.setToolTip(
            "Printing process the print checks judge against: "
            + ", ".join(f"{p.name} (walls from {p.min_wall_mm:g} mm, details from {p.resolution_mm:g} mm)"
                        for p in PROCESSES.values())
        )
        self.min_wall_spin = _spin(0.0, 20.0, 0.1, defaults.min_wall_mm or 0.0, 2, suffix=" mm")
        self.min_wall_spin.setSpecialValueText("process default")
        self.min_wall_spin.setToolTip(
            "Thinnest wall a print-ready mesh may have (mm); 'process default' takes the process's"
        )
        self.drain_spin = QSpinBox()
        self.drain_spin.setRange(0, MAX_DRAIN_HOLES)
        self.drain_spin.setValue(defaults.drain_holes)
        self.drain_spin.setToolTip(
            "Drain holes per cavity of a hollow print, drilled at its lowest points (+z up), "
            "so that resin or powder can leave; needs a hollow wall"
        )
        self.drain_diameter_spin = _spin(0.5, 20.0, 0.5, defaults.drain_diameter_mm, 1, suffix=" mm")
        self.drain_diameter_spin.setToolTip("Diameter of the drain holes (mm)")
        self.scale_spin = _spin(0.01, 10.0, 0.05, defaults.scale, 2)
        self.scale_spin.setToolTip(
            "Uniform scale of the whole scene (1: life size) for the exported files; the report and "
            "the table state it. The meshes shown stay life size, on the image"
        )
        self.bed_edit = QLineEdit()
        self.bed_edit.setPlaceholderText("none (or X,Y,Z mm, e.g. 200,200,180)")
        self.bed_edit.setToolTip(
            "Printable volume X,Y,Z in mm: shrink the whole scene uniformly until it fits (never "
            "enlarged); instead of a scale. Empty: no fitting"
        )
        self.live_check = QCheckBox("rebuild on every change")
        self.live_check.setChecked(True)
        self.live_check.setToolTip("Rebuild the meshes shortly after each option change")
        self.runner = JobRunner("Build meshes", self)
        self.runner.repaint_apart(canvas_widget(napari_viewer))
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
        drain_row = QHBoxLayout()
        drain_row.addWidget(self.drain_spin)
        drain_row.addWidget(self.drain_diameter_spin)
        options.addRow("Drain holes", drain_row)
        options.addRow("Process", self.process_combo)
        options.addRow("Min. wall", self.min_wall_spin)
        options.addRow("Scale", self.scale_spin)
        options.addRow("Fit bed", self.bed_edit)
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
        for spin in (self.smooth_spin, self.decimate_spin, self.hollow_spin, self.min_wall_spin,
                     self.drain_spin, self.drain_diameter_spin, self.scale_spin):
            spin.valueChanged.connect(self._option_changed)
        self.keep_largest_check.toggled.connect(self._option_changed)
        self.process_combo.currentTextChanged.connect(self._option_changed)
        self.bed_edit.editingFinished.connect(self._option_changed)
        self.runner.run_on_enter(self)

    # --- options and building ---------------------------------------------------------
    def options(self) -> MeshOptions:
        """Return the mesh options set in the widget."""
        import argparse

        # the CLI's --fit-bed parser: one reading of X,Y,Z
        from medrecon.cli._common import bed_size

        try:
            bed = self.bed_edit.text().strip()
            return MeshOptions(
                smooth=self.smooth_spin.value(),
                decimate=self.decimate_spin.value(),
                keep_largest=self.keep_largest_check.isChecked(),
                hollow_mm=self.hollow_spin.value(),
                scale=self.scale_spin.value(),
                fit_bed=bed_size(bed) if bed else None,
                process=self.process_combo.currentText(),
                min_wall_mm=self.min_wall_spin.value() or None,
                drain_holes=self.drain_spin.value(),
                drain_diameter_mm=self.drain_diameter_spin.value(),
            )
        except (ValueError, argparse.ArgumentTypeError) as exc:  # out-of-range values are the user's to fix
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
            built_with = request.mesh.to_dict()
            return self.runner.start(
                reconstruct_for_viewer, lambda result: self._show(result[1], name, result[2], built_with),
                None, request, labels=labels,
            )
        except MedreconError as exc:
            self.runner.refuse(exc)
            return None

    def _labels_changed(self, *_args) -> None:
        """Show the meshes already made for the chosen layer (by a reconstruction), if any."""
        layer = self.labels_combo.layer()
        meta = layer.metadata.get(META_KEY, {}) if layer is not None else {}
        meshes = list(meta.get("organ_meshes", [])) if isinstance(meta, dict) else []
        if [id(m) for m in meshes] != [id(m) for m in self.organ_meshes]:
            self._built_with = None  # not the meshes built here: a reconstruction's, with its own options
        self.organ_meshes = meshes
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

    def _show(self, organ_meshes: list, name: str, surfaces: list, built_with: dict):
        """Yield the steps that show the meshes (run a few at a time by the job runner)."""
        self.organ_meshes = list(organ_meshes)
        self._built_with = built_with
        self._source = name
        self._fill_table()
        yield from reconstruction_steps(self.viewer, None, self.organ_meshes, name=name, surfaces=surfaces)

    def _fill_table(self) -> None:
        self.table.setRowCount(len(self.organ_meshes))
        for row, om in enumerate(self.organ_meshes):
            organ = QTableWidgetItem(om.name)
            organ.setToolTip(f"{om.name} (label {om.label}); tick to export")
            organ.setFlags(organ.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            organ.setCheckState(Qt.CheckState.Checked)
            self.table.setItem(row, 0, organ)
            for col, (_header, key, fmt, _tip) in enumerate(COLUMNS, start=1):
                self.table.setItem(row, col, QTableWidgetItem(_cell(_value(om.report, key), fmt)))
            ready = self.table.item(row, 1 + [c[1] for c in COLUMNS].index("print_ready"))
            ready.setToolTip(_print_tooltip(om.report))

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
                # the options the meshes were built with here, not the fields' current values
                fields={"labels_layer": self._source,
                        "options": self._built_with if self._built_with is not None else self.options().to_dict()},
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


def _value(report, key: str | tuple[str, ...]):
    """Return the report's value at ``key``, a key or a path of keys into nested entries (None if absent)."""
    for part in (key,) if isinstance(key, str) else key:
        report = report.get(part) if isinstance(report, dict) else None
    return report


def _print_tooltip(report) -> str:
    """Say what the print checks found for one organ, in the CLI's words, with its drain holes."""
    from medrecon.cli._common import print_status

    if "print_ready" not in report:
        return "not checked"
    text = f"{print_status(report)} ({report.get('process', '?')}, walls from {report.get('min_wall_mm', '?')} mm)"
    holes = report.get("drain_holes")
    if holes:
        text += f"; {len(holes)} drain hole(s)"
    if report.get("scale", 1.0) != 1.0:
        text += f"; scale {report['scale']:.3g} (not life size)"
    return text


def _cell(value, fmt: str | None) -> str:
    if value is None:
        return "-"
    if fmt is None:
        if isinstance(value, list | tuple):
            return "; ".join(str(v) for v in value)
        return "yes" if value is True else "no" if value is False else str(value)
    return fmt.format(int(value) if fmt.endswith("d}") else float(value))
