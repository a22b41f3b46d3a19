"""Reconstruct organs: image layer -> organ labels + one 3D surface per organ."""

from __future__ import annotations

from pathlib import Path

from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from medrecon.errors import InputError, MedreconError
from napari_plugin._jobs import ReconstructRequest, parse_organs, reconstruct_for_viewer
from napari_plugin._layers import (
    labelmap_from_layer,
    reconstruction_steps,
    show_as_plane,
    volume_from_layer,
)
from napari_plugin._qt._layer_combo import LayerCombo
from napari_plugin._qt._runner import JobRunner, canvas_widget
from napari_plugin._view import attach, manage, switch_to_3d

#: (label shown, ReconstructRequest.method)
METHOD_CHOICES = (
    ("Default model", "model"),
    ("Checkpoint or bundle file", "checkpoint"),
    ("HU preset", "preset"),
    ("Existing Labels layer", "labels"),
)


class ReconstructWidget(QWidget):
    """Segment an image layer (or take a Labels layer) and show organ meshes in 3D.

    The work runs in a napari thread worker; the progress bar follows
    medrecon's progress reports and Cancel stops the job at the next one.
    Results: a Labels layer with names and colours, named after the image and
    the label source (``"<image> organs"`` for the default model, ``"<image>
    <preset>"`` for a preset, so that results of different sources sit side by
    side), and one Surface layer per organ, named after it. They are added a
    few at a time, so the viewer keeps answering.
    """

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        attach(napari_viewer)  # orientation, per-view visibility, contours (see napari_plugin._view)
        self.image_combo = LayerCombo(napari_viewer, Image)
        self.image_combo.setToolTip("The CT or MR image layer to segment (placed in world mm)")
        self.method_combo = QComboBox()
        for text, key in METHOD_CHOICES:
            self.method_combo.addItem(text, key)
        self.method_combo.setToolTip(
            "Where the organ labels come from: the shipped model, your own checkpoint or MONAI bundle, "
            "a Hounsfield-unit preset (CT only), or a Labels layer you already have (meshes only)"
        )
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("model.safetensors, checkpoint folder or MONAI bundle")
        self.checkpoint_edit.setToolTip("Path of a medrecon checkpoint (file or folder) or a MONAI bundle")
        browse = QPushButton("Browse...")
        browse.setToolTip("Choose a checkpoint or bundle file")
        browse.clicked.connect(self._browse)
        self.checkpoint_row = QWidget()
        row = QHBoxLayout(self.checkpoint_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.checkpoint_edit)
        row.addWidget(browse)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(_preset_names())
        self.preset_combo.setToolTip(
            "Hounsfield-unit preset (CT only): a threshold range and clean-up, e.g. bone"
        )
        self.labels_combo = LayerCombo(napari_viewer, Labels)
        self.labels_combo.setToolTip("The Labels layer whose organs become meshes")
        self.organs_edit = QLineEdit()
        self.organs_edit.setPlaceholderText("all (or e.g. liver, spleen, 2)")
        self.organs_edit.setToolTip(
            "Organs to keep, by name or label id, separated by commas; empty keeps all. Enter runs"
        )
        self.device_combo = QComboBox()
        self.device_combo.addItems(["cpu", "cuda"])
        self.device_combo.setToolTip("Where the network runs: cpu, or cuda for an NVIDIA GPU")
        self.runner = JobRunner("Run", self)
        self.runner.repaint_apart(canvas_widget(napari_viewer))
        self.runner.run_button.clicked.connect(self.run)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Method", self.method_combo)
        form.addRow("Checkpoint", self.checkpoint_row)
        form.addRow("Preset", self.preset_combo)
        form.addRow("Labels", self.labels_combo)
        form.addRow("Organs", self.organs_edit)
        form.addRow("Device", self.device_combo)
        self._form = form
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.runner.widget)
        layout.addStretch(1)
        self.method_combo.currentIndexChanged.connect(self._method_changed)
        self._method_changed()
        self.runner.run_on_enter(self)

    # --- settings ---------------------------------------------------------------
    def method(self) -> str:
        """Return the chosen :data:`napari_plugin._jobs.METHODS` key."""
        return str(self.method_combo.currentData())

    def set_method(self, key: str) -> None:
        """Choose a method by key (``"model"``, ``"checkpoint"``, ``"preset"``, ``"labels"``)."""
        index = self.method_combo.findData(key)
        if index < 0:
            raise InputError(f"unknown method {key!r}")
        self.method_combo.setCurrentIndex(index)

    def request(self) -> ReconstructRequest:
        """Return the settings as a :class:`~napari_plugin._jobs.ReconstructRequest`."""
        method = self.method()
        model = "default"
        if method == "checkpoint":
            model = self.checkpoint_edit.text().strip()
            if not model:
                raise InputError("choose a checkpoint or bundle file, or pick the default model")
        return ReconstructRequest(
            method=method,
            model=model,
            preset=self.preset_combo.currentText(),
            organs=parse_organs(self.organs_edit.text()),
            device=self.device_combo.currentText(),
        )

    def _method_changed(self, *_args) -> None:
        method = self.method()
        visible = {
            self.checkpoint_row: method == "checkpoint",
            self.preset_combo: method == "preset",
            self.labels_combo: method == "labels",
            self.device_combo: method in ("model", "checkpoint"),
            self.image_combo: method != "labels",
        }
        for widget, show in visible.items():
            # label + field rather than QFormLayout.setRowVisible, which PyQt5 lacks
            self._form.labelForField(widget).setVisible(show)
            widget.setVisible(show)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Segmentation checkpoint or bundle", "",
            "Checkpoints (*.safetensors *.pt *.pth *.zip *.json);;All files (*)",
        )
        if path:
            self.checkpoint_edit.setText(path)

    # --- run ----------------------------------------------------------------------
    def run(self):
        """Start the reconstruction in a worker thread; returns the worker (or ``None``).

        A setting that stops the job before it starts is said in the status
        line (and as a notification); nothing changes in the viewer.
        """
        try:
            request = self.request()
            volume = labels = None
            if request.method == "labels":
                layer = self.labels_combo.layer()
                if layer is None:
                    raise InputError("no Labels layer to build meshes from: open or draw one first")
                labels = labelmap_from_layer(layer)
                name = layer.name
            else:
                layer = self.image_combo.layer()
                if layer is None:
                    raise InputError("no image layer to reconstruct: open a CT or MR study first")
                volume = volume_from_layer(layer)
                name = f"{layer.name} {_source_name(request)}"
            return self.runner.start(
                reconstruct_for_viewer, lambda result: self._show(result, name, request.method, layer),
                volume, request, labels=labels,
            )
        except MedreconError as exc:
            self.runner.refuse(exc)
            return None

    def _show(self, result, name: str, method: str, source):
        """Yield the steps that add the results (run a few at a time by the job runner)."""
        labels, organ_meshes, surfaces = result
        # meshes of an existing Labels layer are attached to it; new labels get a layer
        steps = reconstruction_steps(
            self.viewer, None if method == "labels" else labels, organ_meshes, name=name, surfaces=surfaces,
        )
        image = source if method != "labels" else self.image_combo.layer()
        if image is not None and image in self.viewer.layers:
            # hidden in 3D (shown in 2D): drawing the CT is a good part of each 3D frame in software
            # OpenGL; shown there by the user, it is an axial plane under the meshes, not a volume
            show_as_plane(image)
            manage(image, "image", self.viewer.dims.ndisplay)
        if method == "labels" and organ_meshes and source in self.viewer.layers:
            # hidden in 3D before the switch, not after: napari would draw it as a 3D volume once
            manage(source, "labels", self.viewer.dims.ndisplay)
        # 3D before the layers: each surface is drawn as it comes, not all at once at the end, and
        # the Labels layer goes in hidden (it hides in 3D), so napari does not make a 3D texture of it
        yield from switch_to_3d(self.viewer)
        yield from steps


def _source_name(request: ReconstructRequest) -> str:
    """Name the label source in a result layer name: ``organs``, the preset or the checkpoint."""
    if request.method == "preset":
        return request.preset
    if request.method == "checkpoint":
        return Path(request.model).stem or "organs"
    return "organs"


def _preset_names() -> list[str]:
    from medrecon.sources.presets import load_presets

    return list(load_presets())
