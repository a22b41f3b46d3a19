"""Organ colours for Labels and Surface layers, from :func:`medrecon.labels.organ_colour`.

Common abdominal and thoracic structures get familiar anatomical colours, so
that a liver looks like a liver; other labels get a fixed colour of their id.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from medrecon.labels import organ_colour as _rgb


def organ_colour(label: int, name: str | None = None) -> np.ndarray:
    """RGBA colour (4,) float in [0, 1] for a label id and its structure name."""
    return np.array([*_rgb(name, label), 1.0])


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
