"""Sparse annotations: which slices of which label a user drew.

Completion works slice-wise along one array axis (``axis``, default 2: the k
axis, i.e. the acquired slices of a DICOM series). For each label the user drew
it on some slices (its *present* slices). Anything drawn on a slice outside a
label's drawn range tells us that label is absent there, so the nearest such
slice bounds the organ; where no such slice is close, the organ is assumed to end
within one typical gap of its outermost drawn slice.

Functions here also make sparse inputs from complete label maps, for training and
benchmarks: :func:`every_nth` (every n-th slice kept) and :func:`per_label`
(n slices per label spread over its extent).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from medrecon.errors import EmptySegmentationError
from medrecon.volume import LabelMap


@dataclass(frozen=True)
class Annotation:
    """Where one label was drawn along the slice axis.

    Attributes
    ----------
    label : int
        Label id.
    present : tuple of int
        Sorted slice indices on which the label was drawn.
    absent : tuple of int
        Annotated slice indices (of other labels) outside the drawn range: the
        label is known to be absent there.
    lower, upper : float
        Position (slice index, may lie outside the array) at which the organ is
        taken to have ended below the first and above the last present slice.
    """

    label: int
    present: tuple[int, ...]
    absent: tuple[int, ...]
    lower: float
    upper: float

    @property
    def gap(self) -> float:
        """Median distance in slices between consecutive present slices (1 if one slice)."""
        if len(self.present) < 2:
            return 1.0
        return float(np.median(np.diff(self.present)))


def annotated_slices(array: np.ndarray, *, axis: int = 2) -> tuple[int, ...]:
    """Return the indices of the slices along ``axis`` that hold any non-zero label."""
    other = tuple(a for a in range(3) if a != axis % 3)
    return tuple(int(k) for k in np.flatnonzero(np.any(np.asarray(array) != 0, axis=other)))


def annotations(
    sparse: LabelMap,
    *,
    axis: int = 2,
    slices: Iterable[int] | None = None,
) -> dict[int, Annotation]:
    """Infer, for every label present, where it was drawn and where it ends.

    Parameters
    ----------
    sparse : LabelMap
        The drawn labels; slices not drawn are 0.
    axis : int
        Array axis across which slices were drawn (2: k).
    slices : iterable of int, optional
        Slices the user annotated (including ones left empty because no organ is
        there). Default: the slices holding any label.

    Raises
    ------
    EmptySegmentationError
        If ``sparse`` holds no label at all.
    """
    array = np.moveaxis(np.asarray(sparse.array), axis % 3, 2)
    if not array.any():
        raise EmptySegmentationError(
            "the sparse label map is empty: draw the organ on a few slices first"
        )
    drawn = annotated_slices(array, axis=2)
    known = sorted(set(drawn) | {int(s) for s in slices}) if slices is not None else list(drawn)
    known_arr = np.asarray(known)
    per_slice = {int(k): set(np.unique(array[:, :, k]).tolist()) - {0} for k in drawn}
    out: dict[int, Annotation] = {}
    for label in sorted({int(v) for ids in per_slice.values() for v in ids}):
        present = tuple(k for k in drawn if label in per_slice[k])
        lo, hi = present[0], present[-1]
        absent = tuple(int(k) for k in known_arr[(known_arr < lo) | (known_arr > hi)])
        gap = _gap(present, known)
        below = known_arr[known_arr < lo]
        above = known_arr[known_arr > hi]
        lower = lo - min(gap, lo - below.max()) if below.size else lo - gap
        upper = hi + min(gap, above.min() - hi) if above.size else hi + gap
        out[label] = Annotation(label, present, absent, float(lower), float(upper))
    return out


def drawn_axes(array: np.ndarray) -> set[int]:
    """Return the array axes across which some label looks drawn on separate slices.

    A label looks drawn across an axis when it lies on a single slice of that
    axis (and spans more than one along another), or on two or more runs of
    slices of which most are one or two slices long (drawn every few slices).
    A dense organ that is one piece, or two (left and right kidney under one
    label), has long runs and counts for no axis.

    Parameters
    ----------
    array : (I, J, K) ndarray of int
        The drawn labels; slices not drawn are 0.
    """
    array = np.asarray(array)
    coords = np.nonzero(array)
    values = array[coords].astype(np.int64)
    if not values.size:
        return set()
    # occupied slices per label and axis, from the drawn voxels only (sparse input is small)
    occupied: dict[int, list[np.ndarray]] = {}
    for a in range(3):
        keys = np.unique(values * array.shape[a] + coords[a])
        labels, slices = np.divmod(keys, array.shape[a])
        for label, occ in zip(*_split_by(labels, slices), strict=True):
            occupied.setdefault(label, []).append(occ)
    found: set[int] = set()
    for per_axis in occupied.values():
        extent = [int(occ[-1] - occ[0] + 1) for occ in per_axis]
        for a, occ in enumerate(per_axis):
            if extent[a] == 1:
                if max(extent) > 2:
                    found.add(a)
                continue
            runs = np.diff(np.r_[0, np.flatnonzero(np.diff(occ) != 1) + 1, len(occ)])
            if len(runs) >= 2 and 2 * runs[runs <= 2].sum() > len(occ):
                found.add(a)
    return found


def _split_by(keys: np.ndarray, values: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
    """Group sorted ``values`` by the sorted ``keys`` they come with."""
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return [int(k) for k in keys[starts]], np.split(values, starts[1:])


def plane_name(affine: np.ndarray, axis: int) -> str:
    """Name the slices across array ``axis`` of an LPS ``affine``: sagittal, coronal or axial."""
    direction = np.asarray(affine, dtype=np.float64)[:3, axis % 3]
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(direction)))]


def _gap(present: Sequence[int], known: Sequence[int]) -> float:
    """Typical slice gap: of the label's own slices, else of all annotated slices."""
    for seq in (present, known):
        if len(seq) >= 2:
            return float(np.median(np.diff(seq)))
    return 1.0


def every_nth(labels: LabelMap, n: int = 4, *, offset: int = 0, axis: int = 2) -> LabelMap:
    """Keep every ``n``-th slice along ``axis`` (starting at ``offset``), zero the rest.

    Parameters
    ----------
    labels : LabelMap
        Complete labels.
    n : int
        Keep one slice in ``n``.
    offset : int
        Index of the first kept slice, in ``[0, n)``.
    axis : int
        Slice axis.

    Returns
    -------
    LabelMap
        Same grid and names; kept slices exactly as in ``labels``.
    """
    if n < 1 or not 0 <= offset < n:
        raise ValueError(f"need n >= 1 and 0 <= offset < n, got n={n}, offset={offset}")
    array = np.moveaxis(np.asarray(labels.array), axis % 3, 2)
    out = np.zeros_like(array)
    out[:, :, offset::n] = array[:, :, offset::n]
    return labels.replace(array=np.moveaxis(out, 2, axis % 3))


def label_slices(mask_extent: tuple[int, int], n: int) -> list[int]:
    """``n`` slice indices spread over ``[first, last]``, at the centres of ``n`` equal parts.

    A user drawing an organ on ``n`` slices picks them across the organ, not on
    its very tips; this is that choice made reproducible.
    """
    first, last = mask_extent
    length = last - first + 1
    picks = first + (np.arange(n) + 0.5) * length / n - 0.5
    return sorted({int(k) for k in np.clip(np.round(picks), first, last)})


def per_label(
    labels: LabelMap,
    n: int = 5,
    *,
    axis: int = 2,
    ids: Iterable[int] | None = None,
) -> LabelMap:
    """Keep each label on ``n`` of its slices only (see :func:`label_slices`).

    On a slice chosen for one label, the other labels are not drawn (unless the
    slice is chosen for them too): each organ is annotated on its own.

    Parameters
    ----------
    labels : LabelMap
        Complete labels.
    n : int
        Slices per label.
    axis : int
        Slice axis.
    ids : iterable of int, optional
        Labels to keep (default: all present).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    array = np.moveaxis(np.asarray(labels.array), axis % 3, 2)
    out = np.zeros_like(array)
    wanted = labels.labels if ids is None else [int(i) for i in ids]
    for label in wanted:
        mask = array == label
        ks = np.flatnonzero(mask.any(axis=(0, 1)))
        if ks.size == 0:
            continue
        for k in label_slices((int(ks[0]), int(ks[-1])), n):
            out[:, :, k][mask[:, :, k]] = label
    return labels.replace(array=np.moveaxis(out, 2, axis % 3))
