"""Organ colours for Labels and Surface layers.

Common abdominal and thoracic structures get familiar anatomical colours (in
the spirit of 3D Slicer's generic anatomy table) so that a liver looks like a
liver; anything else falls back to napari's default label colours.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# (substring of the TotalSegmentator-style name, RGB 0..255); first match wins,
# so the more specific names come first.
_ANATOMY: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("gallbladder", (139, 150, 98)),
    ("liver", (221, 130, 101)),
    ("spleen", (157, 108, 162)),
    ("kidney", (185, 102, 83)),
    ("adrenal", (244, 214, 49)),
    ("stomach", (216, 132, 105)),
    ("pancreas", (249, 180, 111)),
    ("duodenum", (255, 253, 229)),
    ("small_bowel", (205, 167, 142)),
    ("colon", (204, 168, 143)),
    ("esophagus", (211, 171, 143)),
    ("bladder", (222, 154, 132)),
    ("aorta", (224, 97, 76)),
    ("vena_cava", (0, 151, 206)),
    ("portal", (0, 122, 171)),
    ("artery", (216, 101, 79)),
    ("vein", (0, 151, 206)),
    ("heart", (206, 110, 84)),
    ("lung", (197, 165, 145)),
    ("trachea", (182, 228, 255)),
    ("vertebra", (241, 214, 145)),
    ("rib", (241, 214, 145)),
    ("sacrum", (241, 214, 145)),
    ("hip", (241, 214, 145)),
    ("femur", (241, 214, 145)),
    ("sternum", (241, 214, 145)),
    ("bone", (241, 214, 145)),
    ("brain", (250, 250, 225)),
)


def organ_colour(label: int, name: str | None = None) -> np.ndarray:
    """RGBA colour (4,) float in [0, 1] for a label id and its structure name."""
    key = (name or "").lower()
    for part, rgb in _ANATOMY:
        if part in key:
            return np.array([*(c / 255.0 for c in rgb), 1.0])
    from napari.utils.colormaps import label_colormap

    # napari's own cyclic palette, so unknown labels look as napari would draw them
    return np.asarray(label_colormap(49).map(np.array([int(label) % 49 + 1]))[0], dtype=float)


def label_colour_dict(names: Mapping[int, str], labels: list[int] | None = None) -> dict:
    """``color_dict`` for :class:`napari.utils.colormaps.DirectLabelColormap`.

    Parameters
    ----------
    names : Mapping[int, str]
        Label id -> name.
    labels : list of int, optional
        Ids present in the data, coloured even when they have no name.
    """
    ids = sorted({int(k) for k in names} | {int(k) for k in labels or []} - {0})
    colours: dict = {None: np.zeros(4), 0: np.zeros(4)}
    for label in ids:
        colours[label] = organ_colour(label, names.get(label))
    return colours
