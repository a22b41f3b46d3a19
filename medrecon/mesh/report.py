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
from scipy.spatial import cKDTree

from medrecon.mesh.repair import MeshCheck, check
from medrecon.triangles import TriangleMesh

#: Points sampled on each surface for the distance measures.
SAMPLES = 5_000
MIN_SAMPLES = 500
#: Candidate triangles (nearest centroids) searched per point.
CANDIDATES = 6


def point_triangle_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Euclidean distance from points ``p`` to triangles ``(a, b, c)``, row by row.

    All arguments are (N, 3) arrays; returns (N,). Closest-feature regions after
    Ericson, *Real-Time Collision Detection*, 5.1.5.
    """
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    bp = p - b
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    cp = p - c
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        v = np.where(denom != 0, vb / denom, 0.0)
        w = np.where(denom != 0, vc / denom, 0.0)
        closest = a + ab * v[:, None] + ac * w[:, None]  # inside the face
        t_ab = np.clip(d1 / (d1 - d3), 0, 1)
        on_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
        closest = np.where(on_ab[:, None], a + ab * t_ab[:, None], closest)
        t_ac = np.clip(d2 / (d2 - d6), 0, 1)
        on_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
        closest = np.where(on_ac[:, None], a + ac * t_ac[:, None], closest)
        t_bc = np.clip((d4 - d3) / ((d4 - d3) + (d5 - d6)), 0, 1)
        on_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
        closest = np.where(on_bc[:, None], b + (c - b) * t_bc[:, None], closest)
    closest = np.where(((d1 <= 0) & (d2 <= 0))[:, None], a, closest)
    closest = np.where(((d3 >= 0) & (d4 <= d3))[:, None], b, closest)
    closest = np.where(((d6 >= 0) & (d5 <= d6))[:, None], c, closest)
    return np.linalg.norm(p - closest, axis=1)


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, y)


def triangles(mesh: TriangleMesh) -> np.ndarray:
    """(F, 3, 3) float64 corner positions (no trimesh cache involved)."""
    return np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces, dtype=np.int64)]


class FaceGeometry:
    """Corners, area normals and areas of a mesh's triangles, computed once.

    The report needs them several times per surface (volume and area, area
    weights for sampling, centroids for the distance search); this holds them.

    Attributes
    ----------
    tri : (F, 3, 3) ndarray of float64
        Corner positions in mm.
    normals : (F, 3) ndarray of float64
        ``(b - a) x (c - a)``: normal times twice the area, mm^2.
    double_areas : (F,) ndarray of float64
        Twice each triangle's area, mm^2.
    """

    def __init__(self, tri: np.ndarray):
        self.tri = tri
        self.normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        self.double_areas = np.linalg.norm(self.normals, axis=1)
        self._tree: cKDTree | None = None

    @classmethod
    def of(cls, mesh: TriangleMesh) -> FaceGeometry:
        """Compute the geometry of ``mesh``'s faces."""
        return cls(triangles(mesh))

    def volume_area(self) -> tuple[float, float]:
        """Signed volume (mm^3) and area (mm^2), as :func:`volume_area`."""
        tri = self.tri
        if len(tri) == 0:
            return 0.0, 0.0
        # a . (b x c) = a . ((b - a) x (c - a)): the area normals give the signed
        # tetrahedra from the centroid (centred: no digits lost far from the origin)
        corner = tri[:, 0] - tri.reshape(-1, 3).mean(axis=0)
        volume = float(np.einsum("ij,ij->", corner, self.normals)) / 6.0
        return volume, float(0.5 * self.double_areas.sum())

    def sample(self, count: int, *, seed: int = 0) -> np.ndarray:
        """(count, 3) points uniformly distributed (by area), as :func:`sample_points`."""
        return _sample(self.tri, self.double_areas, count, seed)

    def centroids(self) -> np.ndarray:
        """(F, 3) triangle centroids."""
        tri = self.tri
        return (tri[:, 0] + tri[:, 1] + tri[:, 2]) / 3.0

    def tree(self) -> cKDTree:
        """KD-tree of the triangle centroids (built once), for the distance search."""
        if self._tree is None:
            self._tree = _centroid_tree(self.centroids())
        return self._tree


def volume_area(tri: np.ndarray) -> tuple[float, float]:
    """Signed volume (mm^3, signed tetrahedra from the centroid) and area (mm^2) of triangles."""
    return FaceGeometry(tri).volume_area()


def sample_points(tri: np.ndarray, count: int, *, seed: int = 0) -> np.ndarray:
    """(count, 3) points uniformly distributed (by area) over triangles ``tri``."""
    return FaceGeometry(tri).sample(count, seed=seed)


def _sample(tri: np.ndarray, areas: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    face = rng.choice(len(tri), size=count, p=areas / areas.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1.0
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    t = tri[face]
    return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])


def distances_to_surface(points: np.ndarray, mesh: TriangleMesh, *, candidates: int = CANDIDATES) -> np.ndarray:
    """Distance in mm from each of (N, 3) ``points`` to the surface of ``mesh``.

    Exact for the closest of the ``candidates`` triangles whose centroids are
    nearest, which contains the true closest point on meshes whose triangles
    are small relative to their spacing (marching-cubes and decimated organ
    meshes).
    """
    return _distances(np.asarray(points, dtype=np.float64), triangles(mesh), candidates)


def _distances(
    points: np.ndarray, tri: np.ndarray, candidates: int = CANDIDATES, tree: cKDTree | None = None
) -> np.ndarray:
    k = min(candidates, len(tri))
    if tree is None:
        tree = _centroid_tree((tri[:, 0] + tri[:, 1] + tri[:, 2]) / 3.0)
    _, idx = tree.query(points, k=k)
    idx = np.asarray(idx).reshape(-1)
    rep = np.repeat(points, k, axis=0)
    d = point_triangle_distance(rep, tri[idx, 0], tri[idx, 1], tri[idx, 2])
    return d.reshape(len(points), k).min(axis=1)


def _centroid_tree(centroids: np.ndarray) -> cKDTree:
    return cKDTree(centroids, balanced_tree=False, compact_nodes=False)


def surface_distances(
    a: TriangleMesh | FaceGeometry, b: TriangleMesh | FaceGeometry, *, samples: int = SAMPLES, seed: int = 0
) -> np.ndarray:
    """Pooled distances (mm) from points on ``a`` to ``b`` and from points on ``b`` to ``a``.

    Each surface gets twice its face count in points, at least
    :data:`MIN_SAMPLES` and at most ``samples``. ``a`` and ``b`` are meshes or
    their :class:`FaceGeometry` (when the caller already has it).
    """
    ga, gb = (g if isinstance(g, FaceGeometry) else FaceGeometry.of(g) for g in (a, b))
    out = []
    for n, (src, dst) in enumerate(((ga, gb), (gb, ga))):
        count = int(min(samples, max(MIN_SAMPLES, 2 * len(src.tri))))
        out.append(_distances(src.sample(count, seed=seed + n), dst.tri, tree=dst.tree()))
    return np.concatenate(out)


def mesh_report(
    mesh: TriangleMesh,
    *,
    raw: TriangleMesh | None = None,
    voxel_volume_mm3: float | None = None,
    state: MeshCheck | None = None,
    geometry: FaceGeometry | None = None,
) -> dict[str, Any]:
    """Numbers that say whether ``mesh`` will print and how far processing moved it.

    Parameters
    ----------
    mesh : TriangleMesh
        Final mesh in mm.
    raw : TriangleMesh, optional
        Raw marching-cubes surface; gives ``hd95_mm`` and ``mean_distance_mm``
        (None when not given).
    voxel_volume_mm3 : float, optional
        Volume of the mask (voxel count x voxel volume).
    state : MeshCheck, optional
        A check already computed for ``mesh``.
    geometry : FaceGeometry, optional
        ``FaceGeometry.of(mesh)`` already computed.

    Returns
    -------
    dict
        ``voxel_volume_ml``, ``mesh_volume_ml``, ``volume_difference_percent``,
        ``surface_area_mm2``, ``watertight``, ``manifold``,
        ``winding_consistent``, ``outward``, ``shells``, ``boundary_edges``,
        ``nonmanifold_edges``, ``nonmanifold_vertices``, ``self_intersections``
        (None: not counted here; :func:`medrecon.mesh.build_organ_meshes` puts
        the count of :mod:`medrecon.mesh.printcheck` there), ``faces``,
        ``vertices``, ``bbox_mm`` ([[min x, y, z], [max x, y, z]]),
        ``size_mm``, ``hd95_mm``, ``mean_distance_mm``, ``max_distance_mm``.
        Numbers are not rounded.
    """
    state = state or check(mesh)
    geometry = geometry or FaceGeometry.of(mesh)
    volume_mm3, area_mm2 = geometry.volume_area()
    v = np.asarray(mesh.vertices, dtype=np.float64)
    lo, hi = (v.min(axis=0), v.max(axis=0)) if len(v) else (np.zeros(3), np.zeros(3))
    out: dict[str, Any] = {
        "voxel_volume_ml": None if voxel_volume_mm3 is None else float(voxel_volume_mm3) / 1000.0,
        "mesh_volume_ml": volume_mm3 / 1000.0,
        "volume_difference_percent": None,
        "surface_area_mm2": area_mm2,
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
        out.update(fidelity(geometry, raw))
    return out


def fidelity(
    mesh: TriangleMesh | FaceGeometry, raw: TriangleMesh | FaceGeometry
) -> dict[str, float | None]:
    """``hd95_mm``, ``mean_distance_mm`` and ``max_distance_mm`` between two surfaces.

    ``mesh`` and ``raw`` are meshes or their :class:`FaceGeometry`.
    """
    gm, gr = (g if isinstance(g, FaceGeometry) else FaceGeometry.of(g) for g in (mesh, raw))
    if not len(gm.tri) or not len(gr.tri):
        return {"hd95_mm": None, "mean_distance_mm": None, "max_distance_mm": None}
    d = surface_distances(gm, gr)
    return {
        "hd95_mm": float(np.percentile(d, 95)),
        "mean_distance_mm": float(d.mean()),
        "max_distance_mm": float(d.max()),
    }
