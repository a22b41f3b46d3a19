"""napari plugin for medrecon (npe2). Importing this package never imports Qt."""
