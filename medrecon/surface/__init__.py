"""Surfaces from label maps and intensity volumes, in LPS millimetres.

:mod:`.extract` runs marching cubes on one mask or volume, :mod:`.labels`
one surface per label, :mod:`.resample` the shape-based resampling to cubic voxels.
Every surface is a :class:`~medrecon.triangles.TriangleMesh`.
"""

from medrecon.surface.extract import iso_surface, mask_surface
from medrecon.surface.labels import (
    label_boxes,
    label_surfaces,
    select_labels,
    surfaces_in_boxes,
)

__all__ = [
    "iso_surface",
    "label_boxes",
    "label_surfaces",
    "mask_surface",
    "select_labels",
    "surfaces_in_boxes",
]
