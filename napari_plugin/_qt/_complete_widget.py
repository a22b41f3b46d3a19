"""Complete from slices: organs drawn on a few slices -> whole 3D organs."""

from __future__ import annotations

from napari.layers import Image, Labels
from qtpy.QtWidgets import QFormLayout, QVBoxLayout, QWidget

from medrecon.errors import InputError, MedreconError
from napari_plugin._layers import (
    labelmap_from_layer,
    labels_layer_data,
    replace_layer,
    volume_from_layer,
)
from napari_plugin._qt._layer_combo import LayerCombo
from napari_plugin._qt._runner import JobRunner, canvas_widget
from napari_plugin._qt._slices import MethodCombo, PlaneCombo, network_available
from napari_plugin._view import attach

__all__ = ["CompleteWidget", "network_available"]


class CompleteWidget(QWidget):
    """Fill in 3D organs from a Labels layer drawn on a few slices.

    Draw each organ (its label id) on some slices of one plane, choose that
    plane and Run: a new Labels layer ``"<layer> completed"`` holds the filled
    organs; the drawn layer is left as it is. The plane follows the viewer's
    2D view until it is chosen by hand.
    """

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        attach(napari_viewer)  # orientation, per-view visibility, contours (see napari_plugin._view)
        self.labels_combo = LayerCombo(napari_viewer, Labels)
        self.labels_combo.setToolTip(
            "The Labels layer with each organ drawn (its label id) on a few slices of one plane"
        )
        self.image_combo = LayerCombo(napari_viewer, Image, optional=True)
        self.image_combo.setToolTip(
            "The image the organs were drawn on; the network uses it to follow organ edges (optional)"
        )
        self.plane_combo = PlaneCombo(napari_viewer)
        self.method_combo = MethodCombo()
        self.runner = JobRunner("Complete", self)
        self.runner.repaint_apart(canvas_widget(napari_viewer))
        self.runner.run_button.clicked.connect(self.run)
        form = QFormLayout()
        form.addRow("Drawn labels", self.labels_combo)
        form.addRow("Image", self.image_combo)
        form.addRow("Drawn on", self.plane_combo)
        form.addRow("Method", self.method_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.runner.widget)
        layout.addStretch(1)
        self.runner.run_on_enter(self)

    def run(self):
        """Start the completion in a worker; returns it (or ``None`` on a bad setting, said in the status line)."""
        from medrecon.completion import complete

        try:
            layer = self.labels_combo.layer()
            if layer is None:
                raise InputError("no Labels layer: draw the organ on a few slices in a Labels layer first")
            sparse = labelmap_from_layer(layer)
            image_layer = self.image_combo.layer()
            image = volume_from_layer(image_layer) if image_layer is not None else None
            method = str(self.method_combo.currentData())
            axis = self.plane_combo.array_axis(sparse.affine)
            name = f"{layer.name} completed"
            return self.runner.start(
                complete, lambda result: self._show(result, name),
                sparse, image=image, method=method, axis=axis,
            )
        except MedreconError as exc:
            self.runner.refuse(exc)
            return None

    def _show(self, labels, name: str) -> None:
        data, kwargs, _ = labels_layer_data(labels, name=name)
        replace_layer(self.viewer, name, Labels(data, **kwargs))

