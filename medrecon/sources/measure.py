"""Where each label is and how it is shaped, measured for the plausibility checks.

:mod:`medrecon.sources.plausibility` judges organs; this module measures them, in
passes over the whole label map rather than one full-volume mask per label (a
512 x 512 x 300 map in well under a second, ``bench/bench_plausibility.py``):

- :func:`label_sums`: voxels and the image's sum per label, exact, one pass;
- :class:`Trunk`: the trunk's outline per axial slice, on a coarse grid;
- :func:`place`: each label's centre height, pieces, and inside fraction and side
  relative to the trunk, on a grid of about :data:`GEOMETRY_GRID_MM`.

Arrays are (I, J, K) on the label map's grid; positions are LPS mm through its affine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from medrecon.volume import LabelMap, Volume

#: Voxel size (mm) of the coarse grid the trunk is found on.
TRUNK_GRID_MM = 4.0
#: Voxel size (mm) of the grid organ positions and pieces are measured on.
GEOMETRY_GRID_MM = 2.0
#: Voxels per slab of the one pass over a label map (the slab stays in the cache).
SLAB_VOXELS = 1 << 19


class Trunk:
    """The trunk's outline on a coarse grid, per axial slice: midline and half width in LPS x.

    Attributes
    ----------
    step : (3,) ndarray of int
        Full-grid voxels per coarse voxel along each array axis.
    axis : int
        The array axis closest to the patient's head-feet axis.
    mask : (I', J', K') ndarray of bool
        The trunk (the largest body piece of each axial slice), coarse grid.
    mid, half : ndarray of float
        Per coarse axial slice: the trunk's midline and half width in LPS x (mm),
        NaN where a slice holds no body.
    """

    def __init__(self, volume: Volume, *, body_hu: float) -> None:
        from scipy import ndimage

        from medrecon.sources.presets import body_mask

        spacing = volume.spacing
        self.step = np.maximum(1, np.floor(TRUNK_GRID_MM / spacing + 1e-6)).astype(int)
        sl = tuple(slice(None, None, int(s)) for s in self.step)
        affine = volume.affine.copy()
        affine[:3, :3] = affine[:3, :3] * self.step
        coarse = volume.replace(array=np.ascontiguousarray(np.asarray(volume.array)[sl]), affine=affine)
        body = body_mask(coarse, body_hu=body_hu)
        self.axis = int(np.argmax(np.abs(volume.direction[2])))
        trunk = np.zeros_like(body)
        n = body.shape[self.axis]
        self.mid = np.full(n, np.nan)
        self.half = np.full(n, np.nan)
        x_row = affine[0, :3]
        for k in range(n):
            sel = [slice(None)] * 3
            sel[self.axis] = k
            plane = body[tuple(sel)]
            lab, count = ndimage.label(plane)
            if count == 0:
                continue
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            keep = lab == int(sizes.argmax())
            trunk[tuple(sel)] = keep
            ij = np.argwhere(keep)
            full = np.insert(ij, self.axis, k, axis=1)
            x = full @ x_row + affine[0, 3]
            lo, hi = float(x.min()), float(x.max())
            self.mid[k] = (lo + hi) / 2
            self.half[k] = max((hi - lo) / 2, 1e-6)
        self.mask = trunk

    def coarse(self, idx: np.ndarray) -> np.ndarray:
        """Coarse-grid indices of full-grid voxel indices (N, 3)."""
        return np.minimum(idx // self.step, np.asarray(self.mask.shape) - 1)


def label_sums(lab: np.ndarray, values: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Voxels per label id (index = id) and, with ``values`` on the same grid, their sum per id.

    One pass over the labelled voxels, slab by slab along the array's slowest axis.
    """
    axis = int(np.argmax(np.abs(lab.strides)))
    n = lab.shape[axis] if lab.ndim else 1
    per = max(1, SLAB_VOXELS // max(1, lab.size // max(1, n)))
    top = max(1, int(lab.max()) + 1) if lab.size else 1
    counts = np.zeros(top, np.int64)
    sums = None if values is None else np.zeros(top, np.float64)
    for start in range(0, n, per):
        slab = tuple(slice(start, start + per) if a == axis else slice(None) for a in range(lab.ndim))
        part = lab[slab]
        cells = None if values is None else values[slab]
        # flattened in memory order where both allow it: boolean indexing walks C order,
        # which strides through a Fortran-ordered (NIfTI) slab
        order = "F" if part.flags.f_contiguous and (cells is None or cells.flags.f_contiguous) else "C"
        flat = part.ravel(order)
        inside = flat > 0
        ids = flat[inside].astype(np.intp, copy=False)
        counts += np.bincount(ids, minlength=top)
        if sums is not None:
            sums += np.bincount(ids, weights=cells.ravel(order)[inside], minlength=top)
    return counts, sums


def _lookup(ids: np.ndarray, size: int) -> np.ndarray:
    """Table from label value to its position in ``ids`` (-1 elsewhere), for labels ``0 <= id < size``."""
    table = np.full(size, -1, np.int64)
    table[ids] = np.arange(len(ids))
    return table


def place(labels: LabelMap, wanted: list[int], trunk: Trunk | None, *,
           min_fraction: float) -> dict[int, dict[str, Any]]:
    """Centre height, pieces, and with a trunk the inside fraction and lateral position of each wanted label.

    Measured on the label map sampled on a grid of about :data:`GEOMETRY_GRID_MM`
    (a model's labels come from a grid of 1.5-2.5 mm; sampling finer labels at
    about 2 mm changes an organ's centre by well under a voxel of that grid and
    keeps the cost small next to segmentation on big studies), all labels at once:
    one pass for their bounding boxes, per-label sums by ``bincount`` over the
    labelled voxels, pieces inside each box (:func:`_pieces`). A label too small
    to show on the sampled grid is measured on every voxel.
    """
    from scipy import ndimage

    full = np.asarray(labels.array)
    step = np.maximum(1, np.floor(GEOMETRY_GRID_MM / labels.spacing + 1e-6)).astype(int)
    sampled = np.ascontiguousarray(full[tuple(slice(None, None, int(s)) for s in step)])
    if sampled.dtype.kind not in "iu":
        sampled = sampled.astype(np.int64)
    found = ndimage.find_objects(sampled, max_label=int(max(wanted)))
    boxes = {label: found[label - 1] for label in wanted if found[label - 1] is not None}
    out: dict[int, dict[str, Any]] = {}
    if boxes:
        out.update(_measure(sampled, step, boxes, labels.affine, trunk, min_fraction=min_fraction))
    missing = [label for label in wanted if label not in out]
    if missing:  # too small to show on the sampled grid: use every voxel (one pass finds them all)
        points = np.argwhere(np.isin(full, missing))
        values = full[tuple(points.T)]
    for label in missing:
        hit = points[values == label]
        lo, hi = hit.min(0), hit.max(0) + 1
        crop = np.where(full[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))] == label, label, 0)
        out.update(_measure(crop, np.ones(3, int), {label: tuple(slice(0, n) for n in crop.shape)},
                            labels.affine, trunk, min_fraction=min_fraction, offset=lo,
                            faces=np.stack([lo == 0, hi == full.shape], axis=1)))
    return out


def _measure(array: np.ndarray, step: np.ndarray, boxes: Mapping[int, tuple[slice, ...]], affine: np.ndarray,
             trunk: Trunk | None, *, min_fraction: float, offset: np.ndarray | None = None,
             faces: np.ndarray | None = None) -> dict[int, dict[str, Any]]:
    """:func:`place`'s numbers for the labels ``boxes`` holds (with their boxes in ``array``).

    ``array`` is a grid taken every ``step`` full-grid voxels, its ``[0, 0, 0]`` at
    full-grid index ``offset``; ``faces`` (3, 2) says which of its faces are the
    edge of the field of view (default: all). Compact labels are measured inside
    their own boxes; labels scattered over the field of view (boxes that together
    cover more than the grid) all at once.
    """
    compact = sum(int(np.prod([b.stop - b.start for b in box])) for box in boxes.values()) <= array.size
    groups = [{label: box} for label, box in boxes.items()] if compact else [boxes]
    found: dict[int, dict[str, Any]] = {}
    for group in groups:
        found.update(_where(array, step, group, affine, trunk, offset=offset))
    faces = np.ones((3, 2), bool) if faces is None else faces
    for label, n_pieces in _pieces(array, boxes, faces, compact=compact, min_fraction=min_fraction).items():
        found[label]["pieces"] = n_pieces
    return found


def _where(array: np.ndarray, step: np.ndarray, boxes: Mapping[int, tuple[slice, ...]], affine: np.ndarray,
           trunk: Trunk | None, *, offset: np.ndarray | None) -> dict[int, dict[str, Any]]:
    """Centre height, inside fraction and lateral position of the labels ``boxes`` holds, from their voxels.

    Per-label means by ``bincount`` over the labelled voxels of the box around all of them.
    """
    ids = np.asarray(sorted(boxes))
    n = len(ids)
    lo = np.min([[b.start for b in box] for box in boxes.values()], axis=0)
    hi = np.max([[b.stop for b in box] for box in boxes.values()], axis=0)
    part = array[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))]
    if n == 1:
        hit = np.nonzero(part == ids[0])
        which = np.zeros(len(hit[0]), np.intp)
    else:
        table = _lookup(ids, int(ids.max()) + 1)
        hit = np.nonzero((part > 0) & (part < len(table)))
        which = table[part[hit]]
        keep = which >= 0
        hit, which = tuple(h[keep] for h in hit), which[keep]
    # (N, 3) in Fortran order, as np.argwhere gives it: each axis's indices contiguous
    idx = (np.stack(hit).T + lo) * step + (0 if offset is None else offset)
    count = np.bincount(which, minlength=n).astype(np.float64)

    def mean(values: np.ndarray) -> np.ndarray:
        if n == 1:
            return np.atleast_1d(values.mean(axis=0))
        return np.bincount(which, weights=values, minlength=n) / count

    centre = idx.mean(axis=0)[None] if n == 1 else np.stack([mean(idx[:, a].astype(np.float64)) for a in range(3)],
                                                             axis=1)
    found: dict[int, dict[str, Any]] = {int(label): {"centre_z_mm": float(centre[i] @ affine[2, :3] + affine[2, 3])}
                                        for i, label in enumerate(ids)}
    if trunk is not None:
        c = trunk.coarse(idx)
        inside = mean(trunk.mask[c[:, 0], c[:, 1], c[:, 2]].astype(np.float64))
        k = c[:, trunk.axis]
        x = idx @ affine[0, :3] + affine[0, 3]
        ok = np.isfinite(trunk.half[k])
        side = np.bincount(which[ok], weights=(x[ok] - trunk.mid[k[ok]]) / trunk.half[k[ok]], minlength=n)
        n_ok = np.bincount(which[ok], minlength=n)
        for i, label in enumerate(ids):
            found[int(label)].update(inside_body=float(inside[i]),
                                     lateral=float(side[i] / n_ok[i]) if n_ok[i] else None)
    return found


def _pieces(array: np.ndarray, boxes: Mapping[int, tuple[slice, ...]], faces: np.ndarray, *, compact: bool,
            min_fraction: float) -> dict[int, int]:
    """Pieces of each label holding at least ``min_fraction`` of its voxels; those on an edge face count as one.

    26-connected components, labelled inside each label's bounding box (``compact``),
    or in one labelling of the whole grid (each label's own components) where the
    boxes together would cover more than the grid (labels scattered over the field
    of view). ``faces`` (3, 2): which faces of ``array`` are the edge of the field of view.
    """
    from scipy import ndimage

    if compact:
        out = {}
        for label, box in boxes.items():
            touches = np.array([[b.start == 0, b.stop == n] for b, n in zip(box, array.shape, strict=True)]) & faces
            lab, n = ndimage.label(array[box] == label, structure=np.ones((3, 3, 3), bool))
            out[label] = _count(lab, np.arange(1, n + 1), touches, min_fraction=min_fraction)
        return out
    from skimage.measure import label as components

    lab = components(array, background=0, connectivity=3)
    owner = np.zeros(int(lab.max()) + 1, np.int64)
    owner[lab.ravel()] = array.ravel()
    sizes, edge = _sizes_and_edge(lab, faces)
    return {label: _count(lab, np.flatnonzero(owner == label), faces, min_fraction=min_fraction,
                          sizes=sizes, edge=edge) for label in boxes}


def _sizes_and_edge(lab: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxels per component of ``lab``, and which components lie on the ``faces`` (3, 2) that are edges."""
    sizes = np.bincount(lab.ravel())
    edge = np.zeros(len(sizes), bool)
    for axis in range(3):
        for end in (0, 1):
            if faces[axis, end]:
                # a plain slice: np.take copies a Fortran-ordered map whole first (seconds at 512^3)
                edge[lab[(slice(None),) * axis + (-end,)]] = True
    return sizes, edge


def _count(lab: np.ndarray, mine: np.ndarray, faces: np.ndarray, *, min_fraction: float,
           sizes: np.ndarray | None = None, edge: np.ndarray | None = None) -> int:
    """Big pieces among components ``mine`` of ``lab``; those on an edge face count as one."""
    if sizes is None or edge is None:
        sizes, edge = _sizes_and_edge(lab, faces)
    size = sizes[mine]
    big = mine[size >= min_fraction * size.sum()]
    return int(len(big) - max(0, int(edge[big].sum()) - 1))


__all__ = ["GEOMETRY_GRID_MM", "TRUNK_GRID_MM", "Trunk", "label_sums", "place"]
