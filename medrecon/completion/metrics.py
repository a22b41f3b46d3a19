"""Overlap and surface-distance scores of binary masks on a voxel grid (mm).

Used by the shape-completion benchmark and tests. Surfaces are the boundary
voxels of each mask (voxels with a 6-neighbour outside); distances are Euclidean
in millimetres, using the voxel spacing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two boolean masks, in [0, 1] (1.0 when both are empty)."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of one mask to the other's surface.

    Parameters
    ----------
    pred, truth : (I, J, K) ndarray of bool
        Non-empty masks on the same grid.
    spacing : (3,) array_like of float
        Voxel size in mm.

    Returns
    -------
    tuple of two 1D ndarray of float
        pred-to-truth and truth-to-pred distances.
    """
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if not pred.any() or not truth.any():
        raise ValueError("surface distances need two non-empty masks")
    sp = np.asarray(spacing, dtype=np.float64)
    # both surfaces lie in the union's bounding box, so distances computed there are exact
    box = tuple(
        slice(max(0, int(idx[0]) - 1), int(idx[-1]) + 2)
        for idx in (np.flatnonzero(np.any(pred | truth, axis=tuple(a for a in range(3) if a != ax)))
                    for ax in range(3))
    )
    pred, truth = pred[box], truth[box]
    sp_pred, sp_truth = _surface(pred), _surface(truth)
    to_truth = ndimage.distance_transform_edt(~sp_truth, sampling=sp)
    to_pred = ndimage.distance_transform_edt(~sp_pred, sampling=sp)
    return to_truth[sp_pred], to_pred[sp_truth]


def mean_surface_distance(pred: np.ndarray, truth: np.ndarray, spacing) -> float:
    """Symmetric mean surface distance (Chamfer), mm.

    The mean over both surfaces of the distance to the other surface; ``inf``
    when exactly one mask is empty, 0 when both are.
    """
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if not pred.any() and not truth.any():
        return 0.0
    if not pred.any() or not truth.any():
        return float("inf")
    a, b = surface_distances(pred, truth, spacing)
    return float((a.sum() + b.sum()) / (a.size + b.size))
