"""Qt widgets of the medrecon napari plugin (all Qt code lives in this package)."""
