"""Surfaces from label maps and intensity volumes, in LPS millimetres (see :mod:`.extract`)."""

from medrecon.surface.extract import iso_surface, label_surfaces, mask_surface, select_labels

__all__ = ["iso_surface", "label_surfaces", "mask_surface", "select_labels"]
