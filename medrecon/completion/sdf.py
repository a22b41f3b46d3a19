"""Signed-distance interpolation between annotated slices (the classical baseline).

Shape-based interpolation (Raya and Udupa, 1990; Herman et al., 1992): each
drawn 2D mask becomes a signed distance map in millimetres (negative inside);
between two drawn slices the maps are blended linearly along the slice axis and
the organ is where the blend is negative. Beyond the outermost drawn slices the
organ tapers to a point where :class:`~medrecon.completion.sparse.Annotation`
says it ends (its ``lower``/``upper``): there the map is a constant equal to the
deepest inside distance of the end slice, so the thickest part of the organ
closes halfway to that bound.

Arrays here have the slice axis last: (I, J, K), K being the slice axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medrecon.completion.sparse import Annotation


@dataclass(frozen=True)
class LabelScore:
    """A per-label inside score in a box of the grid (positive inside).

    Attributes
    ----------
    label : int
        Label id.
    box : tuple of 3 slice
        Where ``score`` lies in the (I, J, K) array.
    score : (bi, bj, bk) ndarray of float32
        Positive inside the organ; the organ surface is its zero level.
    """

    label: int
    box: tuple[slice, slice, slice]
    score: np.ndarray


def slice_sdf(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Signed distance (mm) of a 2D mask: negative inside, positive outside.

    Parameters
    ----------
    mask : (I, J) ndarray of bool
        The drawn region.
    spacing : (2,) array_like of float
        Pixel size in mm along I and J.

    Returns
    -------
    (I, J) ndarray of float32
        Distance to the nearest pixel of the other side, minus the distance to
        the nearest pixel of this side; its sign reproduces ``mask`` exactly.
    """
    mask = np.asarray(mask, dtype=bool)
    sp = np.asarray(spacing, dtype=np.float64)
    big = float(np.sum(np.asarray(mask.shape) * sp))
    d_out = ndimage.distance_transform_edt(~mask, sampling=sp) if mask.any() else np.full(mask.shape, big)
    d_in = ndimage.distance_transform_edt(mask, sampling=sp) if (~mask).any() else np.full(mask.shape, big)
    return (d_out - d_in).astype(np.float32)


def label_box(
    array: np.ndarray,
    annotation: Annotation,
    *,
    margin: float = 0.0,
    min_margin: int = 1,
) -> tuple[slice, slice, slice]:
    """Return the box that holds a label's completion in an (I, J, K) array.

    In plane: the bounding box of everything drawn for the label, grown by
    ``margin`` times its size (at least ``min_margin`` pixels). Along K: from the
    organ's lower to upper end, within the array.
    """
    mask = np.asarray(array)[:, :, list(annotation.present)] == annotation.label
    box = []
    for axis in (0, 1):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in (0, 1, 2) if a != axis)))
        grow = max(min_margin, int(np.ceil(margin * (idx[-1] - idx[0] + 1))))
        box.append(slice(max(0, idx[0] - grow), min(array.shape[axis], idx[-1] + grow + 1)))
    k0 = max(0, int(np.ceil(annotation.lower)))
    k1 = min(array.shape[2] - 1, int(np.floor(annotation.upper)))
    box.append(slice(k0, k1 + 1))
    return tuple(box)  # type: ignore[return-value]


def interpolate_sdf(
    array: np.ndarray,
    annotation: Annotation,
    *,
    spacing: np.ndarray,
    box: tuple[slice, slice, slice],
) -> np.ndarray:
    """Signed distance (mm) of one label interpolated between its drawn slices.

    Parameters
    ----------
    array : (I, J, K) ndarray of int
        Sparse labels, slice axis last.
    annotation : Annotation
        Where the label was drawn and where it ends.
    spacing : (3,) array_like of float
        Voxel size in mm (I, J, K).
    box : tuple of 3 slice
        Region to compute (see :func:`label_box`); must contain the drawn pixels.

    Returns
    -------
    (bi, bj, bk) ndarray of float32
        Negative inside the organ; on drawn slices its sign is the drawing.
    """
    bi, bj, bk = box
    planes = {
        p: slice_sdf(np.asarray(array[bi, bj, p]) == annotation.label, np.asarray(spacing)[:2])
        for p in annotation.present
    }
    first, last = annotation.present[0], annotation.present[-1]
    cap_lo = np.full_like(planes[first], max(0.0, -float(planes[first].min())))
    cap_hi = np.full_like(planes[last], max(0.0, -float(planes[last].min())))
    knots = [annotation.lower, *annotation.present, annotation.upper]
    values = [cap_lo, *(planes[p] for p in annotation.present), cap_hi]
    ks = np.arange(bk.start, bk.stop)
    out = np.empty(planes[first].shape + (ks.size,), np.float32)
    for n, k in enumerate(ks):
        i = int(np.searchsorted(knots, k, side="right")) - 1
        i = min(max(i, 0), len(knots) - 2)
        a, b = knots[i], knots[i + 1]
        t = 0.0 if b == a else float(np.clip((k - a) / (b - a), 0.0, 1.0))
        out[:, :, n] = (1.0 - t) * values[i] + t * values[i + 1]
    return out


def sdf_scores(
    array: np.ndarray,
    annotations: dict[int, Annotation],
    *,
    spacing: np.ndarray,
) -> list[LabelScore]:
    """Inside scores (minus the signed distance, mm) of every annotated label.

    Parameters
    ----------
    array : (I, J, K) ndarray of int
        Sparse labels, slice axis last.
    annotations : dict
        From :func:`medrecon.completion.sparse.annotations` (with ``axis=2``).
    spacing : (3,) array_like of float
        Voxel size in mm (I, J, K).
    """
    scores = []
    for label, ann in annotations.items():
        box = label_box(array, ann)
        phi = interpolate_sdf(array, ann, spacing=spacing, box=box)
        scores.append(LabelScore(label, box, -phi))
    return scores
