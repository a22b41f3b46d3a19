"""Print checks that slicers do not make: self-intersections, wall thickness, small features.

* **Self-intersections**: intersecting face pairs (:mod:`medrecon.mesh.selfintersect`).
* **Wall thickness**: from the centroid of every face a ray goes into the
  material, against the face's normal, to the first triangle it meets; the
  distance is the local wall thickness (the ray method of the shape diameter
  function, with one ray). Which way is "into the material" is not assumed from
  the winding: each shell's normals are taken outward from the material by its
  signed volume and its nesting (a cavity's normals point into the cavity), so a
  mesh made through a reflected affine, or wound inside out, reads the same.
  A ray whose first hit is a face sharing a corner with its own has crossed the
  crease of its own face's edge (a fold sharper than a right angle, which
  decimation leaves at the rim where an organ is cut by the field of view, and
  at its creases): it measures how far the centroid lies from that edge, not a
  wall, and is left out. Statistics are weighted by face area.
* **Small features**: pieces smaller than the printer's resolution in every
  direction (they do not print at all), cavities that small (they print closed),
  and the area of walls thinner than the resolution.

:data:`PROCESSES` holds the limits of the common processes (FDM, SLA);
:func:`print_checks` runs everything for one mesh. Positions are in mm.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from medrecon.mesh.bvh import TriangleTree, first_hits, group_boxes, triangle_boxes, triangle_tree
from medrecon.mesh.selfintersect import count_self_intersections
from medrecon.mesh.shells import OutwardShells
from medrecon.triangles import TriangleMesh


@dataclass(frozen=True)
class PrintProcess:
    """Limits of a printing process.

    Attributes
    ----------
    name : str
        ``"fdm"``, ``"sla"``, ...
    min_wall_mm : float
        Thinnest wall that prints reliably (mm).
    resolution_mm : float
        Smallest feature the process renders (mm): the nozzle width for FDM,
        the laser spot or pixel for SLA.
    """

    name: str
    min_wall_mm: float
    resolution_mm: float

    def __post_init__(self) -> None:
        if not (self.min_wall_mm > 0 and self.resolution_mm > 0):
            raise ValueError(
                f"min_wall_mm and resolution_mm must be > 0 mm, got {self.min_wall_mm}, {self.resolution_mm}"
            )


#: Common processes: FDM with a 0.4 mm nozzle, and resin (SLA/MSLA) printers.
PROCESSES: dict[str, PrintProcess] = {
    "fdm": PrintProcess("fdm", min_wall_mm=1.0, resolution_mm=0.4),
    "sla": PrintProcess("sla", min_wall_mm=0.4, resolution_mm=0.1),
}


def outward_faces(mesh: TriangleMesh) -> np.ndarray:
    """Faces of ``mesh`` wound so that every normal points out of the material.

    Each shell is turned by the sign of its signed volume against the sign its
    nesting calls for (+1 for a solid, -1 for a cavity), so the result does not
    depend on how the mesh was wound, e.g. by a reflected affine.

    Returns
    -------
    (F, 3) ndarray of int64
        A new array (``mesh`` is not modified).
    """
    return OutwardShells.of(mesh).faces


def face_thickness(
    mesh: TriangleMesh, *, faces: np.ndarray | None = None, which: np.ndarray | None = None,
    tree: TriangleTree | None = None,
) -> np.ndarray:
    """Local wall thickness at each face, in mm (see the module docstring).

    Parameters
    ----------
    mesh : TriangleMesh
        Closed mesh, ``vertices`` (V, 3) in mm.
    faces : (F, 3) ndarray of int, optional
        ``mesh``'s faces wound outward (:func:`outward_faces`), if already known.
    which : (K,) ndarray of int, optional
        Measure these faces only (default: all).
    tree : TriangleTree, optional
        :func:`~medrecon.mesh.bvh.triangle_tree` of ``mesh``'s triangles in
        face order, if already built.

    Returns
    -------
    (K,) ndarray of float64
        Distance from each face's centroid, against its outward normal, to the
        first other face met; ``inf`` where the ray meets none (an open mesh),
        ``nan`` for a degenerate (zero-area) face and where the face met shares
        a corner with the face itself (the crease of its own edge, not a wall).
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = outward_faces(mesh) if faces is None else np.asarray(faces, dtype=np.int64)
    which = np.arange(len(faces)) if which is None else np.asarray(which, dtype=np.int64)
    out = np.full(len(which), np.nan)
    if len(faces) == 0 or len(which) == 0:
        return out
    start = vertices[faces[which]]
    normal = np.cross(start[:, 1] - start[:, 0], start[:, 2] - start[:, 0])
    length = np.linalg.norm(normal, axis=1)
    ok = length > 0
    inward = -normal[ok] / length[ok, None]
    size = float(np.ptp(vertices, axis=0).max()) or 1.0
    tree = triangle_tree(vertices[faces]) if tree is None else tree
    t, hit = first_hits(tree, start[ok].mean(axis=1), inward, t_min=1e-9 * size, skip=which[ok])
    own, met = faces[which[ok]], faces[np.maximum(hit, 0)]
    crease = (hit >= 0) & np.any(own[:, :, None] == met[:, None, :], axis=(1, 2))
    out[ok] = np.where(crease, np.nan, t)
    return out


def _areas(mesh: TriangleMesh) -> np.ndarray:
    tri = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces, dtype=np.int64)]
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def _area_sample(area: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` faces by systematic sampling proportional to area (seeded), and the area each stands for.

    The surface is cut, in face order, into ``k`` strata of equal area and one
    face is drawn in each with a probability proportional to its area; a face
    drawn more than once stands for as many strata. Marching-cubes and
    decimated meshes list neighbouring faces together, so the sample is spread
    over the surface as well as over the faces' sizes.
    """
    cum = np.cumsum(area)
    total = float(cum[-1]) if len(cum) else 0.0
    if not total > 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    step = total / k
    points = (np.random.default_rng(0).random() + np.arange(k)) * step
    picks = np.minimum(np.searchsorted(cum, points, side="right"), len(area) - 1)
    which, counts = np.unique(picks, return_counts=True)
    return which, counts * step


def _sampled_thickness(
    mesh: TriangleMesh, faces: np.ndarray | None, max_faces: int | None, tree: TriangleTree | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Thickness at every face, or at most ``max_faces`` faces sampled by area, and the areas they stand for.

    The areas of a sample (:func:`_area_sample`) add up to the whole surface.
    """
    if max_faces is not None and max_faces < 1:
        raise ValueError(f"max_faces must be >= 1 or None, got {max_faces}")
    area = _areas(mesh)
    n = len(area)
    if max_faces is not None and n > max_faces:
        which, weight = _area_sample(area, max_faces)
    else:
        which, weight = np.arange(n), area
    return face_thickness(mesh, faces=faces, which=which, tree=tree), weight


@dataclass(frozen=True)
class WallThickness:
    """Wall thickness of a mesh, weighted by area.

    Attributes
    ----------
    min, p5 : float
        Thinnest wall and 5th percentile (by area), mm; ``inf`` for an open
        mesh whose rays all escape, ``nan`` for a mesh without area.
    area_below_min_mm2 : float
        Surface area where the wall is thinner than ``min_wall_mm``.
    min_wall_mm : float
        The limit it was judged against.
    """

    min: float
    p5: float
    area_below_min_mm2: float
    min_wall_mm: float

    @property
    def passes(self) -> bool:
        """Walls thinner than the limit cover no more than a tenth of a square of the limit's side.

        A sliver of marching-cubes staircase may read thinner than it is; a wall
        that is really too thin covers far more area than that.
        """
        return self.area_below_min_mm2 <= 0.1 * self.min_wall_mm**2

    def as_dict(self) -> dict[str, float | None]:
        """``{"min", "p5", "area_below_min_mm2"}`` for the report (mm, mm^2; None where not finite)."""
        return {"min": _finite(self.min), "p5": _finite(self.p5), "area_below_min_mm2": self.area_below_min_mm2}


def _finite(x: float) -> float | None:
    """``x``, or None for inf and nan (which strict JSON cannot hold)."""
    return float(x) if np.isfinite(x) else None


def _area_percentile(values: np.ndarray, area: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cum = np.cumsum(area[order])
    return float(values[order][min(int(np.searchsorted(cum, q / 100.0 * cum[-1])), len(cum) - 1)])


def _wall(thickness: np.ndarray, area: np.ndarray, min_wall_mm: float) -> WallThickness:
    ok = ~np.isnan(thickness) & (area > 0)
    if not np.any(ok):
        return WallThickness(float("nan"), float("nan"), 0.0, float(min_wall_mm))
    t, a = thickness[ok], area[ok]
    return WallThickness(
        min=float(t.min()),
        p5=_area_percentile(t, a, 5.0),
        area_below_min_mm2=float(a[t < min_wall_mm].sum()),
        min_wall_mm=float(min_wall_mm),
    )


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0 mm, got {value}")
    return float(value)


def wall_thickness(mesh: TriangleMesh, *, min_wall_mm: float, max_faces: int | None = None) -> WallThickness:
    """Measure the wall thickness of ``mesh`` and judge it against a minimum wall.

    Parameters
    ----------
    mesh : TriangleMesh
        Closed mesh in mm.
    min_wall_mm : float
        Thinnest printable wall (see :data:`PROCESSES`).
    max_faces : int, optional
        Measure at most this many faces, sampled in proportion to their area
        (seeded, so the result is reproducible); each stands for its share of
        the surface. Default: all.
    """
    _positive("min_wall_mm", min_wall_mm)
    thickness, area = _sampled_thickness(mesh, None, max_faces)
    return _wall(thickness, area, min_wall_mm)


@dataclass(frozen=True)
class SmallFeatures:
    """Parts of a mesh below the printer's resolution.

    Attributes
    ----------
    pieces_below_resolution : int
        Solid shells whose bounding box is smaller than the resolution along
        every axis of the mesh frame: they do not print.
    cavities_below_resolution : int
        Cavities that small: they print filled.
    thin_area_mm2 : float
        Surface area where the wall is thinner than the resolution.
    resolution_mm : float
        The resolution judged against.
    """

    pieces_below_resolution: int
    cavities_below_resolution: int
    thin_area_mm2: float
    resolution_mm: float

    @property
    def passes(self) -> bool:
        """No piece too small to print (thin walls are judged by :class:`WallThickness`)."""
        return self.pieces_below_resolution == 0

    def as_dict(self) -> dict[str, float | int]:
        """Return the attributes as a flat dict for the report."""
        return {
            "pieces_below_resolution": self.pieces_below_resolution,
            "cavities_below_resolution": self.cavities_below_resolution,
            "thin_area_mm2": self.thin_area_mm2,
            "resolution_mm": self.resolution_mm,
        }


def _small_shells(mesh: TriangleMesh, resolution_mm: float, shells: OutwardShells) -> tuple[int, int]:
    if len(shells.faces) == 0:
        return 0, 0
    tri = np.asarray(mesh.vertices, dtype=np.float64)[shells.faces]
    lo, hi = group_boxes(*triangle_boxes(tri), shells.shell, len(shells.cavity))
    small = np.all(hi - lo < resolution_mm, axis=1)
    return int(np.count_nonzero(small & ~shells.cavity)), int(np.count_nonzero(small & shells.cavity))


def small_features(mesh: TriangleMesh, *, resolution_mm: float, max_faces: int | None = None) -> SmallFeatures:
    """Find the pieces, cavities and walls of ``mesh`` below ``resolution_mm``.

    Parameters
    ----------
    mesh : TriangleMesh
        Closed mesh in mm.
    resolution_mm : float
        Smallest feature the printer renders (see :data:`PROCESSES`).
    max_faces : int, optional
        As for :func:`wall_thickness`.
    """
    _positive("resolution_mm", resolution_mm)
    shells = OutwardShells.of(mesh)
    thickness, area = _sampled_thickness(mesh, shells.faces, max_faces)
    return _features(mesh, thickness, area, resolution_mm, shells)


def _features(
    mesh: TriangleMesh, thickness: np.ndarray, area: np.ndarray, resolution_mm: float, shells: OutwardShells
) -> SmallFeatures:
    pieces, cavities = _small_shells(mesh, resolution_mm, shells)
    thin = float(area[~np.isnan(thickness) & (thickness < resolution_mm)].sum())
    return SmallFeatures(pieces, cavities, thin, float(resolution_mm))


@dataclass(frozen=True)
class PrintChecks:
    """All print checks of one mesh.

    Attributes
    ----------
    process : PrintProcess
        The limits judged against.
    self_intersections : int
        Intersecting face pairs.
    wall_thickness : WallThickness
    small_features : SmallFeatures
    thickness_faces : int
        Faces whose wall thickness was measured (a sample of a large mesh).
    """

    process: PrintProcess
    self_intersections: int
    wall_thickness: WallThickness
    small_features: SmallFeatures
    thickness_faces: int

    @property
    def passes(self) -> bool:
        """No self-intersection, no wall too thin, no piece too small."""
        return self.self_intersections == 0 and self.wall_thickness.passes and self.small_features.passes

    def as_dict(self) -> dict:
        """Report fields: ``self_intersections``, ``wall_thickness_mm``, ``small_features``, limits, sample size."""
        return {
            "process": self.process.name,
            "min_wall_mm": self.process.min_wall_mm,
            "thickness_faces_measured": self.thickness_faces,
            "self_intersections": self.self_intersections,
            "wall_thickness_mm": self.wall_thickness.as_dict(),
            "small_features": self.small_features.as_dict(),
        }


#: Faces measured for wall thickness by :func:`print_checks` (a seeded sample by area beyond):
#: a ray costs tens of microseconds; 4,000 faces in strata of equal area pin the 5th
#: percentile and find a thin wall covering more than 1/4000 of the surface (about 15 mm^2
#: of a liver), at about the cost of the self-intersection count.
MAX_THICKNESS_FACES = 4_000


def print_checks(
    mesh: TriangleMesh, *, process: str | PrintProcess = "fdm", max_faces: int | None = MAX_THICKNESS_FACES
) -> PrintChecks:
    """Run every print check on ``mesh`` against ``process``.

    Parameters
    ----------
    mesh : TriangleMesh
        Closed mesh in mm, in its print orientation (the resolution is judged
        along the mesh frame's axes).
    process : str or PrintProcess
        A key of :data:`PROCESSES` or custom limits (e.g. another minimum wall:
        ``dataclasses.replace(PROCESSES["fdm"], min_wall_mm=1.5)``).
    max_faces : int or None
        Faces measured for wall thickness (a seeded sample by area beyond);
        None measures all.

    Returns
    -------
    PrintChecks
    """
    if isinstance(process, str):
        if process not in PROCESSES:
            raise ValueError(f"process must be one of {sorted(PROCESSES)} or a PrintProcess, got {process!r}")
        process = PROCESSES[process]
    # one tree over the faces' boxes serves both (a face's box does not depend on its winding)
    tree = triangle_tree(np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces)], leaf_size=3) if len(
        mesh.faces) else None
    with ThreadPoolExecutor(max_workers=1) as pool:
        # the self-intersection count and the thickness rays are independent: a second
        # thread counts meanwhile (the BVH work is numpy, which releases the GIL)
        crossings = pool.submit(count_self_intersections, mesh, tree=None if tree is None else tree.tree)
        shells = OutwardShells.of(mesh)
        thickness, area = _sampled_thickness(mesh, shells.faces, max_faces, tree)
        count = crossings.result()
    return PrintChecks(
        process=process,
        self_intersections=count,
        wall_thickness=_wall(thickness, area, process.min_wall_mm),
        small_features=_features(mesh, thickness, area, process.resolution_mm, shells),
        thickness_faces=len(thickness),
    )
