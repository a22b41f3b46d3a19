"""Print-readiness report of one mesh: geometry, topology and fidelity numbers.

Fidelity is the distance between the final mesh and the raw marching-cubes
surface of the mask: points are sampled uniformly (by area) on each surface and
their exact distance to the other surface is computed (closest point on the
nearest candidate triangles). ``hd95_mm`` is the 95th percentile and
``mean_distance_mm`` the mean of both directions pooled, as medpy's ``hd95``
and average symmetric surface distance do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from medrecon.mesh.repair import MeshCheck, check

#: Points sampled on each surface for the distance measures.
SAMPLES = 20_000
#: Candidate triangles (nearest centroids) searched per point.
CANDIDATES = 12


def distances_to_surface(points: np.ndarray, mesh: trimesh.Trimesh, *, candidates: int = CANDIDATES) -> np.ndarray:
    """Distance in mm from each of (N, 3) ``points`` to the surface of ``mesh``.

    Exact for the closest of the ``candidates`` triangles whose centroids are
    nearest, which contains the true closest point on meshes whose triangles
    are small relative to their spacing (marching-cubes and decimated organ
    meshes).
    """
    tri = np.asarray(mesh.triangles)
    k = min(candidates, len(tri))
    _, idx = cKDTree(tri.mean(axis=1)).query(points, k=k)
    idx = np.asarray(idx).reshape(len(points), k)
    best = np.full(len(points), np.inf)
    for col in range(k):
        closest = trimesh.triangles.closest_point(tri[idx[:, col]], points)
        best = np.minimum(best, np.linalg.norm(closest - points, axis=1))
    return best


def surface_distances(
    a: trimesh.Trimesh, b: trimesh.Trimesh, *, samples: int = SAMPLES, seed: int = 0
) -> np.ndarray:
    """Pooled distances (mm) from points on ``a`` to ``b`` and from points on ``b`` to ``a``."""
    out = []
    for n, (src, dst) in enumerate(((a, b), (b, a))):
        pts, _ = trimesh.sample.sample_surface(src, samples, seed=seed + n)
        out.append(distances_to_surface(np.asarray(pts), dst))
    return np.concatenate(out)


def mesh_report(
    mesh: trimesh.Trimesh,
    *,
    raw: trimesh.Trimesh | None = None,
    voxel_volume_mm3: float | None = None,
    state: MeshCheck | None = None,
) -> dict[str, Any]:
    """Numbers that say whether ``mesh`` will print and how far processing moved it.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        Final mesh in mm.
    raw : trimesh.Trimesh, optional
        Raw marching-cubes surface; gives ``hd95_mm`` and ``mean_distance_mm``
        (None when not given).
    voxel_volume_mm3 : float, optional
        Volume of the mask (voxel count x voxel volume).
    state : MeshCheck, optional
        A check already computed for ``mesh``.

    Returns
    -------
    dict
        ``voxel_volume_ml``, ``mesh_volume_ml``, ``volume_difference_percent``,
        ``surface_area_mm2``, ``watertight``, ``manifold``,
        ``winding_consistent``, ``outward``, ``shells``, ``boundary_edges``,
        ``nonmanifold_edges``, ``nonmanifold_vertices``, ``self_intersections``
        (None: not checked, no cheap check is available), ``faces``,
        ``vertices``, ``bbox_mm`` ([[min x, y, z], [max x, y, z]]),
        ``size_mm``, ``hd95_mm``, ``mean_distance_mm``, ``max_distance_mm``.
        Numbers are not rounded.
    """
    state = state or check(mesh)
    volume_mm3 = float(mesh.volume) if len(mesh.faces) else 0.0
    lo, hi = (mesh.bounds if len(mesh.vertices) else np.zeros((2, 3)))
    out: dict[str, Any] = {
        "voxel_volume_ml": None if voxel_volume_mm3 is None else float(voxel_volume_mm3) / 1000.0,
        "mesh_volume_ml": volume_mm3 / 1000.0,
        "volume_difference_percent": None,
        "surface_area_mm2": float(mesh.area),
        "watertight": state.watertight,
        "manifold": state.manifold,
        "winding_consistent": state.winding_consistent,
        "outward": state.outward,
        "shells": state.shells,
        "boundary_edges": state.boundary_edges,
        "nonmanifold_edges": state.nonmanifold_edges,
        "nonmanifold_vertices": state.nonmanifold_vertices,
        "self_intersections": None,
        "faces": int(len(mesh.faces)),
        "vertices": int(len(mesh.vertices)),
        "bbox_mm": [np.asarray(lo, float).tolist(), np.asarray(hi, float).tolist()],
        "size_mm": np.asarray(hi - lo, float).tolist(),
        "hd95_mm": None,
        "mean_distance_mm": None,
        "max_distance_mm": None,
    }
    if voxel_volume_mm3:
        out["volume_difference_percent"] = 100.0 * (volume_mm3 - voxel_volume_mm3) / voxel_volume_mm3
    if raw is not None:
        out.update(fidelity(mesh, raw))
    return out


def fidelity(mesh: trimesh.Trimesh, raw: trimesh.Trimesh) -> dict[str, float | None]:
    """``hd95_mm``, ``mean_distance_mm`` and ``max_distance_mm`` between two surfaces."""
    if not len(mesh.faces) or not len(raw.faces):
        return {"hd95_mm": None, "mean_distance_mm": None, "max_distance_mm": None}
    d = surface_distances(mesh, raw)
    return {
        "hd95_mm": float(np.percentile(d, 95)),
        "mean_distance_mm": float(d.mean()),
        "max_distance_mm": float(d.max()),
    }
