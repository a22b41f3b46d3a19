"""Segment: edit a Labels layer with threshold, islands, grow from seeds, fill, smooth and margin.

Every tool calls :mod:`medrecon.edit` (through :mod:`napari_plugin._segment`)
in the job runner's worker; its result is written into the same Labels layer
as one step of napari's undo history (Ctrl+Z on the layer undoes it). Sizes
are in millimetres, points in LPS millimetres; nothing assumes Hounsfield
units except the CT presets, offered for CT images only.
"""

from __future__ import annotations

from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleRangeSlider

from medrecon import edit
from medrecon.errors import InputError, MedreconError
from napari_plugin import _segment as seg
from napari_plugin._geometry import world_to_lps
from napari_plugin._layers import labelmap_from_layer, layer_names, volume_from_layer
from napari_plugin._qt._layer_combo import LayerCombo
from napari_plugin._qt._runner import JobRunner
from napari_plugin._qt._slices import MethodCombo, PlaneCombo
from napari_plugin._view import attach

#: Tab titles, in order; the Apply button runs the tool of the open tab.
TOOLS = ("Threshold", "Islands", "Grow from seeds", "Fill between slices", "Smooth", "Margin")
CUSTOM = "(custom range)"
EVERYWHERE = "everywhere"


class SegmentWidget(QWidget):
    """Edit a Labels layer in place, each Apply one undoable step.

    Choose the image and the Labels layer (or make an empty one on the image
    with "New labels"), the label id to write or change, open a tool's tab
    and press Apply (Enter).
    """

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        attach(napari_viewer)
        self._image: tuple[object, object] | None = None  # (layer, Volume) of the chosen image
        self._watched = None  # the Labels layer whose events we follow
        self._preview = None
        self._adding = False
        self._shown: tuple[int, int] | None = None
        self._message = ""
        self.image_combo = LayerCombo(napari_viewer, Image, optional=True)
        self.image_combo.setToolTip("The image the tools read: CT in HU or MR in scanner units")
        self.labels_combo = LayerCombo(napari_viewer, Labels)
        self.labels_combo.setToolTip("The Labels layer the tools edit in place (Ctrl+Z on it undoes each step)")
        self.new_button = QPushButton("New labels")
        self.new_button.setToolTip("Add an empty Labels layer on the image's voxel grid, to paint and edit")
        self.label_spin = _int_spin(1, "The label id that Threshold writes and Islands, Smooth and "
                                       "Margin change; follows the layer's selected label")
        self.all_check = QCheckBox("all labels")
        self.all_check.setToolTip("Islands, Smooth and Margin change every label, not only the one chosen")
        self.tabs = QTabWidget()
        self.tabs.setToolTip("The tool that Apply runs")
        for title, page in zip(TOOLS, (self._threshold_tab(), self._islands_tab(), self._grow_tab(),
                                       self._fill_tab(), self._smooth_tab(), self._margin_tab()), strict=True):
            self.tabs.addTab(page, title)
        self.runner = JobRunner("Apply", self)
        self.runner.run_button.clicked.connect(self.apply)
        self.runner.job_finished.connect(self._finished)
        row = QHBoxLayout()
        row.addWidget(self.labels_combo, 1)
        row.addWidget(self.new_button)
        label_row = QHBoxLayout()
        label_row.addWidget(self.label_spin, 1)
        label_row.addWidget(self.all_check)
        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", row)
        form.addRow("Label id", label_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.tabs)
        layout.addWidget(self.runner.widget)
        layout.addStretch(1)
        self.new_button.clicked.connect(self.new_labels)
        self.image_combo.currentTextChanged.connect(self._image_changed)
        self.labels_combo.currentTextChanged.connect(self._labels_changed)
        self.tabs.currentChanged.connect(self.update_preview)
        napari_viewer.dims.events.current_step.connect(self.update_preview)
        napari_viewer.dims.events.ndisplay.connect(self.update_preview)
        napari_viewer.layers.events.removed.connect(self._removed)
        self._image_changed()
        self._labels_changed()
        self.runner.run_on_enter(self)

    # --- tabs ----------------------------------------------------------------------
    def _threshold_tab(self) -> QWidget:
        self.preset_combo = QComboBox()
        self.preset_combo.setToolTip("HU presets as starting points for the range (offered for CT images only)")
        self.range_slider = QLabeledDoubleRangeSlider(Qt.Orientation.Horizontal)
        self.range_slider.setToolTip("Lowest and highest value kept, in the image's units (both included)")
        self.inside_combo = QComboBox()
        self.inside_combo.setToolTip("Write the label only inside this label of the layer, or everywhere")
        self.preview_check = QCheckBox("live preview on the slice")
        self.preview_check.setChecked(True)
        self.preview_check.setToolTip("Show the voxels in range on the displayed 2D slice while you move the range")
        self.preset_combo.activated.connect(self._preset_chosen)
        self.range_slider.valueChanged.connect(self.update_preview)
        self.preview_check.toggled.connect(self.update_preview)
        return _form(("Preset", self.preset_combo), ("Range", self.range_slider),
                     ("Inside", self.inside_combo), ("", self.preview_check))

    def _islands_tab(self) -> QWidget:
        self.keep_check = QCheckBox("click a piece to keep it")
        self.keep_check.setToolTip("While ticked, a click on the Labels layer keeps only the connected piece "
                                   "under the mouse (other labels stay)")
        self.min_spin = _mm_spin(0.0, 1e7, 1000.0, " mm³", "Apply removes the pieces smaller than this volume")
        self.keep_check.toggled.connect(lambda _on: self._watch(self.labels_combo.layer()))
        return _form(("", self.keep_check), ("Remove pieces under", self.min_spin))

    def _grow_tab(self) -> QWidget:
        self.background_spin = _int_spin(255, "The label id you painted the background strokes with; "
                                              "every other painted id is an organ")
        self.box_spin = _mm_spin(0.0, 500.0, 20.0, " mm",
                                 "The organs grow inside the box around the strokes widened by this much")
        return _form(("Background id", self.background_spin), ("Box margin", self.box_spin))

    def _fill_tab(self) -> QWidget:
        self.plane_combo = PlaneCombo(self.viewer)
        self.method_combo = MethodCombo()
        self.stop_check = QCheckBox("stop at the first and last drawn slice")
        self.stop_check.setChecked(True)
        self.stop_check.setToolTip("No organ extends past the first and last slice it was drawn on")
        return _form(("Drawn on", self.plane_combo), ("Method", self.method_combo), ("", self.stop_check))

    def _smooth_tab(self) -> QWidget:
        self.smooth_spin = _mm_spin(0.1, 50.0, 2.0, " mm", "Smoothing scale: bumps and dents smaller than "
                                                           "about this size go")
        return _form(("Scale", self.smooth_spin))

    def _margin_tab(self) -> QWidget:
        self.margin_spin = _mm_spin(-100.0, 100.0, 3.0, " mm", "Grow (positive) or shrink (negative) by this "
                                                               "distance; growth never takes another label")
        return _form(("Distance", self.margin_spin))

    # --- layers --------------------------------------------------------------------
    def _image_changed(self, *_args) -> None:
        layer = self.image_combo.layer()
        if self._image is not None and layer is self._image[0]:
            return  # the layer list changed, not the image
        self._image = None
        self.preset_combo.clear()
        self.preset_combo.addItem(CUSTOM)
        try:
            if layer is not None:
                volume = volume_from_layer(layer)
                low, high = seg.intensity_range(volume)
                self._image = (layer, volume)
                if seg.is_ct(volume):
                    for name, lo, hi in seg.ct_presets():
                        self.preset_combo.addItem(f"{name} ({_end(lo)}..{_end(hi)} HU)", (lo, hi))
                integral = volume.array.dtype.kind in "iub"
                self.range_slider.setDecimals(0 if integral else 2)
                self.range_slider.setRange(low, high)
                self.range_slider.setValue(((low + high) / 2, high))
        except MedreconError as exc:
            self.runner.status.setText(str(exc))
        self.update_preview()

    def _preset_chosen(self, index: int) -> None:
        ends = self.preset_combo.itemData(index)
        if ends is not None:
            lo, hi = ends
            self.range_slider.setValue((self.range_slider.minimum() if lo is None else lo,
                                        self.range_slider.maximum() if hi is None else hi))

    def _labels_changed(self, *_args) -> None:
        layer = self.labels_combo.layer()
        if layer is not self._watched:  # else the layer list changed, not the chosen layer
            self._watch(layer)
            if layer is not None:
                self.label_spin.setValue(max(int(layer.selected_label), 1))
        self._refresh_inside()

    def _watch(self, layer) -> None:
        """Follow ``layer``'s selected label and painting; hold the click-to-keep callback on it."""
        old = self._watched
        if old is not None:
            old.events.selected_label.disconnect(self._selected_label)
            old.events.paint.disconnect(self._refresh_inside)
            if self._on_click in old.mouse_drag_callbacks:
                old.mouse_drag_callbacks.remove(self._on_click)
        self._watched = layer
        if layer is None:
            return
        layer.events.selected_label.connect(self._selected_label)
        layer.events.paint.connect(self._refresh_inside)
        if self.keep_check.isChecked():
            layer.mode = "pan_zoom"  # a click picks a piece instead of painting
            layer.mouse_drag_callbacks.append(self._on_click)

    def _selected_label(self, event) -> None:
        try:
            self.label_spin.setValue(max(int(event.value), 1))
        except RuntimeError:  # the widget is gone, the layer stays
            pass

    def _refresh_inside(self, *_args) -> None:
        try:
            current = self.inside_combo.currentData()
        except RuntimeError:  # the widget is gone, the layer stays
            return
        self.inside_combo.clear()
        self.inside_combo.addItem(EVERYWHERE, None)
        layer = self.labels_combo.layer()
        if layer is not None:
            names = layer_names(layer)
            for i in seg.present_labels(layer):
                self.inside_combo.addItem(f"{i} {names.get(i, '')}".strip(), i)
        self.inside_combo.setCurrentIndex(max(self.inside_combo.findData(current), 0))

    def new_labels(self) -> None:
        """Add an empty Labels layer on the chosen image's grid and choose it."""
        if self._image is None:
            self.runner.refuse(InputError("choose an image first: the new labels go on its voxel grid"))
            return
        layer, volume = self._image
        data, kwargs, _ = seg.new_labels_data(volume, name=f"{layer.name} labels")
        added = self.viewer.add_labels(data, **kwargs)
        self.labels_combo.setCurrentText(added.name)

    # --- threshold preview ---------------------------------------------------------------
    def update_preview(self, *_args) -> None:
        """Draw the voxels in range on the displayed slice (threshold tab, 2D views only)."""
        try:
            wanted = self.preview_check.isChecked() and self.tabs.currentIndex() == 0
        except RuntimeError:  # the widget is gone (viewer closing)
            return
        if self._adding:
            return
        wanted = wanted and self._image is not None
        if not wanted:
            self._drop_preview()
            return
        layer, volume = self._image
        if self._preview is None or self._preview not in self.viewer.layers \
                or self._preview.data.shape != layer.data.shape:
            self._add_preview(volume)
        where = seg.displayed_slice(self.viewer, layer, volume)
        mask = None
        if where is not None:
            low, high = self.range_slider.value()
            mask = edit.threshold_slice(volume, low=low, high=high, axis=where[0], index=where[1])
        self._shown = seg.show_preview(self._preview, mask, where, self._shown)

    def _removed(self, event) -> None:
        if event.value is self._preview and not self._adding:  # the user (or closing) took it away
            self._preview, self._shown = None, None
            try:
                self.preview_check.setChecked(False)
            except RuntimeError:  # the widget is gone (viewer closing)
                pass

    def _drop_preview(self) -> None:
        preview, self._preview, self._shown = self._preview, None, None
        if preview is not None and preview in self.viewer.layers:
            self.viewer.layers.remove(preview)

    def _add_preview(self, volume) -> None:
        self._drop_preview()
        active = self.viewer.layers.selection.active
        data, kwargs, _ = seg.preview_data(volume)
        self._adding = True  # adding a layer moves the dims, which asks for a preview again
        try:
            self._preview = self.viewer.add_labels(data, **kwargs)
        finally:
            self._adding = False
        self._shown = None
        if active is not None:  # keep painting on the layer the user chose
            self.viewer.layers.selection.active = active

    # --- tools ---------------------------------------------------------------------
    def apply(self):
        """Run the open tab's tool in a worker; returns it (or ``None``, said in the status line)."""
        tool = (self.apply_threshold, self.remove_islands, self.grow, self.fill,
                self.smooth, self.margin)[self.tabs.currentIndex()]
        return tool()

    def apply_threshold(self):
        """Give the chosen label to the voxels in range (inside the chosen label, if any)."""
        def make(labels):
            low, high = self.range_slider.value()
            return seg.threshold_labels, (labels, self._volume()), {
                "low": low, "high": high, "label": self.label_spin.value(),
                "inside": self.inside_combo.currentData()}
        return self._run("threshold", make)

    def remove_islands(self):
        """Remove the pieces smaller than the chosen volume (of the chosen label, or all)."""
        return self._run("remove islands", lambda labels: (
            edit.remove_islands, (labels,), {"min_mm3": self.min_spin.value(), "label": self._label()}))

    def keep_at(self, position):
        """Keep only the piece under the napari world point ``position`` (z, y, x mm)."""
        point = tuple(float(v) for v in world_to_lps(position))
        return self._run("keep piece", lambda labels: (edit.keep_island, (labels, point), {}))

    def grow(self):
        """Grow the painted strokes (organs and background) to a 3D segmentation."""
        return self._run("grow from seeds", lambda labels: (edit.grow_from_seeds, (self._volume(), labels), {
            "background": self.background_spin.value(), "margin_mm": self.box_spin.value(),
            "with_progress": True}))

    def fill(self):
        """Fill the organs in between the slices they were drawn on."""
        return self._run("fill between slices", lambda labels: (edit.fill_between_slices, (labels,), {
            "image": None if self._image is None else self._image[1],
            "axis": self.plane_combo.array_axis(labels.affine),
            "method": str(self.method_combo.currentData()),
            "stop_at_drawn": self.stop_check.isChecked(), "with_progress": True}))

    def smooth(self):
        """Smooth the chosen label's (or every label's) boundary."""
        return self._run("smooth", lambda labels: (
            edit.smooth, (labels, self.smooth_spin.value()), {"label": self._label()}))

    def margin(self):
        """Grow or shrink the chosen label (or every label)."""
        return self._run("margin", lambda labels: (
            edit.margin, (labels, self.margin_spin.value()), {"label": self._label()}))

    def _label(self) -> int | None:
        return None if self.all_check.isChecked() else self.label_spin.value()

    def _volume(self):
        if self._image is None:
            raise InputError("choose the image layer this tool reads")
        return self._image[1]

    def _run(self, stage: str, make):
        try:
            layer = self.labels_combo.layer()
            if layer is None:
                raise InputError("no Labels layer to edit: open one, or make one with 'New labels'")
            fn, args, kwargs = make(labelmap_from_layer(layer))
            return self.runner.start(seg.call_edit, lambda result: self._write(layer, stage, result),
                                     fn, *args, stage=stage, **kwargs)
        except MedreconError as exc:
            self.runner.refuse(exc)
            return None

    def _write(self, layer, stage: str, result) -> None:
        if layer not in self.viewer.layers:
            raise InputError(f"layer {layer.name!r} was removed while {stage} ran; nothing was written")
        changed = seg.write_labels(layer, result)
        self._message = f"{stage}: {changed:,} voxels changed" + (" (Ctrl+Z on the layer undoes it)" * bool(changed))
        self._refresh_inside()

    def _finished(self, outcome: str) -> None:
        if outcome == "done" and self._message:
            self.runner.status.setText(self._message)
        self._message = ""

    def _on_click(self, layer, event) -> None:
        if event.type == "mouse_press" and self.keep_check.isChecked():
            self.keep_at(event.position)


def _form(*rows) -> QWidget:
    page = QWidget()
    form = QFormLayout(page)
    for text, field in rows:
        form.addRow(text, field)
    return page


def _int_spin(value: int, tip: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(1, 65535)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin


def _mm_spin(lo: float, hi: float, value: float, suffix: str, tip: str) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(lo, hi)
    spin.setDecimals(1)
    spin.setValue(value)
    spin.setSuffix(suffix)
    spin.setToolTip(tip)
    return spin


def _end(value: float | None) -> str:
    return "" if value is None else f"{value:g}"
