"""A combo box of the viewer's layers of one type, kept in sync with the layer list."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QWidget


class LayerCombo(QComboBox):
    """Lists the viewer's layers of ``layer_type`` by name; ``optional`` adds a "(none)" entry."""

    NONE = "(none)"

    def __init__(self, viewer, layer_type: type, *, optional: bool = False, parent: QWidget | None = None):
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._optional = optional
        events = viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.refresh)
        self.refresh()

    def refresh(self, *_args) -> None:
        """Re-list the layers, keeping the current choice when it still exists."""
        try:
            current = self.currentText()
        except RuntimeError:  # the Qt side is gone (viewer closing); nothing to update
            return
        names = [layer.name for layer in self._viewer.layers if isinstance(layer, self._type)]
        self.blockSignals(True)
        self.clear()
        if self._optional:
            self.addItem(self.NONE)
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        elif names and not self._optional:
            self.setCurrentIndex(len(names) - 1 if len(names) else 0)
        self.blockSignals(False)
        self.currentTextChanged.emit(self.currentText())

    def layer(self):
        """Return the chosen layer, or ``None``."""
        name = self.currentText()
        if not name or name == self.NONE or name not in self._viewer.layers:
            return None
        layer = self._viewer.layers[name]
        return layer if isinstance(layer, self._type) else None
