"""Network inputs for one label: its box resampled to a fixed grid, plus its drawn slices.

The same code feeds training and inference, so both see identical inputs.
Arrays have the slice axis last: (I, J, K). Box grids are (gi, gj, gk).

Volume channels (:data:`CHANNELS`):

* ``image`` - the image relative to the organ: minus the median over the drawn
  pixels, divided by the box's standard deviation (modality-free), clipped to +-4;
* ``has_image`` - 1 where an image was given, else 0 everywhere;
* ``sdf`` - the SDF interpolation (:func:`~medrecon.completion.sdf.interpolate_sdf`)
  as ``-distance / SDF_SCALE_MM``, clipped to +-4 (positive inside);
* ``drawn`` - 1 on drawn pixels of the label;
* ``known`` - 1 on slices whose content is known (drawn or known empty).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medrecon.completion.sdf import interpolate_sdf, label_box
from medrecon.completion.sparse import Annotation

CHANNELS = ("image", "has_image", "sdf", "drawn", "known")
SDF_SCALE_MM = 5.0
#: Relative in-plane margin of the box around the drawn pixels.
BOX_MARGIN = 0.15


@dataclass(frozen=True)
class LabelInputs:
    """Inputs of the shape network for one label.

    Attributes
    ----------
    box : tuple of 3 slice
        The label's box in the (I, J, K) array.
    volume : (5, gi, gj, gk) ndarray of float32
        :data:`CHANNELS` resampled to the grid.
    slices : (S, 2, gi, gj) ndarray of float32
        The drawn slices (image and mask channels), S <= ``max_slices``.
    positions : (S,) ndarray of float32
        Their position along the box's K extent, in [0, 1].
    sdf_full : (bi, bj, bk) ndarray of float32
        The ``sdf`` channel at the full resolution of the box.
    """

    box: tuple[slice, slice, slice]
    volume: np.ndarray
    slices: np.ndarray
    positions: np.ndarray
    sdf_full: np.ndarray


def resize(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear resampling of a 2D or 3D array so that its corner samples stay put."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    mode = "bilinear" if t.ndim == 4 else "trilinear"
    if tuple(t.shape[2:]) == tuple(shape):
        return t[0, 0].numpy()
    return F.interpolate(t, size=tuple(shape), mode=mode, align_corners=True)[0, 0].numpy()


def _normalise_image(crop: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    centre = float(np.median(crop[drawn])) if drawn.any() else float(np.median(crop))
    scale = max(float(crop.std()), 1e-3)
    return np.clip((crop - centre) / scale, -4.0, 4.0).astype(np.float32)


def label_inputs(
    array: np.ndarray,
    annotation: Annotation,
    *,
    spacing: np.ndarray,
    image: np.ndarray | None,
    grid: tuple[int, int, int],
    max_slices: int,
) -> LabelInputs:
    """Build the network inputs of one label.

    Parameters
    ----------
    array : (I, J, K) ndarray of int
        Sparse labels, slice axis last.
    annotation : Annotation
        Where the label was drawn.
    spacing : (3,) array_like of float
        Voxel size in mm.
    image : (I, J, K) ndarray of float, optional
        The image on the same grid.
    grid : tuple of 3 int
        Network grid (gi, gj, gk).
    max_slices : int
        Most drawn slices given to the 2D encoder (evenly chosen if more).
    """
    box = label_box(array, annotation, margin=BOX_MARGIN, min_margin=3)
    phi = interpolate_sdf(array, annotation, spacing=spacing, box=box)
    sdf_full = np.clip(-phi / SDF_SCALE_MM, -4.0, 4.0).astype(np.float32)
    sub = np.asarray(array[box]) == annotation.label
    k0 = box[2].start
    known = np.zeros(sub.shape, np.float32)
    drawn = np.zeros(sub.shape, bool)
    for p in (*annotation.present, *annotation.absent):
        if box[2].start <= p < box[2].stop:
            known[:, :, p - k0] = 1.0
    for p in annotation.present:
        if box[2].start <= p < box[2].stop:
            drawn[:, :, p - k0] = sub[:, :, p - k0]
    if image is None:
        img = np.zeros(sub.shape, np.float32)
        has = np.zeros(sub.shape, np.float32)
    else:
        img = _normalise_image(np.asarray(image[box], dtype=np.float32), drawn)
        has = np.ones(sub.shape, np.float32)
    channels = (img, has, sdf_full, drawn.astype(np.float32), known)
    volume = np.stack([resize(c, grid) for c in channels]).astype(np.float32)
    present = [p for p in annotation.present if box[2].start <= p < box[2].stop]
    if len(present) > max_slices:
        present = [present[i] for i in np.round(np.linspace(0, len(present) - 1, max_slices)).astype(int)]
    depth = max(sub.shape[2] - 1, 1)
    slices = np.stack([
        np.stack([resize(img[:, :, p - k0], grid[:2]), resize(drawn[:, :, p - k0].astype(np.float32), grid[:2])])
        for p in present
    ]).astype(np.float32)
    positions = np.asarray([(p - k0) / depth for p in present], np.float32)
    return LabelInputs(box, volume, slices, positions, sdf_full)


def target_grid(truth: np.ndarray, box: tuple[slice, slice, slice], grid: tuple[int, int, int]) -> np.ndarray:
    """Soft occupancy in [0, 1] of a full-resolution mask resampled to the network grid."""
    return np.clip(resize(np.asarray(truth[box], dtype=np.float32), grid), 0.0, 1.0)
