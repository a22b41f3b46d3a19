"""Choices shared by the widgets that work on slices drawn in one plane (Complete, Segment)."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QWidget

from napari_plugin._geometry import array_axis_across

#: (label shown, napari world axis the slices are taken across)
PLANES = (("Axial", 0), ("Coronal", 1), ("Sagittal", 2))
#: (label shown, medrecon.completion method)
METHODS = (("Image-to-shape network", "network"), ("Signed-distance interpolation", "sdf"))


class PlaneCombo(QComboBox):
    """The plane slices were drawn in; follows the viewer's 2D view until the user chooses one."""

    def __init__(self, viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        for text, axis in PLANES:
            self.addItem(text, axis)
        self.setToolTip("The plane the slices were drawn in; follows the viewer's 2D view until you choose")
        self._follow_view = True
        self.activated.connect(self._plane_chosen)
        viewer.dims.events.order.connect(self._view_changed)
        self._view_changed()

    def _plane_chosen(self, *_args) -> None:
        self._follow_view = False

    def _view_changed(self, *_args) -> None:
        if not self._follow_view:
            return
        try:
            across = self._viewer.dims.order[-3] if self._viewer.dims.ndim >= 3 else 0
            self.setCurrentIndex(self.findData(int(across)))
        except RuntimeError:  # widget already deleted while the viewer closes
            pass

    def array_axis(self, affine_lps) -> int:
        """Return the (i, j, k) axis across the chosen plane, for an array with voxel-to-LPS ``affine_lps``."""
        return array_axis_across(affine_lps, int(self.currentData()))


class MethodCombo(QComboBox):
    """How organs are filled in between drawn slices (:data:`METHODS`); the network when installed."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        for text, key in METHODS:
            self.addItem(text, key)
        self.setToolTip(
            "Image-to-shape network (learned shapes, needs the installed model) or "
            "signed-distance interpolation between the drawn slices"
        )
        if not network_available():  # until a shape model is installed, the classical method works
            self.setCurrentIndex(self.findData("sdf"))


def network_available() -> bool:
    """Tell whether the default shape-completion model is installed."""
    try:
        from medrecon.completion.shape_net import DEFAULT_MODEL
    except ImportError:
        return False
    return DEFAULT_MODEL.is_dir()
