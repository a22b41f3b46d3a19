"""A combo box of the viewer's layers of one type, kept in sync with the layer list."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QWidget


class LayerCombo(QComboBox):
    """Lists the viewer's layers of ``layer_type`` by name; ``optional`` adds a "(none)" entry.

    Previews drawn by a widget (``metadata["medrecon"]["kind"] == "preview"``) are not listed.

    The newest layer is chosen unless the user picked another one (or "(none)").
    """

    NONE = "(none)"

    def __init__(self, viewer, layer_type: type, *, optional: bool = False, parent: QWidget | None = None):
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._optional = optional
        self._none_chosen = False  # "(none)" stays only when the user picked it
        self.activated.connect(lambda index: setattr(self, "_none_chosen", self.itemText(index) == self.NONE))
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
        names = [layer.name for layer in self._viewer.layers
                 if isinstance(layer, self._type) and not _is_preview(layer)]
        self.blockSignals(True)
        self.clear()
        if self._optional:
            self.addItem(self.NONE)
        self.addItems(names)
        if current in names or (current == self.NONE and self._none_chosen):
            self.setCurrentText(current)
        elif names:
            self.setCurrentIndex(self.count() - 1)  # the newest layer
        self.blockSignals(False)
        self.currentTextChanged.emit(self.currentText())

    def layer(self):
        """Return the chosen layer, or ``None``."""
        name = self.currentText()
        if not name or name == self.NONE or name not in self._viewer.layers:
            return None
        layer = self._viewer.layers[name]
        return layer if isinstance(layer, self._type) else None


def _is_preview(layer) -> bool:
    meta = layer.metadata.get("medrecon") if isinstance(layer.metadata, dict) else None
    return isinstance(meta, dict) and meta.get("kind") == "preview"
