"""Quadric decimation (fast-simplification), always followed by a check and repair.

Decimators trade triangles for small geometric error and quite often break
watertightness (collapsed thin parts, flipped or duplicated triangles). The
result is therefore repaired and checked; when it still is not printable the
reduction is halved and tried again, and in the end the undecimated mesh is
kept rather than a broken one.

An edge collapse never makes a new piece of the part, but the repair of a
collapsed fin can close it into a tiny separate shell (a tetrahedron of 0 mL
beside a liver). Shells beyond the input's count are such fragments and are
dropped when together they hold no more than :data:`FRAGMENT_VOLUME` of the
volume; otherwise the attempt counts as broken.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from medrecon.mesh.repair import MeshCheck, check, repair
from medrecon.mesh.shells import weld_coincident
from medrecon.triangles import TriangleMesh

#: Largest share of the volume that decimation fragments may hold and still be dropped.
FRAGMENT_VOLUME = 1e-3


def _simplify(mesh: TriangleMesh, reduction: float) -> TriangleMesh:
    import fast_simplification

    v, f = fast_simplification.simplify(
        np.asarray(mesh.vertices, dtype=np.float64),
        np.asarray(mesh.faces, dtype=np.int64),
        target_reduction=float(reduction),
        # a little more aggressive than the default 7: 30 % faster, and the
        # result moves < 0.03 mm more (HD95) on a liver at 0.8 mm
        agg=9,
    )
    # drop the vertices no face uses any more (keeping their order; no sort needed)
    f = np.asarray(f, dtype=np.int64).reshape(-1, 3)
    used = np.zeros(len(v), dtype=bool)
    used[f.ravel()] = True
    new_index = np.cumsum(used) - 1
    return TriangleMesh(np.asarray(v)[used], new_index[f])


def _shells(mesh: TriangleMesh) -> tuple[np.ndarray, np.ndarray]:
    """Shell of every face and the absolute volume of every shell (mm^3) of a manifold mesh."""
    faces = np.asarray(mesh.faces, dtype=np.int64)
    v = np.asarray(mesh.vertices, dtype=np.float64)
    n = len(v)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = sparse.coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    # in a manifold mesh, shells that share no edge share no vertex either
    _, vertex_shell = connected_components(graph, directed=False)
    shell = np.unique(vertex_shell[faces[:, 0]], return_inverse=True)[1].ravel()
    tri = v[faces] - v.mean(axis=0)  # centred: the tetrahedra sum keeps its digits
    six_v = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2]))
    return shell, np.abs(np.bincount(shell, weights=six_v)) / 6.0


def _without_fragments(mesh: TriangleMesh, shells: int) -> TriangleMesh | None:
    """``mesh`` with only its ``shells`` largest shells; None if the rest is not negligible."""
    shell, volumes = _shells(mesh)
    if len(volumes) <= shells:
        return mesh
    order = np.argsort(-volumes)
    if volumes[order[shells:]].sum() > FRAGMENT_VOLUME * volumes.sum():
        return None
    keep = np.zeros(len(volumes), dtype=bool)
    keep[order[:shells]] = True
    faces = np.asarray(mesh.faces)[keep[shell]]
    used = np.zeros(len(mesh.vertices), dtype=bool)
    used[faces.ravel()] = True
    return TriangleMesh(np.asarray(mesh.vertices)[used], (np.cumsum(used) - 1)[faces])


def decimate(
    mesh: TriangleMesh,
    *,
    reduction: float | None = None,
    target_faces: int | None = None,
    attempts: int = 3,
) -> tuple[TriangleMesh, MeshCheck, float]:
    """Reduce the face count of ``mesh`` and return a checked, repaired result.

    Parameters
    ----------
    mesh : TriangleMesh
        Closed surface in mm.
    reduction : float, optional
        Fraction of faces to remove, in [0, 1); 0.75 keeps a quarter.
    target_faces : int, optional
        Face count to aim for instead of ``reduction``.
    attempts : int
        How many times to halve the reduction when the result is not printable.

    Returns
    -------
    mesh : TriangleMesh
        The decimated mesh, or ``mesh`` itself if every attempt broke it.
    check : MeshCheck
        State of the returned mesh.
    reduction : float
        The reduction actually applied (0 if none).
    """
    if (reduction is None) == (target_faces is None):
        raise ValueError("give exactly one of reduction= or target_faces=")
    n = len(mesh.faces)
    if target_faces is not None:
        if target_faces < 4:
            raise ValueError(f"target_faces must be >= 4, got {target_faces}")
        reduction = max(0.0, 1.0 - target_faces / max(n, 1))
    assert reduction is not None
    if not 0.0 <= reduction < 1.0:
        raise ValueError(f"reduction must be in [0, 1), got {reduction}")
    if reduction == 0.0 or n < 64:
        return mesh, check(mesh), 0.0
    pieces = len(_shells(mesh)[1])
    for _ in range(max(1, attempts)):
        simplified = _simplify(mesh, reduction)
        state = check(simplified)
        if not state.printable:
            simplified, state = repair(simplified)
        if state.printable and state.shells > pieces:
            kept = _without_fragments(simplified, pieces)
            if kept is not None:
                simplified, state = kept, check(kept)
        if state.printable and state.shells <= pieces:
            return simplified, state, reduction
        reduction /= 2.0
    return mesh, check(mesh), 0.0


#: Faces per piece in :func:`lighter_copy`. fast-simplification holds Python's
#: interpreter lock while it runs (about 1 s per million faces here), so one call
#: on a whole skull would freeze a GUI thread beside it for that long.
DISPLAY_PIECE_FACES = 40_000


def lighter_copy(mesh: TriangleMesh, target_faces: int, *, piece_faces: int = DISPLAY_PIECE_FACES) -> TriangleMesh:
    """Return a copy of ``mesh`` with about ``target_faces`` faces, to draw (not to print).

    Quadric simplification of slabs of about ``piece_faces`` faces along the
    mesh's longest extent, each with its cut edges kept where they are, then
    welded back together: no seams, and no single call into the simplifier
    runs long, so a GUI thread beside the one running this stays responsive.
    The kept cut edges hold faces back; a second pass cuts half a slab further
    on, where the first pass's cuts are inside a slab. Unlike :func:`decimate`,
    the copy is neither checked nor repaired (a repair of a skull takes
    seconds holding the lock), and nothing is retried.

    Parameters
    ----------
    mesh : TriangleMesh
        Surface in mm.
    target_faces : int
        Face count to aim for; a mesh with no more faces is returned as it is.
    piece_faces : int
        Faces per slab.

    Returns
    -------
    TriangleMesh
        The copy, with the faces' winding kept.
    """
    if target_faces < 4:
        raise ValueError(f"target_faces must be >= 4, got {target_faces}")
    copy = mesh
    for shift in (0.0, 0.5):
        if len(copy.faces) <= 1.1 * target_faces:
            break
        copy = _simplify_in_slabs(copy, target_faces, piece_faces, shift)
    return copy


def _simplify_in_slabs(mesh: TriangleMesh, target_faces: int, piece_faces: int, shift: float) -> TriangleMesh:
    """One pass of :func:`lighter_copy`: slabs start ``shift`` of a slab along the longest extent."""
    import fast_simplification

    faces = np.asarray(mesh.faces, dtype=np.int64)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    reduction = 1.0 - target_faces / len(faces)
    centres = vertices[faces].mean(axis=1)
    axis = int(np.argmax(np.ptp(centres, axis=0)))
    order = np.argsort(centres[:, axis], kind="stable")
    count = max(1, -(-len(faces) // piece_faces))
    # cuts at 1, 2, ... slabs (shift 0) or at 0.5, 1.5, ... slabs (shift 0.5); an empty last piece is skipped
    cuts = np.round((np.arange(1, count + 1) - shift) * len(faces) / count).astype(int)
    out_v, out_f, offset = [], [], 0
    for piece in np.split(order, cuts):
        if len(piece) == 0:
            continue
        used, local = np.unique(faces[piece], return_inverse=True)
        v, f = fast_simplification.simplify(
            vertices[used], local.reshape(-1, 3), target_reduction=reduction, agg=9, preserve_border=True
        )
        out_v.append(np.asarray(v, dtype=np.float64))
        out_f.append(np.asarray(f, dtype=np.int64).reshape(-1, 3) + offset)
        offset += len(v)
    # a cut edge's vertices were kept in both slabs at the same place: weld them
    joined, weld = weld_coincident(np.concatenate(out_v))
    welded = weld[np.concatenate(out_f)]
    live = (welded[:, 0] != welded[:, 1]) & (welded[:, 1] != welded[:, 2]) & (welded[:, 2] != welded[:, 0])
    return TriangleMesh(joined, welded[live])
