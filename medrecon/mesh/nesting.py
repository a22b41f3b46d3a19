"""How deep each shell of a mesh lies inside the others (solids, cavities, islands in cavities).

A shell nested in an even number of others is a solid (outward normals, positive
signed volume); in an odd number, a cavity (normals into the cavity). Shell
``a`` lies in shell ``b`` when ``b``'s bounding box holds ``a``'s and a point of
``a`` is inside ``b``. The candidate pairs come from a tree over the shells'
boxes, and every candidate point is tested in one ray cast against the
candidate containers' triangles together (the signed crossings of a ray are the
winding number), so the cost follows faces and shells, not shells squared, even
for thousands of pieces inside one large organ. A few candidate pairs (a hollow
organ: its cavity in its outer surface) are tested by solid angles instead,
without building a tree.
"""

from __future__ import annotations

import numpy as np

from medrecon.mesh.bvh import BoxTree, group_boxes, ray_hits, triangle_boxes, triangle_tree

#: Ray directions for the inside test, tried in turn while a ray meets an edge:
#: fixed (reproducible) and far from every axis and diagonal.
_DIRECTIONS = np.array([
    [0.5361, 0.3213, 0.7806],
    [-0.4178, 0.7723, 0.4784],
    [0.6971, -0.5302, -0.4826],
    [-0.2874, -0.6431, 0.7098],
])


#: Up to this many candidate (shell, container) pairs are tested by solid angles.
FEW_PAIRS = 4


def _solid_angle(point: np.ndarray, tri: np.ndarray) -> float:
    """Signed solid angle of the triangles ``tri`` seen from ``point`` (4 pi inside a closed outward shell)."""
    a, b, c = (tri[:, k] - point for k in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
    num = np.einsum("ij,ij->i", a, np.cross(b, c))
    den = (la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", a, c) * lb
           + np.einsum("ij,ij->i", b, c) * la)
    return float(np.sum(2.0 * np.arctan2(num, den)))


def _shell_boxes(tri: np.ndarray, shell_of_face: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    return group_boxes(*triangle_boxes(tri), shell_of_face, n)


def _contained_pairs(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b), a != b, where box b holds box a (closed boxes)."""
    tree = BoxTree.build(lo, hi, leaf_size=4)
    inner, outer = [], []
    for i, j in tree.overlapping_pairs():
        for a, b in ((i, j), (j, i)):
            holds = np.all((lo[b] <= lo[a]) & (hi[a] <= hi[b]), axis=1)
            inner.append(a[holds])
            outer.append(b[holds])
    if not inner:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(inner), np.concatenate(outer)


def nesting_depth(vertices: np.ndarray, faces: np.ndarray, shell_of_face: np.ndarray, n: int) -> np.ndarray:
    """Count the other shells each shell lies inside.

    Parameters
    ----------
    vertices : (V, 3) ndarray of float64
        Positions in mm.
    faces : (F, 3) ndarray of int
        Triangles, wound consistently within each shell, every shell closed.
    shell_of_face : (F,) ndarray of int
        Shell of each face, ``0 .. n - 1``, every shell holding a face.
    n : int
        Number of shells.

    Returns
    -------
    (n,) ndarray of int64
        For each shell, how many other shells hold its first face's centroid.
    """
    depth = np.zeros(n, dtype=np.int64)
    if n < 2:
        return depth
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    lo, hi = _shell_boxes(tri, shell_of_face, n)
    inner, outer = _contained_pairs(lo, hi)
    if len(inner) == 0:
        return depth
    first_face = np.unique(shell_of_face, return_index=True)[1]
    if len(inner) <= FEW_PAIRS:
        # a hollow organ: a few pairs, cheaper by solid angles than by building a tree
        for a, b in zip(inner.tolist(), outer.tolist(), strict=True):
            if abs(_solid_angle(tri[first_face[a]].mean(axis=0), tri[shell_of_face == b])) > 2.0 * np.pi:
                depth[a] += 1
        return depth
    # one ray per shell that has a candidate container, against those containers' faces only
    probes = np.unique(inner)
    points = tri[first_face[probes]].mean(axis=1)
    containers = np.unique(outer)
    mine = np.flatnonzero(np.isin(shell_of_face, containers))
    tt = triangle_tree(tri[mine])
    shell_of_hit = shell_of_face[mine]
    inside_keys = []
    todo = np.arange(len(probes))
    for attempt, direction in enumerate(_DIRECTIONS):
        ray, face, sign, degenerate = ray_hits(tt, points[todo], np.broadcast_to(direction, (len(todo), 3)))
        # a ray that met an edge is cast again in the next direction (the last one is kept)
        done = ~degenerate if attempt < len(_DIRECTIONS) - 1 else np.ones(len(todo), dtype=bool)
        keep = done[ray]
        probe, shell = probes[todo[ray[keep]]], shell_of_hit[face[keep]]
        other = probe != shell  # the ray starts on its own shell
        key, inverse = np.unique(probe[other] * n + shell[other], return_inverse=True)
        winding = np.bincount(inverse.ravel(), weights=sign[keep][other], minlength=len(key))
        inside_keys.append(key[np.rint(winding) != 0])
        todo = todo[~done]
        if len(todo) == 0:
            break
    inside = np.isin(inner * n + outer, np.concatenate(inside_keys))
    np.add.at(depth, inner[inside], 1)
    return depth
