"""Label map -> one printable, reported mesh per organ.

For each label: raw marching-cubes surface (:mod:`medrecon.surface`), optional
component filtering, windowed-sinc smoothing, quadric decimation; then, once
every organ is that far, one uniform scale for the whole scene
(:mod:`medrecon.mesh.fit`; 1 unless asked for), optional hollowing and drain
holes, a repair and a check of the final mesh, the print checks of
:mod:`medrecon.mesh.printcheck` (self-intersections, wall thickness, small
features) and the report of :mod:`medrecon.mesh.report`. Every step after the
raw surfaces runs in the organ's worker thread.
Every mesh is in LPS millimetres (of the print, when scaled: wall thickness and
every number of the report are then of the scaled model). The steps pass
:class:`~medrecon.triangles.TriangleMesh` along; trimesh is imported only
when a step needs it (component filtering, a repair) or when a caller asks for
:meth:`OrganMesh.trimesh`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from medrecon.errors import InputError
from medrecon.mesh.decimate import decimate
from medrecon.mesh.fit import fit_scale, scale_matrix, scene_bounds
from medrecon.mesh.hollow import hollow
from medrecon.mesh.printcheck import MAX_THICKNESS_FACES, PROCESSES, PrintProcess, print_checks
from medrecon.mesh.printing import drain_holes
from medrecon.mesh.repair import MeshCheck, check, repair
from medrecon.mesh.report import FaceGeometry, fidelity, mesh_report, triangles
from medrecon.mesh.smooth import SLICER_DEFAULT_SMOOTHING, smooth
from medrecon.progress import ProgressFn, report, scaled
from medrecon.surface.extract import ENGINES
from medrecon.surface.labels import label_boxes, surfaces_in_boxes
from medrecon.triangles import TriangleMesh
from medrecon.volume import LabelMap

if TYPE_CHECKING:
    import trimesh


@dataclass(frozen=True)
class MeshOptions:
    """How label masks become printable meshes.

    Attributes
    ----------
    smooth : float
        Windowed-sinc smoothing factor on 3D Slicer's scale [0, 1]; 0.5 is
        Slicer's default (pass band 10**(-4 s), 20 iterations), 0 is off.
    decimate : float
        Fraction of triangles to remove with quadric decimation, in [0, 1);
        0 (Slicer's default) keeps them all.
    target_faces : int or None
        Aim for this many triangles per organ instead of ``decimate``.
    keep_largest : bool
        Keep only the largest connected piece of each organ.
    min_component_mm3 : float
        Drop pieces smaller than this volume (mm^3); the largest piece is
        always kept, so no organ disappears.
    hollow_mm : float
        Wall thickness of a hollow shell in mm; 0 keeps the parts solid.
    iso_spacing : float or None
        Resample each mask to cubic voxels of this size (mm) before marching
        cubes; helps with thick slices.
    workers : int
        Organs processed in parallel threads (0: one per CPU core).
    engine : str
        Marching-cubes engine, ``"auto"``, ``"skimage"`` or ``"vtk"`` (same surface).
    scale : float
        Uniform scale of the whole scene about its centre (1: life size).
    fit_bed : (float, float, float) or None
        Printable volume X, Y, Z in mm: shrink the scene uniformly until it
        fits (never enlarged); instead of ``scale``.
    process : str
        Printing process the checks judge against, a key of
        :data:`medrecon.mesh.printcheck.PROCESSES` (``"fdm"``, ``"sla"``).
    min_wall_mm : float or None
        Thinnest wall a print-ready mesh may have (mm); None: the process's
        (1.0 mm FDM, 0.4 mm SLA).
    drain_holes : int
        Drain holes per cavity of a hollow shell (needs ``hollow_mm``), at the
        lowest points of the print orientation (+z up).
    drain_diameter_mm : float
        Diameter of the drain holes (mm).
    """

    smooth: float = SLICER_DEFAULT_SMOOTHING
    decimate: float = 0.0
    target_faces: int | None = None
    keep_largest: bool = False
    min_component_mm3: float = 0.0
    hollow_mm: float = 0.0
    iso_spacing: float | None = None
    workers: int = 1
    engine: str = "auto"
    scale: float = 1.0
    fit_bed: tuple[float, float, float] | None = None
    process: str = "fdm"
    min_wall_mm: float | None = None
    drain_holes: int = 0
    drain_diameter_mm: float = 3.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.smooth <= 1.0:
            raise InputError(f"smooth must be in [0, 1] (3D Slicer's scale), got {self.smooth}")
        if not 0.0 <= self.decimate < 1.0:
            raise ValueError(f"decimate must be a fraction in [0, 1), got {self.decimate}")
        if self.target_faces is not None and self.target_faces < 4:
            raise ValueError(f"target_faces must be at least 4, got {self.target_faces}")
        if self.min_component_mm3 < 0 or self.hollow_mm < 0:
            raise ValueError("min_component_mm3 and hollow_mm must be >= 0")
        if self.iso_spacing is not None and not self.iso_spacing > 0:
            raise ValueError(f"iso_spacing must be a positive size in mm, got {self.iso_spacing}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a positive factor (1: life size), got {self.scale}")
        if self.fit_bed is not None:
            bed = tuple(float(b) for b in self.fit_bed)
            if len(bed) != 3 or not all(np.isfinite(b) and b > 0 for b in bed):
                raise ValueError(f"fit_bed must be three sizes X, Y, Z in mm, all > 0, got {self.fit_bed}")
            if self.scale != 1.0:
                raise ValueError("give either a scale or a bed to fit, not both")
            object.__setattr__(self, "fit_bed", bed)
        if self.process not in PROCESSES:
            raise ValueError(f"process must be one of {sorted(PROCESSES)}, got {self.process!r}")
        if self.min_wall_mm is not None and not (np.isfinite(self.min_wall_mm) and self.min_wall_mm > 0):
            raise ValueError(f"min_wall_mm must be a positive size in mm, got {self.min_wall_mm}")
        if int(self.drain_holes) != self.drain_holes or self.drain_holes < 0:
            raise ValueError(f"drain_holes must be a whole number >= 0, got {self.drain_holes}")
        if not (np.isfinite(self.drain_diameter_mm) and self.drain_diameter_mm > 0):
            raise ValueError(f"drain_diameter_mm must be a positive size in mm, got {self.drain_diameter_mm}")
        if self.drain_holes and not self.hollow_mm > 0:
            raise ValueError("drain holes go with a hollow shell: give a hollow wall thickness too")

    @property
    def print_process(self) -> PrintProcess:
        """The limits the print checks judge against: ``process`` with ``min_wall_mm`` if given."""
        base = PROCESSES[self.process]
        return base if self.min_wall_mm is None else replace(base, min_wall_mm=float(self.min_wall_mm))

    def to_dict(self) -> dict[str, Any]:
        """Every option by name, JSON-ready (what reports record)."""
        out = asdict(self)
        if self.fit_bed is not None:
            out["fit_bed"] = list(self.fit_bed)
        return out


@dataclass(frozen=True, eq=False)
class OrganMesh:
    """One organ's final mesh, its raw surface and its report.

    Attributes
    ----------
    label : int
        Label id in the label map.
    name : str
        Structure name from the label table (``label_<id>`` if unnamed).
    mesh : TriangleMesh
        Final mesh, LPS mm, outward winding.
    raw : TriangleMesh
        Raw marching-cubes surface of the mask, LPS mm.
    report : dict
        Print-readiness numbers (see :func:`medrecon.mesh.report.mesh_report`)
        with ``name`` and ``label``; a copy of the mapping given, not to be modified.
    """

    label: int
    name: str
    mesh: TriangleMesh
    raw: TriangleMesh
    report: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("mesh", "raw"):
            value = getattr(self, key)
            if not isinstance(value, TriangleMesh):
                raise TypeError(f"OrganMesh.{key} must be a medrecon.triangles.TriangleMesh, got "
                                f"{type(value).__name__}; convert a trimesh with TriangleMesh.from_trimesh")
        object.__setattr__(self, "label", int(self.label))
        object.__setattr__(self, "report", dict(self.report))

    def trimesh(self) -> trimesh.Trimesh:
        """Return the final mesh as a new :class:`trimesh.Trimesh` (LPS mm), for trimesh's tools."""
        return self.mesh.to_trimesh()

    def __repr__(self) -> str:
        return (f"OrganMesh(label={self.label}, name={self.name!r}, faces={len(self.mesh.faces)}, "
                f"raw_faces={len(self.raw.faces)})")


def filter_components(
    mesh: TriangleMesh, *, keep_largest: bool = False, min_volume_mm3: float = 0.0
) -> TriangleMesh:
    """Drop small connected pieces of a closed mesh; the largest always stays.

    Returns ``mesh`` itself when nothing is dropped, else a new mesh.
    """
    if not keep_largest and min_volume_mm3 <= 0:
        return mesh
    import trimesh

    parts = mesh.to_trimesh().split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    volumes = np.array([abs(p.volume) for p in parts])
    largest = int(np.argmax(volumes))
    if keep_largest:
        kept = parts[largest]
    else:
        kept = trimesh.util.concatenate(
            [p for n, p in enumerate(parts) if n == largest or volumes[n] >= min_volume_mm3]
        )
    return TriangleMesh.from_trimesh(kept)


def _printable(raw: TriangleMesh, options: MeshOptions) -> tuple[TriangleMesh, MeshCheck, float]:
    """Filter, smooth, decimate and check ``raw`` (repaired if need be): mesh, check, reduction applied."""
    mesh = filter_components(
        raw, keep_largest=options.keep_largest, min_volume_mm3=options.min_component_mm3
    )
    mesh = smooth(mesh, options.smooth)
    applied = 0.0
    if options.decimate > 0 or options.target_faces is not None:
        if options.target_faces is not None:
            mesh, state, applied = decimate(mesh, target_faces=options.target_faces)
        else:
            mesh, state, applied = decimate(mesh, reduction=options.decimate)
    else:
        state = check(mesh)
    if not state.printable:  # marching cubes and smoothing keep topology; never assume it
        mesh, state = repair(mesh)
    return mesh, state, applied


def _raw_geometry(tri: np.ndarray) -> tuple[FaceGeometry, tuple[float, float]]:
    geometry = FaceGeometry(tri)
    geometry.tree()
    return geometry, geometry.volume_area()


@dataclass(frozen=True, eq=False)
class _Outer:
    """One organ's outer surface, life size, before scaling and hollowing."""

    mesh: TriangleMesh
    state: MeshCheck
    applied: float
    geometry: FaceGeometry
    distances: dict[str, float | None]
    raw_volume: float
    raw_area: float


def _outer(raw: TriangleMesh, options: MeshOptions) -> _Outer:
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The raw surface's part of the report (geometry, centroid tree) does not
        # depend on the processing: a second thread computes it meanwhile (numpy
        # and the KD-tree build release the GIL).
        raw_job = pool.submit(_raw_geometry, triangles(raw))
        mesh, state, applied = _printable(raw, options)
        raw_geometry, (raw_volume, raw_area) = raw_job.result()
    # fidelity is measured on the outer surface: a cavity is meant to be far from it
    geometry = FaceGeometry.of(mesh)
    return _Outer(mesh, state, applied, geometry, fidelity(geometry, raw_geometry), raw_volume, raw_area)


def _finish(
    label: int, name: str, raw: TriangleMesh, outer: _Outer, labels: LabelMap,
    box: tuple[slice, slice, slice], options: MeshOptions, s: float, about: np.ndarray,
) -> OrganMesh:
    """Scale (``s`` about ``about``), hollow, drill, check and report one organ."""
    mesh, state, geometry = outer.mesh, outer.state, outer.geometry
    # a uniform scale s > 0 keeps topology and winding (state stays true) and
    # multiplies lengths by s, areas by s^2 and volumes by s^3
    place = scale_matrix(s, about)
    if s != 1.0:
        mesh, raw = mesh.transformed(place), raw.transformed(place)
        geometry = FaceGeometry.of(mesh)
    distances = {k: None if v is None else v * s for k, v in outer.distances.items()}
    if options.hollow_mm > 0:
        shift = np.eye(4)
        shift[:3, 3] = [b.start for b in box]
        density = None
        if options.decimate > 0 or options.target_faces is not None:
            # the cavity gets the decimated outer surface's triangles per mm^2
            density = len(mesh.faces) / max(geometry.volume_area()[1], 1e-12)
        mesh, _ = hollow(mesh, np.asarray(labels.array)[box] == label, place @ labels.affine @ shift,
                         options.hollow_mm, smoothing=options.smooth, faces_per_mm2=density)
        state = check(mesh)
        if not state.printable:
            mesh, state = repair(mesh)
        geometry = FaceGeometry.of(mesh)
    holes = None
    if options.drain_holes:
        # the print orientation of medrecon.mesh.fit.print_orientation: +z up
        mesh, drilled = drain_holes(mesh, options.drain_holes, options.drain_diameter_mm, up=(0.0, 0.0, 1.0))
        holes = [h.as_dict() for h in drilled]
        state = check(mesh)
        geometry = FaceGeometry.of(mesh)
    checks = print_checks(mesh, process=options.print_process, max_faces=MAX_THICKNESS_FACES)
    voxels = int(np.count_nonzero(np.asarray(labels.array)[box] == label))
    rep = {"name": name, "label": int(label)}
    rep.update(mesh_report(mesh, voxel_volume_mm3=voxels * labels.voxel_volume_mm3 * s**3, state=state,
                           geometry=geometry))
    for key in ("hd95_mm", "mean_distance_mm", "max_distance_mm"):
        rep[key] = distances[key]
    rep.update(
        voxels=voxels,
        decimation_applied=outer.applied,
        smoothing=options.smooth,
        hollow_mm=options.hollow_mm,
        raw_mesh_volume_ml=outer.raw_volume * s**3 / 1000.0,
        raw_surface_area_mm2=outer.raw_area * s**2,
        scale=s,
        scale_centre_mm=[float(v) for v in about],  # the point the scale keeps in place (LPS)
        fit_bed_mm=None if options.fit_bed is None else [float(v) for v in options.fit_bed],
    )
    rep.update(checks.as_dict())
    if holes is not None:
        rep["drain_holes"] = holes
    rep["print_ready"] = bool(state.watertight and state.manifold and checks.passes)
    return OrganMesh(label=int(label), name=name, mesh=mesh, raw=raw, report=rep)


def scene_scale(meshes: Iterable[TriangleMesh], options: MeshOptions) -> tuple[float, np.ndarray]:
    """Return the scale ``options`` ask for the scene of ``meshes`` (mm), and its centre.

    Returns
    -------
    s : float
        ``options.scale``, or the fit of the scene into ``options.fit_bed``
        (:func:`medrecon.mesh.fit.fit_scale`).
    about : (3,) ndarray
        Centre of the scene's bounding box: the point the scale keeps in place.
    """
    lo, hi = scene_bounds(meshes)
    s = options.scale if options.fit_bed is None else fit_scale(hi - lo, options.fit_bed)
    return float(s), (lo + hi) / 2.0


def build_organ_meshes(
    labels: LabelMap,
    options: MeshOptions = MeshOptions(),
    *,
    organs: Iterable[int | str] | None = None,
    detail_mm: Mapping[int, float] | None = None,
    progress: ProgressFn | None = None,
) -> list[OrganMesh]:
    """Turn each organ of a label map into a printable mesh with its report.

    Parameters
    ----------
    labels : LabelMap
        Integer labels on a grid placed in LPS mm by its affine.
    options : MeshOptions
        Smoothing, decimation, component filtering, hollowing, parallelism.
    organs : iterable of int or str, optional
        Label ids or names (default: every label present).
    detail_mm : mapping of int to float, optional
        Label id -> size (mm) of the voxel blocks its surface is extracted
        from (an HU preset's ``detail_mm``; see
        :func:`medrecon.surface.extract.mask_surface`); not with ``options.iso_spacing``.
    progress : ProgressFn, optional
        Called with ``("surfaces", f)`` then ``("meshes", f)``.

    Returns
    -------
    list of OrganMesh
        In ascending label order.

    Raises
    ------
    EmptySegmentationError
        If the label map is empty or a requested organ has no voxels.
    """
    boxes = label_boxes(labels, organs)
    ids = list(boxes)
    raws = surfaces_in_boxes(
        labels, boxes, iso_spacing=options.iso_spacing, detail_mm=detail_mm, workers=options.workers,
        engine=options.engine, progress=scaled(progress, 0.0, 0.3),
    )
    workers = (os.cpu_count() or 1) if options.workers == 0 else options.workers
    # the scale is one for the whole scene, so every outer surface comes first
    split = 0.6 if options.hollow_mm > 0 else 0.85
    outers = dict(zip(ids, _each(lambda label: _outer(raws[label], options), ids, workers, progress,
                                 0.3, split), strict=True))
    s, about = scene_scale((o.mesh for o in outers.values()), options)
    return _each(
        lambda label: _finish(label, labels.name_of(label), raws[label], outers[label], labels,
                              boxes[label], options, s, about),
        ids, workers, progress, split, 1.0,
    )


def _each(fn: Any, ids: list[int], workers: int, progress: ProgressFn | None, lo: float,
          hi: float) -> list[Any]:
    """``[fn(label) for label in ids]`` in ``workers`` threads, reporting "meshes" from lo to hi."""
    out: list[Any] = []
    report(progress, "meshes", lo)
    if workers == 1 or len(ids) == 1:
        for n, label in enumerate(ids):
            out.append(fn(label))
            report(progress, "meshes", lo + (hi - lo) * (n + 1) / len(ids))
        return out
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(fn, label) for label in ids]
        for n, fut in enumerate(futures):
            out.append(fut.result())
            report(progress, "meshes", lo + (hi - lo) * (n + 1) / len(ids))
    return out


def merge_scene(organ_meshes: Iterable[OrganMesh]) -> TriangleMesh:
    """All organs in one mesh (one shell set per organ), e.g. for a single print job."""
    meshes = [o.mesh for o in organ_meshes]
    if not meshes:
        raise ValueError("no organ meshes to merge")
    return TriangleMesh.concatenate(meshes)


__all__ = ["MeshOptions", "OrganMesh", "build_organ_meshes", "filter_components", "merge_scene",
           "scene_scale"]
