"""Reconstruct organs: image layer -> organ labels + one 3D surface per organ."""

from __future__ import annotations

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
from napari_plugin._jobs import ReconstructRequest, parse_organs, reconstruct
from napari_plugin._layers import (
    labelmap_from_layer,
    show_as_plane,
    show_reconstruction,
    volume_from_layer,
)
from napari_plugin._qt._layer_combo import LayerCombo
from napari_plugin._qt._runner import JobRunner

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
    Results: a Labels layer ``"<image> organs"`` with names and colours and
    one Surface layer per organ, named after it.
    """

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.image_combo = LayerCombo(napari_viewer, Image)
        self.method_combo = QComboBox()
        for text, key in METHOD_CHOICES:
            self.method_combo.addItem(text, key)
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("model.safetensors, checkpoint folder or MONAI bundle")
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        self.checkpoint_row = QWidget()
        row = QHBoxLayout(self.checkpoint_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.checkpoint_edit)
        row.addWidget(browse)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(_preset_names())
        self.labels_combo = LayerCombo(napari_viewer, Labels)
        self.organs_edit = QLineEdit()
        self.organs_edit.setPlaceholderText("all (or e.g. liver, spleen, 2)")
        self.device_combo = QComboBox()
        self.device_combo.addItems(["cpu", "cuda"])
        self.runner = JobRunner("Run", self)
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
        """Start the reconstruction in a worker thread; returns the worker (or ``None``)."""
        from napari.utils.notifications import show_error

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
                name = f"{layer.name} organs"
            return self.runner.start(
                reconstruct, lambda result: self._show(result, name, request.method, layer),
                volume, request, labels=labels,
            )
        except MedreconError as exc:
            show_error(str(exc))
            return None

    def _show(self, result, name: str, method: str, source) -> None:
        labels, organ_meshes = result
        # meshes of an existing Labels layer are attached to it; new labels get a layer
        if method == "labels":
            show_reconstruction(self.viewer, None, organ_meshes, name=name)
        else:
            show_reconstruction(self.viewer, labels, organ_meshes, name=name)
            if source in self.viewer.layers:
                show_as_plane(source)  # an axial CT plane under the meshes, not a volume over them
        self.viewer.dims.ndisplay = 3


def _preset_names() -> list[str]:
    from medrecon.sources.presets import load_presets

    return list(load_presets())
