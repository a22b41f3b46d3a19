"""Surfaces from label maps and intensity volumes, in LPS millimetres.

:mod:`.extract` runs marching cubes on one mask or volume, :mod:`.labels`
one surface per label, :mod:`.resample` the shape-based resampling to cubic voxels,
:mod:`.arrays` the plain-array mesh type the meshing pipeline passes around.
"""

from medrecon.surface.arrays import MeshArrays
from medrecon.surface.extract import iso_surface, mask_surface, mask_surface_arrays
from medrecon.surface.labels import (
    label_boxes,
    label_surfaces,
    select_labels,
    surface_arrays_in_boxes,
    surfaces_in_boxes,
)

__all__ = [
    "MeshArrays",
    "iso_surface",
    "label_boxes",
    "label_surfaces",
    "mask_surface",
    "mask_surface_arrays",
    "select_labels",
    "surface_arrays_in_boxes",
    "surfaces_in_boxes",
]
