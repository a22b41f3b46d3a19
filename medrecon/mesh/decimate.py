"""Quadric decimation (fast-simplification), always followed by a check and repair.

Decimators trade triangles for small geometric error and quite often break
watertightness (collapsed thin parts, flipped or duplicated triangles). The
result is therefore repaired and checked; when it still is not printable the
reduction is halved and tried again, and in the end the undecimated mesh is
kept rather than a broken one.
"""

from __future__ import annotations

import numpy as np

from medrecon.mesh.repair import MeshCheck, check, repair
from medrecon.triangles import TriangleMesh


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
    for _ in range(max(1, attempts)):
        simplified = _simplify(mesh, reduction)
        state = check(simplified)
        if not state.printable:
            simplified, state = repair(simplified)
        if state.printable:
            return simplified, state, reduction
        reduction /= 2.0
    return mesh, check(mesh), 0.0
