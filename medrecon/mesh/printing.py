"""Drain holes in hollow shells for the print job (scaling to a bed: :mod:`medrecon.mesh.fit`).

The print orientation is given as the ``up`` direction in the mesh frame (the
build direction, away from the bed); the default ``+z`` is the frame's third axis
(superior in LPS). Everything is in mm.

* :func:`drain_holes` drills cylindrical holes from the lowest points of each
  cavity of a hollow shell down through its wall, so that resin (SLA) or
  powder can run out; the result stays a closed, oriented 2-manifold
  (manifold3d's exact Boolean difference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medrecon.errors import MedreconError
from medrecon.mesh.bvh import first_hits, triangle_tree
from medrecon.mesh.shells import OutwardShells
from medrecon.triangles import TriangleMesh


@dataclass(frozen=True)
class DrainHole:
    """One drain hole, for the report.

    Attributes
    ----------
    start : (3,) ndarray of float64
        Lowest point of the cavity, where the hole opens into it (mm).
    exit : (3,) ndarray of float64
        Where its axis leaves the part (mm).
    diameter_mm : float
    """

    start: np.ndarray
    exit: np.ndarray
    diameter_mm: float

    def as_dict(self) -> dict:
        """Start and exit points (lists of 3 mm) and diameter, for the report."""
        return {"start": [float(x) for x in self.start], "exit": [float(x) for x in self.exit],
                "diameter_mm": self.diameter_mm}


def _unit_vector(up: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    v = np.asarray(up, dtype=np.float64)
    norm = float(np.linalg.norm(v)) if v.shape == (3,) else 0.0
    if not norm > 0 or not np.isfinite(norm):
        raise ValueError(f"up must be a non-zero 3-vector, got {up!r}")
    return v / norm


def _basis(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to ``axis`` and to each other."""
    helper = np.eye(3)[int(np.argmin(np.abs(axis)))]
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(axis, e1)


def _lowest_spread(points: np.ndarray, height: np.ndarray, n: int, spacing: float) -> np.ndarray:
    """Return up to ``n`` of the lowest points (indices), each ``spacing`` or more from those before."""
    chosen: list[int] = []
    for k in np.argsort(height, kind="stable"):
        if all(np.linalg.norm(points[k] - points[c]) >= spacing for c in chosen):
            chosen.append(int(k))
            if len(chosen) == n:
                break
    return np.asarray(chosen, dtype=np.int64)


def _manifold(vertices: np.ndarray, faces: np.ndarray):
    import manifold3d

    m = manifold3d.Manifold(manifold3d.Mesh64(
        vert_properties=np.ascontiguousarray(vertices, dtype=np.float64),
        tri_verts=np.ascontiguousarray(faces, dtype=np.uint64),
    ))
    if m.status() != manifold3d.Error.NoError:
        raise MedreconError(
            f"the mesh is not a closed oriented 2-manifold ({m.status()}): repair it first "
            "(medrecon.mesh.repair.repair), then add drain holes"
        )
    return m


def drain_holes(
    mesh: TriangleMesh,
    n: int = 1,
    diameter_mm: float = 3.0,
    *,
    up: tuple[float, float, float] | np.ndarray = (0.0, 0.0, 1.0),
    segments: int = 32,
) -> tuple[TriangleMesh, list[DrainHole]]:
    """Drill ``n`` drain holes from the lowest points of each cavity of a hollow shell.

    A hollow shell is an outer surface with inward-facing inner surfaces
    (cavities), as :func:`medrecon.mesh.hollow.hollow` makes. In each cavity
    the hole positions are its lowest vertices along ``up``, at least two
    diameters apart; each hole is a cylinder along ``up`` from just above the
    cavity's floor down through the wall, a little past the outer surface
    (measured by rays along the hole's axis and its rim).

    Parameters
    ----------
    mesh : TriangleMesh
        Closed, consistently wound mesh in mm (its winding may be inside out:
        orientation is taken from the signed volumes).
    n : int
        Holes per cavity (>= 1).
    diameter_mm : float
        Hole diameter (> 0), e.g. 3 to 5 mm for resin.
    up : (3,) array_like
        Build direction in the mesh frame; the holes go to the lowest points
        along it.
    segments : int
        Sides of each cylinder's polygon.

    Returns
    -------
    mesh : TriangleMesh
        New mesh of ``mesh``'s kind, closed and manifold; a copy of ``mesh``
        when it has no cavity (a solid part needs no drain).
    holes : list of DrainHole
        What was drilled, cavity by cavity, lowest first.

    Raises
    ------
    MedreconError
        If ``mesh`` is not a closed oriented 2-manifold.
    """
    import manifold3d

    if int(n) != n or n < 1:
        raise ValueError(f"n must be a whole number of holes >= 1, got {n}")
    if not diameter_mm > 0:
        raise ValueError(f"diameter_mm must be > 0, got {diameter_mm}")
    if segments < 3:
        raise ValueError(f"segments must be >= 3, got {segments}")
    up = _unit_vector(up)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    shells = OutwardShells.of(mesh)
    faces, shell = shells.faces, shells.shell
    if len(faces) == 0:
        raise MedreconError("the mesh has no faces: there is nothing to drill")
    cavities = np.flatnonzero(shells.cavity)
    if len(cavities) == 0:
        return TriangleMesh(vertices.copy(), np.asarray(mesh.faces).copy()), []
    radius = 0.5 * float(diameter_mm)
    tree = triangle_tree(vertices[faces])
    size = float(np.ptp(vertices, axis=0).max())
    e1, e2 = _basis(up)
    rim = np.array([np.cos(a) * e1 + np.sin(a) * e2 for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)])
    holes: list[DrainHole] = []
    cutters = []
    for cavity in cavities:
        ids = np.unique(faces[shell == cavity])
        points = vertices[ids]
        for p in points[_lowest_spread(points, points @ up, int(n), 2.0 * float(diameter_mm))]:
            # wall below: rays down from the hole's axis and rim, at the cavity floor's height
            starts = np.vstack([p, p + radius * rim])
            down, _ = first_hits(tree, starts, np.broadcast_to(-up, starts.shape), t_min=1e-9 * size)
            wall = down[0]
            if not np.isfinite(wall):
                raise MedreconError("a ray down from a cavity escaped without meeting the outer wall: "
                                    "the mesh is not closed; repair it first")
            # the rim may meet other parts of the model far below: keep the rim rays near the wall
            near = down[np.isfinite(down) & (down <= wall + 2.0 * float(diameter_mm))]
            depth = float(near.max()) + 0.25 * float(diameter_mm)
            # above: into the cavity, but not through its ceiling
            ceiling, _ = first_hits(tree, p[None], up[None], t_min=1e-9 * size)
            top = min(radius, 0.5 * float(ceiling[0])) if np.isfinite(ceiling[0]) else radius
            bottom = p - depth * up
            cylinder = manifold3d.Manifold.cylinder(depth + top, radius, circular_segments=segments)
            placed = np.column_stack([e1, e2, up, bottom])  # local z along up, base at the bottom
            cutters.append(cylinder.transform(placed))
            holes.append(DrainHole(start=p.copy(), exit=p - wall * up, diameter_mm=float(diameter_mm)))
    drilled = _manifold(vertices, faces) - manifold3d.Manifold.batch_boolean(cutters, manifold3d.OpType.Add)
    out = drilled.to_mesh64()
    return TriangleMesh(np.asarray(out.vert_properties)[:, :3], np.asarray(out.tri_verts, dtype=np.int64)), holes
