"""Segment-Editor tools on label maps: threshold, islands, margin, smooth, grow, fill.

What 3D Slicer's Segment Editor and InVesalius offer, as plain functions that
the napari Segment widget (and scripts) call. Every function takes and returns
medrecon types and never changes its input; sizes are in millimetres (mm,
mm^3) and points in world LPS mm (see :mod:`medrecon.volume`), never voxels,
so anisotropic and oblique grids give the same physical result. Nothing here
assumes a CT: thresholds and seed growing work on any intensities (HU, MR
scanner units).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medrecon.completion import complete
from medrecon.edit.grow import GROW_MM, grow_from_seeds
from medrecon.errors import EmptySegmentationError, InputError
from medrecon.progress import ProgressFn
from medrecon.sources.mask_steps import bounding_box
from medrecon.sources.presets import check_range, in_range, threshold_mask
from medrecon.volume import LabelMap, Volume

__all__ = ["GROW_MM", "fill_between_slices", "grow_from_seeds", "keep_island", "margin", "remove_islands",
           "smooth", "threshold", "threshold_slice"]


#: Face-connected pieces, as the shells marching cubes makes from a mask.
_FACES = ndimage.generate_binary_structure(3, 1)


def threshold(image: Volume, *, low: float | None, high: float | None,
              inside: np.ndarray | None = None) -> np.ndarray:
    """Voxels with ``low <= value <= high``, optionally inside a mask.

    The same comparison as ``--threshold`` and the presets
    (:func:`medrecon.sources.presets.threshold_mask`), without the CT check, so
    MR intensities work too.

    Parameters
    ----------
    image : Volume
        Any intensity image (HU, MR scanner units).
    low, high : float or None
        Inclusive range in the image's units; ``None`` leaves that end open.
    inside : (I, J, K) ndarray of bool, optional
        Keep only voxels of this mask (on the image's grid).

    Returns
    -------
    (I, J, K) ndarray of bool
        The voxels in range, on the image's grid.

    Raises
    ------
    InputError
        If ``low`` is above ``high`` or ``inside`` is not on the image's grid.
    """
    mask = threshold_mask(image, low, high, name="threshold", ct_only=False)
    if inside is not None:
        inside = np.asarray(inside, dtype=bool)
        if inside.shape != image.shape:
            raise InputError(f"the mask is {inside.shape} but the image is {image.shape}: "
                             "restrict with a mask on the image's grid")
        mask &= inside
    return mask


def threshold_slice(image: Volume, *, low: float | None, high: float | None, axis: int,
                    index: int) -> np.ndarray:
    """One slice of :func:`threshold` (no mask), cheap enough for a live preview.

    Parameters
    ----------
    image : Volume
        Any intensity image.
    low, high : float or None
        Inclusive range; ``None`` leaves that end open.
    axis : int
        Array axis across which the slice is taken.
    index : int
        Slice index along ``axis``.

    Returns
    -------
    2D ndarray of bool
        Slice ``index`` across ``axis`` in range.
    """
    check_range(low, high, units="")
    if axis not in (0, 1, 2) or not 0 <= index < image.shape[axis]:
        raise InputError(f"slice {index} across axis {axis} is outside the image {image.shape}")
    # a plain slice: np.take would copy a Fortran-ordered image whole on every slider move
    plane = np.asarray(image.array)[(slice(None),) * axis + (index,)]
    return in_range(plane, low, high)


def _chosen(labels: LabelMap, label: int | None) -> list[int]:
    present = labels.labels
    if label is None:
        return present
    if int(label) not in present:
        raise InputError(f"label {label} ({labels.name_of(label)}) is not in the label map; "
                         f"present: {', '.join(map(str, present)) or 'none'}")
    return [int(label)]


def keep_island(labels: LabelMap, point_lps: tuple[float, float, float]) -> LabelMap:
    """Keep only the piece of the label under a point; other labels are untouched.

    Parameters
    ----------
    labels : LabelMap
        The label map to edit.
    point_lps : tuple of 3 float
        A world position in LPS mm (e.g. where the user clicked).

    Returns
    -------
    LabelMap
        Same grid and names; the clicked label keeps only its face-connected
        piece that holds the point.

    Raises
    ------
    InputError
        If the point lies outside the grid or on background.
    """
    ijk = np.round(labels.world_to_voxel(np.asarray(point_lps, dtype=float)[None])[0]).astype(int)
    if np.any(ijk < 0) or np.any(ijk >= labels.shape):
        raise InputError(f"point {tuple(np.round(point_lps, 1))} mm lies outside the label map: "
                         "click inside the image")
    array = np.asarray(labels.array)
    value = array[tuple(ijk)]
    if value == 0:
        raise InputError(f"point {tuple(np.round(point_lps, 1))} mm lies on background: "
                         "click on the piece to keep")
    pieces, _ = ndimage.label(array == value, structure=_FACES)
    out = array.copy()
    out[(array == value) & (pieces != pieces[tuple(ijk)])] = 0
    return labels.replace(array=out)


def remove_islands(labels: LabelMap, *, min_mm3: float, label: int | None = None) -> LabelMap:
    """Remove the face-connected pieces smaller than ``min_mm3``.

    Parameters
    ----------
    labels : LabelMap
        The label map to edit.
    min_mm3 : float
        Smallest piece kept, in mm^3.
    label : int, optional
        Edit only this label (default: every label).

    Returns
    -------
    LabelMap
        Same grid and names, small pieces set to 0.
    """
    if min_mm3 < 0:
        raise InputError(f"min_mm3 must be >= 0, got {min_mm3:g}")
    array = np.asarray(labels.array)
    out = array.copy()
    min_voxels = min_mm3 / labels.voxel_volume_mm3
    for value in _chosen(labels, label):
        pieces, n = ndimage.label(array == value, structure=_FACES)
        small = np.bincount(pieces.ravel(), minlength=n + 1) < min_voxels
        small[0] = False
        out[small[pieces]] = 0
    return labels.replace(array=out)


def margin(labels: LabelMap, mm: float, *, label: int | None = None) -> LabelMap:
    """Grow (``mm > 0``) or shrink (``mm < 0``) labels by a true distance in mm.

    A voxel joins a grown label when its centre lies within ``mm`` of the
    label's nearest voxel centre (an exact Euclidean distance transform with the
    grid's spacing), so the surface moves by ``mm`` on any grid. Growth fills
    background only, never another label; where several labels grow into the
    same voxel the nearest wins. Shrinking keeps the voxels farther than
    ``-mm`` from anything else.

    Parameters
    ----------
    labels : LabelMap
        The label map to edit.
    mm : float
        Distance in mm; positive grows, negative shrinks.
    label : int, optional
        Edit only this label (default: every label).

    Returns
    -------
    LabelMap
        Same grid and names.
    """
    array = np.asarray(labels.array)
    chosen = _chosen(labels, label)
    if mm == 0 or not chosen:
        return labels.replace(array=array.copy())
    spacing = labels.spacing
    pad = [int(np.ceil(abs(mm) / s)) + 1 for s in spacing]
    box = bounding_box(np.isin(array, chosen), pad)
    sub = array[box]
    out = array.copy()
    if mm > 0:
        seeds = np.isin(sub, chosen)
        dist, (i, j, k) = ndimage.distance_transform_edt(~seeds, sampling=spacing, return_indices=True)
        nearest = sub[i, j, k]
        out[box][(sub == 0) & (dist <= mm)] = nearest[(sub == 0) & (dist <= mm)]
    else:
        for value in chosen:
            mask = sub == value
            # pad with background so that shrinking also works from the grid's edge
            depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
            out[box][mask & (depth <= -mm)] = 0
    return labels.replace(array=out)


def smooth(labels: LabelMap, mm: float, *, label: int | None = None) -> LabelMap:
    """Smooth label boundaries at a scale of ``mm`` (Gaussian sigma, in mm).

    Each label's mask is blurred with a Gaussian of standard deviation ``mm``
    along every world axis and thresholded at 0.5; a voxel claimed by several
    smoothed labels goes to the one with the highest blurred value, and labels
    not being smoothed are never overwritten, so labels stay disjoint.

    Parameters
    ----------
    labels : LabelMap
        The label map to edit.
    mm : float
        Gaussian standard deviation in mm (> 0).
    label : int, optional
        Smooth only this label (default: every label).

    Returns
    -------
    LabelMap
        Same grid and names.

    Raises
    ------
    InputError
        If ``mm`` is not positive.
    EmptySegmentationError
        If smoothing would remove a label (smaller than the scale).
    """
    if not mm > 0:
        raise InputError(f"smoothing scale must be > 0 mm, got {mm:g}")
    array = np.asarray(labels.array)
    chosen = _chosen(labels, label)
    sigma = mm / labels.spacing
    pad = [int(np.ceil(4 * s)) + 1 for s in sigma]
    out = array.copy()
    out[np.isin(array, chosen)] = 0
    best = np.zeros(array.shape, np.float32)
    for value in chosen:
        mask = array == value
        box = bounding_box(mask, pad)
        blurred = ndimage.gaussian_filter(mask[box].astype(np.float32), sigma, mode="nearest")
        free = (array[box] == 0) | np.isin(array[box], chosen)
        wins = free & (blurred >= 0.5) & (blurred > best[box])
        out[box][wins] = value
        best[box][wins] = blurred[wins]
    for value in chosen:
        if not np.any(out == value):
            raise EmptySegmentationError(f"smoothing at {mm:g} mm removes {labels.name_of(value)} "
                                         "(smaller than the scale): use a smaller scale")
    return labels.replace(array=out)


def fill_between_slices(labels: LabelMap, *, image: Volume | None = None, axis: int = 2,
                        method: str = "network", stop_at_drawn: bool = False,
                        progress: ProgressFn | None = None) -> LabelMap:
    """Fill organs drawn on a few slices (:func:`medrecon.completion.complete`).

    Parameters
    ----------
    labels : LabelMap
        Organs drawn on some slices across ``axis``; other slices 0.
    image : Volume, optional
        The image they were drawn on (helps the network method).
    axis : int
        Array axis across which the slices were drawn.
    method : {"network", "sdf"}
        The learned shape completion or signed-distance interpolation.
    stop_at_drawn : bool
        End every organ at its first and last drawn slice.
    progress : ProgressFn, optional
        Called with (stage, fraction).

    Returns
    -------
    LabelMap
        Same grid and names; drawn slices kept exactly.

    Raises
    ------
    InputError
        If the slices were drawn across another axis (the message names their plane).
    EmptySegmentationError
        If nothing is drawn.
    """
    return complete(labels, image=image, axis=axis, method=method, stop_at_drawn=stop_at_drawn,
                    progress=progress)
