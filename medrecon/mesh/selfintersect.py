"""Self-intersecting triangle pairs of a mesh: a slicer prints them as garbage.

Candidate pairs are the triangles whose bounding boxes overlap, found with a
:class:`~medrecon.mesh.bvh.BoxTree` (cost about linear in the faces); each one
is then tested exactly, in the way of Moeller's triangle-triangle test (the
signed distances of each triangle's corners to the other's plane, then the
overlap of the two intervals on the planes' common line), vectorised over all
pairs. Neighbours that share a vertex or an edge touch by construction and
count only when they overlap beyond it, as in MeshFix
(``Triangle::intersects``): two triangles on one edge intersect when they are
coplanar and folded onto each other; two on one vertex when the edge opposite
the vertex in one crosses the other (or, coplanar, when their corners at the
vertex overlap). Most candidate pairs of a smooth mesh are such neighbours;
where their shared vertex has a simple fan (its faces, seen along their mean
normal, all face the viewer and go round it once) they cannot overlap and skip
the exact test. Coplanar pairs that share no corner (the faces of a flat cut,
where many boxes overlap) are first told apart by a separating edge line in their
plane, and take the full coplanar test only where that cannot clear them.
Coincident vertices are merged first, so an unwelded mesh (an STL file) is
judged by its geometry.

Distances within ``1e-9`` of the mesh's size count as zero (plane tests), so
coplanar neighbours of a flat marching-cubes patch are recognised as such;
positions are in mm.
"""

from __future__ import annotations

import numpy as np

from medrecon.mesh.bvh import BoxTree, triangle_boxes
from medrecon.mesh.shells import edge_table, weld_coincident
from medrecon.triangles import TriangleMesh

_TOL = 1e-9  # relative to the mesh's size (distances) or 1 (sines of angles)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0.0, norm, 1.0)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("...k,...k->...", a, b)


def _snap(d: np.ndarray, tol: float) -> np.ndarray:
    return np.where(np.abs(d) <= tol, 0.0, d)


def _normals(tri: np.ndarray) -> np.ndarray:
    return _unit(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))


def _interval(tri: np.ndarray, d: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each triangle meets the other's plane, as an interval along ``line``."""
    proj = _dot(tri, line[:, None, :])
    ts = []
    for i, j in ((0, 1), (1, 2), (2, 0)):
        cross = d[:, i] * d[:, j] < 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            t = proj[:, i] + (proj[:, j] - proj[:, i]) * d[:, i] / (d[:, i] - d[:, j])
        ts.append(np.where(cross, t, np.nan))
        ts.append(np.where(d[:, i] == 0.0, proj[:, i], np.nan))
    stack = np.stack(ts, axis=1)
    has = ~np.all(np.isnan(stack), axis=1)
    lo = np.where(has, np.nanmin(np.where(has[:, None], stack, 0.0), axis=1), np.inf)
    hi = np.where(has, np.nanmax(np.where(has[:, None], stack, 0.0), axis=1), -np.inf)
    return lo, hi


def _orient2(a: np.ndarray, b: np.ndarray, c: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Signed area of (a, b, c) seen along the unit normal ``n`` (positive: counter-clockwise)."""
    return _dot(np.cross(b - a, c - a), n)


def _coplanar_overlap(ta: np.ndarray, tb: np.ndarray, n: np.ndarray, tol: float) -> np.ndarray:
    """Coplanar triangles whose interiors overlap or that touch (edges cross, a corner in the other)."""
    hit = np.zeros(len(ta), dtype=bool)

    def side(e0: np.ndarray, e1: np.ndarray, p: np.ndarray) -> np.ndarray:
        # which side of the line e0-e1 p lies on: -1, 0 (within tol) or +1
        h = _orient2(e0, e1, p, n) / np.maximum(np.linalg.norm(e1 - e0, axis=1), 1e-300)
        return np.sign(_snap(h, tol))

    for i in range(3):
        a0, a1 = ta[:, i], ta[:, (i + 1) % 3]
        for j in range(3):
            b0, b1 = tb[:, j], tb[:, (j + 1) % 3]
            hit |= (side(a0, a1, b0) * side(a0, a1, b1) < 0) & (side(b0, b1, a0) * side(b0, b1, a1) < 0)
    for p, q in ((ta, tb), (tb, ta)):
        sign = np.sign(_orient2(q[:, 0], q[:, 1], q[:, 2], n))
        for k in range(3):
            inside = np.ones(len(ta), dtype=bool)
            for e in range(3):
                e0, e1 = q[:, e], q[:, (e + 1) % 3]
                inside &= sign * _orient2(e0, e1, p[:, k], n) >= -tol * np.linalg.norm(e1 - e0, axis=1)
            hit |= inside
    return hit


def _coplanar_apart(ta: np.ndarray, tb: np.ndarray, n: np.ndarray, tol: float) -> np.ndarray:
    """Coplanar triangles that surely neither cross nor touch: :func:`_coplanar_overlap` would say no.

    A cheap test in the plane's own 2D coordinates (seen along ``n``, as there):
    each corner of either triangle lies more than ``2 tol`` outside some edge of
    the other, and one edge's line has the other triangle wholly beyond it (a
    separating line, so no edges cross). Triangles too thin for their
    orientation to be told surely are left to the full test. Neighbouring
    triangles of a flat patch (a surface's cut face) are mostly told apart here.
    """
    u = _unit(ta[:, 1] - ta[:, 0])
    w = np.cross(n, u)  # (u, w, n) right-handed: 2D cross products are orient2 about n
    corners = np.concatenate([ta, tb], axis=1)  # (N, 6, 3): a's corners, then b's
    rel = corners - ta[:, :1]
    x = np.ascontiguousarray(np.einsum("nkc,nc->kn", rel, u))  # (6, N), a row per corner
    y = np.ascontiguousarray(np.einsum("nkc,nc->kn", rel, w))
    side = np.linalg.norm(np.roll(corners.reshape(-1, 2, 3, 3), -1, axis=2) - corners.reshape(-1, 2, 3, 3), axis=3)
    beyond = np.zeros(len(ta), dtype=bool)
    sure = np.ones(len(ta), dtype=bool)
    inside_any = np.zeros(len(ta), dtype=bool)
    for q, p in ((0, 3), (3, 0)):  # q: the triangle whose edges judge, p: the other
        qx, qy = x[q:q + 3], y[q:q + 3]
        ex = [qx[(k + 1) % 3] - qx[k] for k in range(3)]
        ey = [qy[(k + 1) % 3] - qy[k] for k in range(3)]
        area = ex[0] * ey[1] - ey[0] * ex[1]
        longest = np.maximum(np.maximum(ex[0] ** 2 + ey[0] ** 2, ex[1] ** 2 + ey[1] ** 2), ex[2] ** 2 + ey[2] ** 2)
        # the full test takes the orientation's sign from the same quantity: it must be sure
        sure &= np.abs(area) > 1e-6 * longest
        # margin scaled per edge: outside by more than 2 tol, along the 3D edge length
        scale = -2.0 * tol * np.sign(area)[None] * side[:, q // 3].T  # (3 edges, N)
        far = [[None] * 3 for _ in range(3)]  # far[k][c]: the other's corner c beyond edge k
        for k in range(3):
            for c in range(3):
                cross = ex[k] * (y[p + c] - qy[k]) - ey[k] * (x[p + c] - qx[k])
                # sign * cross / length < -2 tol, with the sign and length moved over
                far[k][c] = np.where(area > 0, cross < scale[k], cross > scale[k])
            beyond |= far[k][0] & far[k][1] & far[k][2]
        for c in range(3):
            inside_any |= ~(far[0][c] | far[1][c] | far[2][c])
    return sure & beyond & ~inside_any


def _disjoint_pairs(ta: np.ndarray, tb: np.ndarray, tol: float) -> np.ndarray:
    """Exact test for triangles that share no vertex (closed triangles: touching counts)."""
    na, nb = _normals(ta), _normals(tb)
    raw_b = _dot(tb - ta[:, :1], na[:, None])
    raw_a = _dot(ta - tb[:, :1], nb[:, None])
    db, da = _snap(raw_b, tol), _snap(raw_a, tol)
    apart = np.all(db > 0, axis=1) | np.all(db < 0, axis=1) | np.all(da > 0, axis=1) | np.all(da < 0, axis=1)
    coplanar = np.all(db == 0, axis=1) | np.all(da == 0, axis=1)
    hit = np.zeros(len(ta), dtype=bool)
    flat = ~apart & coplanar
    if np.any(flat):
        flat[flat] = ~_coplanar_apart(ta[flat], tb[flat], na[flat], tol)
    if np.any(flat):
        hit[flat] = _coplanar_overlap(ta[flat], tb[flat], na[flat], tol)
    cross = ~apart & ~coplanar
    if np.any(cross):
        line = np.cross(na[cross], nb[cross])
        # the crossings from the unsnapped distances: where the planes are nearly
        # parallel, a corner moved onto a plane would move far along their common line
        lo_a, hi_a = _interval(ta[cross], raw_a[cross], line)
        lo_b, hi_b = _interval(tb[cross], raw_b[cross], line)
        hit[cross] = np.maximum(lo_a, lo_b) <= np.minimum(hi_a, hi_b)
    return hit


def _rotate(tri: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Each triangle's corners cyclically rotated so that corner ``first`` comes first (winding kept)."""
    idx = (first[:, None] + np.arange(3)) % 3
    return tri[np.arange(len(tri))[:, None], idx]


def _segment_hits_triangle(s0: np.ndarray, s1: np.ndarray, tri: np.ndarray, n: np.ndarray, tol: float) -> np.ndarray:
    """Segments that meet the (closed) triangles, which are not in their plane."""
    d0 = _snap(_dot(s0 - tri[:, 0], n), tol)
    d1 = _snap(_dot(s1 - tri[:, 0], n), tol)
    meets = (d0 * d1 < 0.0) | ((d0 == 0.0) != (d1 == 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(d0 == d1, 0.0, d0 / (d0 - d1))
    x = s0 + (s1 - s0) * w[:, None]
    inside = meets
    for e in range(3):
        e0, e1 = tri[:, e], tri[:, (e + 1) % 3]
        inside &= _orient2(e0, e1, x, n) >= -tol * np.linalg.norm(e1 - e0, axis=1)
    return inside


def _vertex_pairs(ta: np.ndarray, tb: np.ndarray, tol: float) -> np.ndarray:
    """Tell which triangles sharing corner 0 (``ta[:, 0] == tb[:, 0]``) overlap beyond it."""
    na, nb = _normals(ta), _normals(tb)
    db = _snap(_dot(tb[:, 1:] - ta[:, :1], na[:, None]), tol)
    da = _snap(_dot(ta[:, 1:] - tb[:, :1], nb[:, None]), tol)
    # one triangle strictly on one side of the other's plane: they meet at the vertex only
    apart = (np.all(db > 0, axis=1) | np.all(db < 0, axis=1) | np.all(da > 0, axis=1)
             | np.all(da < 0, axis=1))
    coplanar = np.all(db == 0, axis=1) | np.all(da == 0, axis=1)
    hit = np.zeros(len(ta), dtype=bool)
    c = coplanar
    if np.any(c):
        # the two corners at the shared vertex, as wedges turning counter-clockwise about na
        v, n = ta[c, 0], na[c]
        x1, y1 = _unit(ta[c, 1] - v), _unit(ta[c, 2] - v)
        x2, y2 = _unit(tb[c, 1] - v), _unit(tb[c, 2] - v)
        flip = _dot(np.cross(x2, y2), n) < 0
        x2, y2 = np.where(flip[:, None], y2, x2), np.where(flip[:, None], x2, y2)

        def within(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return (_dot(np.cross(x, w), n) > _TOL) & (_dot(np.cross(w, y), n) > _TOL)

        same = (_dot(x1, x2) > 0) & (np.linalg.norm(np.cross(x1, x2), axis=1) <= _TOL) & (
            _dot(y1, y2) > 0) & (np.linalg.norm(np.cross(y1, y2), axis=1) <= _TOL)
        hit[c] = within(x2, x1, y1) | within(y2, x1, y1) | within(x1, x2, y2) | within(y1, x2, y2) | same
    s = ~coplanar & ~apart
    if np.any(s):
        hit[s] = _segment_hits_triangle(ta[s, 1], ta[s, 2], tb[s], nb[s], tol) | _segment_hits_triangle(
            tb[s, 1], tb[s, 2], ta[s], na[s], tol)
    return hit


def _edge_pairs(ta: np.ndarray, tb: np.ndarray, tol: float) -> np.ndarray:
    """Tell which triangles sharing the edge of corners 1 and 2 (corner 0 opposite) fold onto each other."""
    na = _normals(ta)
    coplanar = np.abs(_dot(tb[:, 0] - ta[:, 1], na)) <= tol
    edge = ta[:, 2] - ta[:, 1]
    side_a = np.cross(edge, ta[:, 0] - ta[:, 1])
    side_b = np.cross(edge, tb[:, 0] - ta[:, 1])
    return coplanar & (_dot(side_a, side_b) > 0.0)


def _simple_fans(vertices: np.ndarray, faces: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Vertices whose faces cannot intersect one another (away from their shared edges).

    Seen along the mean normal at the vertex, each incident face must be turned
    toward the viewer (its normal within about 78 degrees of the mean) and their
    corners at the vertex must go round it exactly once (angles adding up to 2
    pi): the fan is then the graph of a function over the plane, a simple
    disc, and two of its faces meet only at the vertex or along a shared edge.
    Folds, overlapping fans, non-manifold and border vertices fail the test.
    """
    n_vertices = len(vertices)
    corner = faces.ravel()
    mean = np.stack([np.bincount(corner, weights=np.repeat(normal[:, c], 3), minlength=n_vertices)
                     for c in range(3)], axis=1)
    mean = _unit(mean)
    m = mean[corner]
    facing = _dot(np.repeat(normal, 3, axis=0), m) > 0.2
    apex = vertices[corner]
    nxt = vertices[np.roll(faces, -1, axis=1).ravel()] - apex
    prv = vertices[np.roll(faces, 1, axis=1).ravel()] - apex
    nxt = nxt - _dot(nxt, m)[:, None] * m
    prv = prv - _dot(prv, m)[:, None] * m
    angle = np.arctan2(_dot(np.cross(nxt, prv), m), _dot(nxt, prv))
    total = np.bincount(corner, weights=angle, minlength=n_vertices)
    turned = np.bincount(corner, weights=~facing, minlength=n_vertices)
    # every edge at the vertex between exactly two faces: its faces close into fans, whose
    # angles add up to 2 pi times the turns they make (all angles being positive)
    edge_of_half, _, counts, _ = edge_table(faces)
    open_edge = counts[edge_of_half] != 2
    border = np.zeros(n_vertices, dtype=bool)
    border[faces.ravel()[open_edge]] = True
    border[np.roll(faces, -1, axis=1).ravel()[open_edge]] = True
    return (turned == 0) & ~border & (np.abs(total - 2.0 * np.pi) < 1e-6)


def _test_pairs(
    tri: np.ndarray, faces: np.ndarray, normal: np.ndarray, simple: np.ndarray, i: np.ndarray, j: np.ndarray,
    tol: float,
) -> np.ndarray:
    """Which candidate pairs (i, j) intersect; ``normal`` holds each face's unit normal."""
    # neighbours joined at a vertex with a simple fan meet only where they are joined; most
    # candidate pairs are such neighbours, so this is told corner by corner on flat arrays
    corners = faces.T  # (3, F), each row contiguous
    b0, b1, b2 = corners[0][j], corners[1][j], corners[2][j]
    joined = np.zeros(len(i), dtype=bool)
    for row in corners:
        va = row[i]
        joined |= ((va == b0) | (va == b1) | (va == b2)) & simple[va]
    hit = np.zeros(len(i), dtype=bool)
    rest = np.flatnonzero(~joined)
    if len(rest) == 0:
        return hit
    i, j = i[rest], j[rest]
    match = faces[i][:, :, None] == faces[j][:, None, :]
    hit[rest] = _test_unjoined(tri, normal, i, j, match, tol)
    return hit


def _test_unjoined(
    tri: np.ndarray, normal: np.ndarray, i: np.ndarray, j: np.ndarray, match: np.ndarray, tol: float
) -> np.ndarray:
    """Exact test of pairs (i, j) whose shared corners (``match``, (N, 3, 3)) need it."""
    own_a, own_b = ~match.any(axis=2), ~match.any(axis=1)  # corners not shared
    shared = 3 - own_a.sum(axis=1)
    # quick rejection: the corners of one triangle that are not shared all lie
    # strictly on one side of the other's plane (neighbours then meet only where
    # they are joined), which holds for nearly every pair of a clean mesh
    ta, tb = tri[i], tri[j]
    db = _snap(np.einsum("nkc,nc->nk", tb - ta[:, :1], normal[i]), tol)
    da = _snap(np.einsum("nkc,nc->nk", ta - tb[:, :1], normal[j]), tol)
    apart = np.zeros(len(i), dtype=bool)
    for d, own in ((db, own_b), (da, own_a)):
        apart |= np.all((d > 0) | ~own, axis=1) | np.all((d < 0) | ~own, axis=1)
    hit = shared >= 3  # the same triangle twice
    todo = ~apart & ~hit
    none = todo & (shared == 0)
    if np.any(none):
        hit[none] = _disjoint_pairs(ta[none], tb[none], tol)
    one = todo & (shared == 1)
    if np.any(one):
        hit[one] = _vertex_pairs(
            _rotate(ta[one], np.argmin(own_a[one], axis=1)), _rotate(tb[one], np.argmin(own_b[one], axis=1)), tol)
    two = todo & (shared == 2)
    if np.any(two):
        hit[two] = _edge_pairs(
            _rotate(ta[two], np.argmax(own_a[two], axis=1)), _rotate(tb[two], np.argmax(own_b[two], axis=1)), tol)
    return hit


def intersecting_pairs(mesh: TriangleMesh, *, tree: BoxTree | None = None) -> np.ndarray:
    """Every pair of faces of ``mesh`` that intersect (see the module docstring).

    Parameters
    ----------
    mesh : TriangleMesh
        ``vertices`` (V, 3) float64 in mm, ``faces`` (F, 3) int.
    tree : BoxTree, optional
        A tree over the bounding boxes of ``mesh``'s faces, in face order,
        grown by ``1e-9`` of the mesh's size (``triangle_tree(...).tree``), to
        share with other queries; used unless degenerate faces must be left out.

    Returns
    -------
    (P, 2) ndarray of int64
        Face indices ``i < j`` of each intersecting pair, sorted.
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if len(faces) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    if not np.all(np.isfinite(vertices)):
        raise ValueError("vertices must be finite (got NaN or infinity)")
    # weld coincident vertices: neighbours in an unwelded mesh share positions, not indices
    vertices, weld = weld_coincident(vertices)
    faces = weld[faces]
    degenerate = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])
    live = np.flatnonzero(~degenerate)
    tri = vertices[faces[live]]
    faces = np.ascontiguousarray(faces[live].T).T  # column-major: a corner's column gathers fast
    if len(faces) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    lo, hi = triangle_boxes(tri)
    size = float(np.max(hi.max(axis=0) - lo.min(axis=0))) or 1.0
    tol = _TOL * size
    normal = _normals(tri)
    simple = _simple_fans(vertices, faces, normal)
    if tree is None or len(live) < len(mesh.faces):
        tree = BoxTree.build(lo, hi, leaf_size=3, pad=tol)
    found = []
    for i, j in tree.overlapping_pairs():
        hit = _test_pairs(tri, faces, normal, simple, i, j, tol)
        found.append(np.stack([live[i[hit]], live[j[hit]]], axis=1))
    pairs = np.sort(np.concatenate(found), axis=1) if found else np.zeros((0, 2), dtype=np.int64)
    return np.unique(pairs, axis=0)


def count_self_intersections(mesh: TriangleMesh, *, tree: BoxTree | None = None) -> int:
    """Count the intersecting face pairs of ``mesh`` (0 for a clean print); ``tree`` as for :func:`intersecting_pairs`."""
    return len(intersecting_pairs(mesh, tree=tree))
