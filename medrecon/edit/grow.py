"""Grow strokes painted per organ and for background into a full 3D segmentation.

A seeded watershed on the image's edge strength, judged against the strokes'
own intensities (CT and MR alike); see :func:`grow_from_seeds`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medrecon.errors import EmptySegmentationError, InputError
from medrecon.progress import ProgressFn, report
from medrecon.sources.mask_steps import bounding_box
from medrecon.volume import LabelMap, Volume

__all__ = ["GROW_MM", "grow_from_seeds"]

#: Voxel size (mm) on which grow_from_seeds grows before refining at full resolution.
GROW_MM = 1.5


def grow_from_seeds(image: Volume, seeds: LabelMap, *, background: int, margin_mm: float = 20.0,
                    progress: ProgressFn | None = None) -> LabelMap:
    """Grow strokes painted per organ and for background into a full 3D segmentation.

    A marker-based watershed (seeded region growing that splits the image
    where its edges are strongest) on the gradient magnitude (Gaussian, 1 mm),
    in the box around the strokes grown by ``margin_mm``. Intensities are
    judged only against the strokes, so CT and MR work alike: each organ's
    range is that of its strokes (1st to 99th percentile, widened by its width
    on both sides), and regions outside every organ's range become background
    before growing, so that an organ does not leak into fat, air or bone
    through a weak edge. Fine grids grow on voxels of about :data:`GROW_MM`
    first; the boundaries are then grown again at full resolution in a band of
    one coarse voxel.

    Parameters
    ----------
    image : Volume
        The image the strokes were painted on (resampled onto the strokes'
        grid if it lies on another one).
    seeds : LabelMap
        Strokes: organ label ids, ``background`` for background, 0 unpainted.
    background : int
        The label id of the background strokes.
    margin_mm : float
        How far beyond the strokes' bounding box to grow, in mm.
    progress : ProgressFn, optional
        Called with (stage, fraction).

    Returns
    -------
    LabelMap
        Same grid, dtype and names as ``seeds``: every voxel of the box gets an
        organ id or 0 (the background id is removed); 0 outside the box. Organ
        strokes keep their label.

    Raises
    ------
    EmptySegmentationError
        If nothing is painted.
    InputError
        If there is no background stroke, no organ stroke, or ``margin_mm`` < 0.
    """
    strokes = np.asarray(seeds.array)
    ids = seeds.labels
    if not ids:
        raise EmptySegmentationError("no strokes painted: paint a few strokes in each organ and "
                                     f"in the background (label {background})")
    if background not in ids:
        raise InputError(f"no background stroke: paint a few strokes with label {background} "
                         "around the organs")
    organs = [i for i in ids if i != background]
    if not organs:
        raise InputError(f"only background (label {background}) is painted: paint a stroke in "
                         "each organ to grow")
    if margin_mm < 0:
        raise InputError(f"margin_mm must be >= 0, got {margin_mm:g}")
    if not image.same_grid(seeds):
        image = image.resample_like(seeds)
    report(progress, "grow from seeds: preparing", 0.05)
    spacing = seeds.spacing
    box = bounding_box(strokes != 0, [int(np.ceil(margin_mm / s)) for s in spacing])
    markers = strokes[box].astype(np.int32)
    values = np.asarray(image.array)[box].astype(np.float32)
    # intensity-agnostic: scale by the spread of the painted intensities
    painted = values[markers != 0]
    scale = float(np.subtract(*np.percentile(painted, [95, 5])))
    values = (values - float(np.median(painted))) / (scale if scale > 0 else float(np.std(values)) or 1.0)
    # grow on a grid of about GROW_MM voxels, then settle the boundaries at full resolution
    factor = np.maximum(1, np.floor(GROW_MM / spacing)).astype(int)
    coarse_shape = -(-np.asarray(values.shape) // factor)
    coarse_markers = np.zeros(coarse_shape, np.int32)
    at = np.nonzero(markers)
    coarse_markers[tuple(i // f for i, f in zip(at, factor, strict=True))] = markers[at]
    report(progress, "grow from seeds: growing", 0.2)
    grown = _grow(_block_mean(values, factor), coarse_markers, organs, background, spacing * factor)
    if np.any(factor > 1):
        report(progress, "grow from seeds: refining", 0.6)
        grown = _refine(values, markers, grown, factor, spacing)
    grown[markers != 0] = markers[markers != 0]  # every stroke keeps its label
    grown[grown == background] = 0
    out = np.zeros_like(strokes)
    out[box] = grown
    report(progress, "grow from seeds: done", 1.0)
    return seeds.replace(array=out, source="")


def _block_mean(values: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Mean over blocks of ``factor`` voxels (the last blocks padded by repeating the edge)."""
    if np.all(factor == 1):
        return values
    shape = -(-np.asarray(values.shape) // factor) * factor
    padded = np.pad(values, [(0, n - m) for n, m in zip(shape, values.shape, strict=True)], mode="edge")
    blocks = padded.reshape(shape[0] // factor[0], factor[0], shape[1] // factor[1], factor[1],
                            shape[2] // factor[2], factor[2])
    return blocks.mean(axis=(1, 3, 5), dtype=np.float32)


def _grow(values: np.ndarray, markers: np.ndarray, organs: list[int], background: int,
          spacing: np.ndarray) -> np.ndarray:
    """Marker watershed on the gradient magnitude, with out-of-range regions marked background."""
    from skimage.segmentation import watershed

    one_mm = 1.0 / spacing
    smoothed = ndimage.gaussian_filter(values, one_mm)
    allowed = np.zeros(values.shape, dtype=bool)
    for organ in organs:
        lo, hi = np.percentile(smoothed[markers == organ], [1, 99])
        allowed |= (smoothed >= 2 * lo - hi) & (smoothed <= 2 * hi - lo)
    not_organ = ndimage.minimum_filter((~allowed).view(np.uint8), size=tuple(2 * np.round(one_mm).astype(int) + 1))
    markers = np.where((not_organ > 0) & (markers == 0), background, markers)
    return watershed(ndimage.gaussian_gradient_magnitude(values, one_mm), markers)


def _refine(values: np.ndarray, markers: np.ndarray, coarse: np.ndarray, factor: np.ndarray,
            spacing: np.ndarray) -> np.ndarray:
    """Upsample coarse labels and grow again, at full resolution, in the band along their boundaries."""
    from skimage.segmentation import watershed

    index = np.ix_(*[np.arange(n) // f for n, f in zip(values.shape, factor, strict=True)])
    fine = coarse[index]
    reach = tuple(2 * factor + 1)
    band = ndimage.maximum_filter(fine, size=reach) != ndimage.minimum_filter(fine, size=reach)
    band &= markers == 0
    seeds = np.where(band, 0, fine)
    seeds[markers != 0] = markers[markers != 0]
    box = bounding_box(band, (1, 1, 1)) if band.any() else tuple(slice(0, 0) for _ in range(3))
    mask = ndimage.binary_dilation(band[box])
    grown = watershed(ndimage.gaussian_gradient_magnitude(values[box], 1.0 / spacing),
                      np.where(mask, seeds[box], 0), mask=mask)
    fine[box][band[box]] = grown[band[box]]
    return fine
