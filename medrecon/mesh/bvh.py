"""A bounding-volume hierarchy over boxes, traversed for many queries at once with numpy.

:class:`BoxTree` sorts the boxes' centres along a Morton (Z-order) curve, groups
them in leaves of ``leaf_size`` consecutive boxes and builds a complete binary
tree over the leaves: node ``i`` of a level has the children ``2i`` and
``2i + 1`` on the next one, so the tree is a list of arrays, one per level, and
a traversal is a few array operations per level on a frontier of (query, node)
pairs rather than a Python loop per query. Building it costs one sort; a query
costs about the number of nodes it meets, so the work follows the number of
boxes, not its square.

Two traversals: :meth:`BoxTree.overlapping_pairs` (every pair of boxes that
overlap, e.g. triangle pairs that may intersect) and :meth:`BoxTree.ray_pairs`
(every box a ray segment meets). :func:`triangle_tree`, :func:`first_hits` and
:func:`ray_hits` put triangles in the tree and intersect rays with them
(Moeller-Trumbore). Positions are in mm, in whatever frame the caller's
vertices use.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

#: Rays traced together: bounds the memory of one traversal's frontier.
RAY_CHUNK = 8192
#: Box pairs of overlapping leaves compared together.
PAIR_CHUNK = 1 << 18


def _spread_bits(x: np.ndarray) -> np.ndarray:
    """Insert two zero bits between the low 10 bits of each value (Morton code helper)."""
    x = x.astype(np.uint64)
    x = (x | (x << np.uint64(16))) & np.uint64(0x030000FF)
    x = (x | (x << np.uint64(8))) & np.uint64(0x0300F00F)
    x = (x | (x << np.uint64(4))) & np.uint64(0x030C30C3)
    x = (x | (x << np.uint64(2))) & np.uint64(0x09249249)
    return x


def morton_order(points: np.ndarray) -> np.ndarray:
    """Return the indices that sort (N, 3) points along a Z-order curve over their bounding box."""
    lo = points.min(axis=0)
    span = np.maximum(points.max(axis=0) - lo, 1e-300)
    q = np.clip(((points - lo) / span * 1023.0).astype(np.int64), 0, 1023)
    code = (_spread_bits(q[:, 0]) << np.uint64(2)) | (_spread_bits(q[:, 1]) << np.uint64(1)) | _spread_bits(q[:, 2])
    return np.argsort(code, kind="stable")


@dataclass(frozen=True, eq=False)
class BoxTree:
    """A bounding-volume hierarchy over N axis-aligned boxes (see the module docstring).

    Attributes
    ----------
    item : (L * leaf_size,) ndarray of int64
        The box held in each slot of each leaf (leaf ``k`` holds slots
        ``k * leaf_size`` to ``(k + 1) * leaf_size - 1``); -1 for an empty slot.
    lo, hi : tuple of (n_l, 3) ndarrays of float64
        Bounds of the nodes of each level, root (one node) first, leaves (L,
        or L + 1) last; every level below the root has an even length, its last
        node NaN (empty) where the level above needed the padding.
    leaf_size : int
        Boxes per leaf.
    box_lo, box_hi : (L, 3, leaf_size) ndarray of float64
        Bounds of the box in each slot of each leaf (grown by the build's
        ``pad``), axis by axis; ``inf`` and ``-inf`` for an empty slot.
    """

    item: np.ndarray
    lo: tuple[np.ndarray, ...]
    hi: tuple[np.ndarray, ...]
    leaf_size: int
    box_lo: np.ndarray
    box_hi: np.ndarray

    @classmethod
    def build(cls, lo: np.ndarray, hi: np.ndarray, *, leaf_size: int = 4, pad: float = 0.0) -> BoxTree:
        """Build the tree over boxes ``[lo, hi]``.

        Parameters
        ----------
        lo, hi : (N, 3) array_like of float64
            Corners of each box (N >= 1), finite.
        leaf_size : int
            Boxes per leaf.
        pad : float
            Grow every node by this much on every side, so that queries that
            only touch a box within rounding still meet it.
        """
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        if lo.ndim != 2 or lo.shape[1] != 3 or lo.shape != hi.shape or len(lo) == 0:
            raise ValueError(f"lo and hi must be the same (N, 3) shape with N >= 1, got {lo.shape}, {hi.shape}")
        if leaf_size < 1:
            raise ValueError(f"leaf_size must be >= 1, got {leaf_size}")
        n = len(lo)
        order = morton_order(0.5 * (lo + hi))
        n_leaves = -(-n // leaf_size)
        item = np.full(n_leaves * leaf_size, -1, dtype=np.int64)
        item[:n] = order
        slot_lo = np.full((n_leaves * leaf_size, 3), np.inf)
        slot_hi = np.full((n_leaves * leaf_size, 3), -np.inf)
        slot_lo[:n] = lo[order] - pad
        slot_hi[:n] = hi[order] + pad
        # slot by slot: numpy's reductions over a short middle axis are slow
        leaf_lo, leaf_hi = slot_lo.reshape(n_leaves, leaf_size, 3), slot_hi.reshape(n_leaves, leaf_size, 3)
        level_lo = [functools.reduce(np.minimum, (leaf_lo[:, k] for k in range(leaf_size)))]
        level_hi = [functools.reduce(np.maximum, (leaf_hi[:, k] for k in range(leaf_size)))]
        while len(level_lo[-1]) > 1:
            if len(level_lo[-1]) % 2:
                # an empty node makes every level even; NaN bounds fail every test
                level_lo[-1] = np.vstack([level_lo[-1], np.full((1, 3), np.nan)])
                level_hi[-1] = np.vstack([level_hi[-1], np.full((1, 3), np.nan)])
            below_lo, below_hi = level_lo[-1], level_hi[-1]
            level_lo.append(np.fmin(below_lo[0::2], below_lo[1::2]))
            level_hi.append(np.fmax(below_hi[0::2], below_hi[1::2]))
        # a leaf's boxes side by side in memory: comparing two leaves gathers two short rows
        box_lo = np.ascontiguousarray(slot_lo.reshape(n_leaves, leaf_size, 3).transpose(0, 2, 1))
        box_hi = np.ascontiguousarray(slot_hi.reshape(n_leaves, leaf_size, 3).transpose(0, 2, 1))
        return cls(item, tuple(level_lo[::-1]), tuple(level_hi[::-1]), leaf_size, box_lo, box_hi)

    @property
    def depth(self) -> int:
        """Index of the leaf level (0 when the root is the only leaf)."""
        return len(self.lo) - 1

    def _leaf_slots(self, leaf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes held by ``leaf`` and, for each, the index of its leaf entry."""
        slot = (leaf[:, None] * self.leaf_size + np.arange(self.leaf_size)).ravel()
        entry = np.repeat(np.arange(len(leaf)), self.leaf_size)
        box = self.item[slot]
        keep = box >= 0
        return box[keep], entry[keep]

    def ray_pairs(
        self, origins: np.ndarray, directions: np.ndarray, t_min: float, t_max: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every (ray, box) pair where the segment ``origin + t * direction``, t in [t_min, t_max], meets the box.

        Parameters
        ----------
        origins, directions : (R, 3) ndarray of float64
            Rays (directions need not be unit vectors; t is in their units).
        t_min, t_max : float
            Ends of the segments (``t_max`` may be ``inf``).

        Returns
        -------
        ray, box : (P,) ndarray of int64
            Candidate pairs (the box test is conservative: a ray that only
            grazes a box within rounding is kept).
        """
        with np.errstate(divide="ignore"):
            inv = 1.0 / np.where(directions == 0.0, 1e-300, directions)
        ray = np.arange(len(origins))
        node = np.zeros(len(origins), dtype=np.int64)
        for level in range(self.depth + 1):
            o, iv = origins[ray], inv[ray]
            t1 = (self.lo[level][node] - o) * iv
            t2 = (self.hi[level][node] - o) * iv
            enter, leave = np.minimum(t1, t2), np.maximum(t1, t2)
            # column by column: numpy's reductions over a length-3 axis are slow
            near = np.maximum(np.maximum(enter[:, 0], enter[:, 1]), enter[:, 2])
            far = np.minimum(np.minimum(leave[:, 0], leave[:, 1]), leave[:, 2])
            keep = (near <= far) & (far >= t_min) & (near <= t_max)
            ray, node = ray[keep], node[keep]
            if level < self.depth:
                node = (2 * node[:, None] + np.arange(2)).ravel()
                ray = np.repeat(ray, 2)
        box, entry = self._leaf_slots(node)
        return ray[entry], box

    def overlapping_pairs(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every pair ``(i, j)``, ``i != j``, of boxes that overlap (closed boxes grown by ``pad``), in chunks.

        Each unordered pair comes once, in no particular order of ``i`` and ``j``.
        The leaves found overlapping are compared slot by slot, all pairs of a
        chunk of leaf pairs at once, so only pairs of overlapping boxes come out.

        Yields
        ------
        i, j : (P,) ndarray of int64
        """
        a = np.zeros(1, dtype=np.int64)
        b = np.zeros(1, dtype=np.int64)
        valid = np.ones(1, dtype=bool)
        for level in range(self.depth + 1):
            lo, hi = self.lo[level], self.hi[level]
            touch = (lo[a] <= hi[b]) & (lo[b] <= hi[a])
            keep = touch[:, 0] & touch[:, 1] & touch[:, 2] & valid
            a, b = a[keep], b[keep]
            if level == self.depth:
                break
            # each pair's four children next to one another, so the frontier stays in the
            # nodes' (Morton) order and its gathers stay near in memory on large trees;
            # a node with itself drops (2a+1, 2a), the same pair as (2a, 2a+1)
            valid = ~((a == b)[:, None] & np.array([False, False, True, False])).ravel()
            a = (2 * a[:, None] + np.array([0, 0, 1, 1])).ravel()
            b = (2 * b[:, None] + np.array([0, 1, 0, 1])).ravel()
        k = self.leaf_size
        # within one leaf, each slot pair once: s < t
        upper = np.triu(np.ones((k, k), dtype=bool), 1)
        chunk = max(1, PAIR_CHUNK // (k * k))
        for start in range(0, len(a), chunk):
            la, lb = a[start:start + chunk], b[start:start + chunk]
            # (pair, slot, slot), each leaf's bounds gathered once as one row
            a_lo, a_hi, b_lo, b_hi = self.box_lo[la], self.box_hi[la], self.box_lo[lb], self.box_hi[lb]
            touch = upper | (la != lb)[:, None, None]
            for axis in range(3):
                touch &= a_lo[:, axis, :, None] <= b_hi[:, axis, None, :]
                touch &= b_lo[:, axis, None, :] <= a_hi[:, axis, :, None]
            pair, s, t = np.nonzero(touch)
            yield self.item[la[pair] * k + s], self.item[lb[pair] * k + t]


@dataclass(frozen=True, eq=False)
class TriangleTree:
    """Triangles in a :class:`BoxTree`, ready for ray queries.

    Attributes
    ----------
    tree : BoxTree
        Over the triangles' bounding boxes.
    v0, e1, e2 : (F, 3) ndarray of float64
        First corner and the two edges from it of each triangle.
    size : float
        Median extent of the triangles' boxes (their typical size), mm.
    """

    tree: BoxTree
    v0: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    size: float


def triangle_boxes(triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding boxes ``lo, hi`` ((F, 3) each) of (F, 3, 3) triangles, corner by corner (fast)."""
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    return np.minimum(np.minimum(a, b), c), np.maximum(np.maximum(a, b), c)


def group_boxes(lo: np.ndarray, hi: np.ndarray, group: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box of each of ``n`` groups of boxes (``group``: (N,) ids in [0, n)); empty: ``inf, -inf``."""
    out_lo = np.full((n, 3), np.inf)
    out_hi = np.full((n, 3), -np.inf)
    if len(group):
        order = np.argsort(group, kind="stable")
        ids = group[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        out_lo[ids[starts]] = np.minimum.reduceat(lo[order], starts, axis=0)
        out_hi[ids[starts]] = np.maximum.reduceat(hi[order], starts, axis=0)
    return out_lo, out_hi


def triangle_tree(triangles: np.ndarray, *, leaf_size: int = 4) -> TriangleTree:
    """Build a :class:`TriangleTree` over (F, 3, 3) triangles (F >= 1), in mm."""
    tri = np.asarray(triangles, dtype=np.float64)
    if tri.ndim != 3 or tri.shape[1:] != (3, 3) or len(tri) == 0:
        raise ValueError(f"triangles must be (F, 3, 3) with F >= 1, got {tri.shape}")
    lo, hi = triangle_boxes(tri)
    scale = float(np.max(hi.max(axis=0) - lo.min(axis=0))) or 1.0
    tree = BoxTree.build(lo, hi, leaf_size=leaf_size, pad=1e-9 * scale)
    extent = hi - lo
    typical = float(np.median(np.maximum(np.maximum(extent[:, 0], extent[:, 1]), extent[:, 2]))) or scale
    return TriangleTree(tree, tri[:, 0].copy(), tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], typical)


def _intersect(
    tt: TriangleTree, origins: np.ndarray, directions: np.ndarray, ray: np.ndarray, face: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Moeller-Trumbore for (ray, face) pairs: t, det, u, v (t is nan where the ray misses the triangle)."""
    d = directions[ray]
    e1, e2 = tt.e1[face], tt.e2[face]
    p = np.cross(d, e2)
    det = np.einsum("ij,ij->i", e1, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / det
        s = origins[ray] - tt.v0[face]
        u = np.einsum("ij,ij->i", s, p) * inv
        q = np.cross(s, e1)
        v = np.einsum("ij,ij->i", d, q) * inv
        t = np.einsum("ij,ij->i", e2, q) * inv
        # a hair of tolerance: a ray through an edge must not slip between its two triangles
        inside = (det != 0.0) & (u >= -1e-12) & (v >= -1e-12) & (u + v <= 1.0 + 1e-12)
    return np.where(inside, t, np.nan), det, u, v


def first_hits(
    tt: TriangleTree,
    origins: np.ndarray,
    directions: np.ndarray,
    *,
    t_min: float = 0.0,
    t_max: float = np.inf,
    skip: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest triangle hit by each ray beyond ``t_min``.

    The rays are traced over growing segments (four triangle sizes, then four
    times longer each round, up to ``t_max``), each round only for the rays not
    yet stopped: a ray costs about the boxes it passes before its first hit,
    not all the boxes along its line.

    Parameters
    ----------
    tt : TriangleTree
    origins, directions : (R, 3) ndarray of float64
        Rays; with unit directions t is a distance in mm.
    t_min, t_max : float
        Hits at ``t <= t_min`` or ``t > t_max`` do not count.
    skip : (R,) ndarray of int, optional
        A triangle each ray ignores (e.g. the one it starts on).

    Returns
    -------
    t : (R,) ndarray of float64
        Ray parameter of the nearest hit, ``inf`` where there is none.
    face : (R,) ndarray of int64
        The triangle hit, -1 where none.
    """
    origins = np.asarray(origins, dtype=np.float64)
    directions = np.asarray(directions, dtype=np.float64)
    n = len(origins)
    best_t = np.full(n, np.inf)
    best_face = np.full(n, -1, dtype=np.int64)
    skip = None if skip is None else np.asarray(skip, dtype=np.int64)
    reach = 4.0 * tt.size / max(float(np.median(np.linalg.norm(directions, axis=1))) if n else 1.0, 1e-300)
    # beyond the length of the root box's diagonal, a ray has left the tree
    across = float(np.linalg.norm(tt.tree.hi[0][0] - tt.tree.lo[0][0]))
    todo = np.arange(n)
    begin = float(t_min)  # each round searches (begin, end]: what the rounds before did not
    while len(todo):
        end = t_max if reach * float(np.min(np.linalg.norm(directions[todo], axis=1))) >= across else min(reach, t_max)
        for start in range(0, len(todo), RAY_CHUNK):
            rays = todo[start:start + RAY_CHUNK]
            o, d = origins[rays], directions[rays]
            ray, face = tt.tree.ray_pairs(o, d, begin, end)
            if skip is not None:
                keep = face != skip[rays][ray]
                ray, face = ray[keep], face[keep]
            t, _, _, _ = _intersect(tt, o, d, ray, face)
            hit = (t > begin) & (t <= end)
            ray, face, t = ray[hit], face[hit], t[hit]
            # the nearest hit per ray: sort by (ray, t), keep each ray's first
            order = np.lexsort((t, ray))
            ray, face, t = ray[order], face[order], t[order]
            first = np.ones(len(ray), dtype=bool)
            first[1:] = ray[1:] != ray[:-1]
            best_t[rays[ray[first]]] = t[first]
            best_face[rays[ray[first]]] = face[first]
        if end >= t_max:
            break
        todo = todo[best_face[todo] < 0]
        begin = end
        reach *= 4.0
    return best_t, best_face


def ray_hits(
    tt: TriangleTree, origins: np.ndarray, directions: np.ndarray, *, t_min: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every triangle each ray (a half-line beyond ``t_min``) crosses.

    Returns
    -------
    ray, face : (H,) ndarray of int64
        One entry per crossing.
    sign : (H,) ndarray of int8
        +1 where the ray leaves through the triangle's front (along its normal
        ``e1 x e2``), -1 where it enters.
    degenerate : (R,) ndarray of bool
        Rays that met a triangle on its border or edge-on, where a crossing may
        be counted twice or missed: cast those again in another direction.
    """
    origins = np.asarray(origins, dtype=np.float64)
    directions = np.asarray(directions, dtype=np.float64)
    out_ray, out_face, out_sign = [], [], []
    degenerate = np.zeros(len(origins), dtype=bool)
    for start in range(0, len(origins), RAY_CHUNK):
        stop = min(len(origins), start + RAY_CHUNK)
        o, d = origins[start:stop], directions[start:stop]
        ray, face = tt.tree.ray_pairs(o, d, float(t_min), np.inf)
        t, det, u, v = _intersect(tt, o, d, ray, face)
        hit = t > t_min
        # a crossing on a triangle's border, or a ray in a triangle's plane: the
        # count is not to be trusted (a crossing may be counted twice or missed)
        eps = 1e-9
        normal = np.cross(tt.e1[face], tt.e2[face])
        size = np.linalg.norm(normal, axis=1) * np.linalg.norm(d[ray], axis=1)
        offset = np.einsum("ij,ij->i", o[ray] - tt.v0[face], normal)
        in_plane = (np.abs(det) <= eps * size) & (np.abs(offset) <= eps * size * np.linalg.norm(tt.e1[face], axis=1))
        with np.errstate(invalid="ignore"):
            border = (u > -eps) & (v > -eps) & (u + v < 1.0 + eps) & (
                (u < eps) | (v < eps) | (u + v > 1.0 - eps)) & (t > t_min)
        degenerate[start + ray[border | in_plane]] = True
        out_ray.append(start + ray[hit])
        out_face.append(face[hit])
        # det = -d . (e1 x e2): negative det means leaving along the normal
        out_sign.append(np.where(det[hit] < 0.0, 1, -1).astype(np.int8))
    return np.concatenate(out_ray), np.concatenate(out_face), np.concatenate(out_sign), degenerate
