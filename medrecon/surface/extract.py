"""Marching-cubes surfaces of label maps and intensity volumes, in LPS millimetres.

Each label is extracted on its own bounding-box crop, padded by one voxel of
background, so a closed organ always gives a closed surface and the cost follows
the organ, not the field of view. Vertices are computed in (i, j, k) voxel
indices and placed in the world by applying the volume's affine through
:meth:`trimesh.Trimesh.apply_transform`, which also reverses the triangle winding
when the affine is a reflection (as LPS/RAS affines often are). Every mesh
returned has outward-facing triangles: a positive signed volume.

Two engines compute the same surface: scikit-image's Lewiner marching cubes (the
reference, always available) and VTK's flying edges (optional, faster, used by
``engine="auto"`` when :mod:`vtk` is importable). On a binary mask both put the
vertices on the midpoints of the voxel edges crossing the boundary.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import trimesh

from medrecon.errors import EmptySegmentationError, InputError
from medrecon.progress import ProgressFn, report
from medrecon.volume import LabelMap, Volume

ENGINES = ("auto", "skimage", "vtk")


def _have_vtk() -> bool:
    try:
        import vtkmodules.vtkFiltersCore  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_engine(engine: str) -> str:
    """Return the concrete engine (``"skimage"`` or ``"vtk"``) for ``engine``.

    Raises
    ------
    ValueError
        If ``engine`` is not one of :data:`ENGINES`.
    medrecon.errors.MissingDependencyError
        If ``"vtk"`` is asked for and VTK is not installed.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        return "vtk" if _have_vtk() else "skimage"
    if engine == "vtk" and not _have_vtk():
        from medrecon.errors import MissingDependencyError

        raise MissingDependencyError("vtk", "bench", "the VTK surface engine")
    return engine


def bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Tight (i, j, k) slices around the non-zero voxels of ``mask``, or None if empty."""
    slices = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            return None
        slices.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(slices)  # type: ignore[return-value]


def _padded_crop(array: np.ndarray, box: tuple[slice, slice, slice], fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``array`` to ``box`` grown by one voxel; outside the array is ``fill``.

    Returns the crop and the (3,) index of its first voxel in ``array`` (may be -1).
    """
    lo = np.array([s.start - 1 for s in box])
    hi = np.array([s.stop + 1 for s in box])
    src_lo = np.maximum(lo, 0)
    src_hi = np.minimum(hi, array.shape)
    crop = np.full(tuple(hi - lo), fill, dtype=array.dtype)
    dst = tuple(slice(a - b, c - b) for a, b, c in zip(src_lo, lo, src_hi, strict=True))
    crop[dst] = array[tuple(slice(a, c) for a, c in zip(src_lo, src_hi, strict=True))]
    return crop, lo


def _skimage_mc(field: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    from skimage.measure import marching_cubes

    verts, faces, _, _ = marching_cubes(
        field, level, method="lewiner", gradient_direction="descent", allow_degenerate=False
    )
    # With the (i, j, k) arrays and "descent", skimage's triangles face the high
    # values (inside). Reverse them so that they face outward in index space.
    return verts.astype(np.float64), np.ascontiguousarray(faces[:, ::-1])


def _vtk_mc(field: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D

    image = vtkImageData()
    # VTK's x index varies fastest: a Fortran-ordered (i, j, k) array is its layout.
    image.SetDimensions(*field.shape)
    flat = np.asfortranarray(field).ravel(order="F")
    image.GetPointData().SetScalars(numpy_to_vtk(flat, deep=False))
    fe = vtkFlyingEdges3D()
    fe.SetInputData(image)
    fe.SetValue(0, level)
    fe.ComputeNormalsOff()
    fe.ComputeGradientsOff()
    fe.ComputeScalarsOff()
    fe.Update()
    out = fe.GetOutput()
    if out.GetNumberOfPoints() == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    verts = vtk_to_numpy(out.GetPoints().GetData()).astype(np.float64)
    faces = vtk_to_numpy(out.GetPolys().GetConnectivityArray()).astype(np.int64).reshape(-1, 3)
    # flying edges orients triangles toward decreasing values: already outward
    return verts, faces


def _mesh_from_field(
    field: np.ndarray, level: float, offset: np.ndarray, affine: np.ndarray, engine: str
) -> trimesh.Trimesh | None:
    if engine == "vtk":
        verts, faces = _vtk_mc(field, level)
    else:
        try:
            verts, faces = _skimage_mc(field, level)
        except RuntimeError:  # skimage: "No surface found at the given iso value."
            return None
    if len(faces) == 0:
        return None
    verts += offset
    mesh = trimesh.Trimesh(verts, faces, process=False)
    mesh.apply_transform(affine)
    return mesh


def signed_distance(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Signed distance (mm) to the boundary of a 0/1 crop: > 0 inside, < 0 outside.

    The boundary lies halfway between inside and outside voxel centres.
    Distances are measured between voxel centres and corrected by half the
    finest voxel size, so they are exact across the finest axis and
    overestimate by at most half the difference of spacings across others.

    Returns a (I, J, K) float32 array.
    """
    from scipy import ndimage

    inside = mask.astype(bool)
    sampling = np.asarray(spacing, dtype=np.float64)
    d_in = ndimage.distance_transform_edt(inside, sampling=sampling)
    d_out = ndimage.distance_transform_edt(~inside, sampling=sampling)
    half = 0.5 * float(sampling.min())
    return (np.where(inside, d_in - half, half - d_out)).astype(np.float32)


def iso_resample(crop: np.ndarray, affine: np.ndarray, iso: float) -> tuple[np.ndarray, np.ndarray]:
    """Shape-based interpolation of a 0/1 crop onto cubic ``iso`` mm voxels.

    The signed distance map of the mask (not the mask itself, whose linear
    interpolation keeps the staircase) is interpolated linearly; its zero level
    is the interpolated boundary. The new grid spans the same physical box and
    its faces are kept outside, so the surface stays closed.

    Returns
    -------
    field : ndarray of float32
        Signed distance in mm on the new grid (contour it at 0).
    affine : (4, 4) ndarray
        Voxel index to LPS mm of the new grid.
    """
    from scipy import ndimage

    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    sdf = signed_distance(crop, spacing)
    extent = (np.asarray(crop.shape) - 1) * spacing
    shape = np.maximum(2, np.round(extent / iso).astype(int) + 1)
    step = (np.asarray(crop.shape) - 1) / (shape - 1)  # old voxels per new voxel
    field = ndimage.affine_transform(sdf, step, output_shape=tuple(shape), order=1, mode="nearest")
    outside = -float(iso)
    for axis in range(3):
        index = [slice(None)] * 3
        for end in (0, -1):
            index[axis] = end
            field[tuple(index)] = np.minimum(field[tuple(index)], outside)
    return field, affine @ np.diag(np.r_[step, 1.0])


def mask_surface(
    mask: np.ndarray,
    affine: np.ndarray,
    *,
    iso_spacing: float | None = None,
    engine: str = "skimage",
) -> trimesh.Trimesh:
    """Extract the closed marching-cubes surface of a binary mask, in world mm, outward winding.

    Parameters
    ----------
    mask : (I, J, K) ndarray of bool
        Voxels inside the structure.
    affine : (4, 4) ndarray of float64
        Voxel index to LPS mm.
    iso_spacing : float, optional
        Resample the mask to cubic voxels of this size in mm first, by
        shape-based interpolation (:func:`iso_resample`); removes the staircase
        of thick slices.
    engine : {"skimage", "vtk", "auto"}
        Marching-cubes implementation (same surface, see module docstring).

    Returns
    -------
    trimesh.Trimesh
        Vertices in LPS mm; a closed surface even for a single voxel.

    Raises
    ------
    EmptySegmentationError
        If ``mask`` holds no voxels.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise InputError(f"mask must be 3D (i, j, k), got shape {mask.shape}")
    engine = resolve_engine(engine)
    box = bounding_box(mask)
    if box is None:
        raise EmptySegmentationError("the mask holds no voxels: there is no surface to extract")
    crop, lo = _padded_crop(mask.astype(np.uint8, copy=False), box, 0)
    affine = np.asarray(affine, dtype=np.float64)
    if iso_spacing is not None:
        if not iso_spacing > 0:
            raise ValueError(f"iso_spacing must be a positive number of mm, got {iso_spacing}")
        shift = np.eye(4)
        shift[:3, 3] = lo
        field, crop_affine = iso_resample(crop, affine @ shift, float(iso_spacing))
        offset, level = np.zeros(3), 0.0
        if field.max() <= 0:  # a structure thinner than the new voxels: keep the original grid
            field, crop_affine, offset, level = crop, affine, lo.astype(np.float64), 0.5
    else:
        field, crop_affine, offset, level = crop, affine, lo.astype(np.float64), 0.5
    mesh = _mesh_from_field(field, level, offset, crop_affine, engine)
    if mesh is None:  # cannot happen for a non-empty padded mask; be explicit anyway
        raise EmptySegmentationError("marching cubes found no surface in a non-empty mask")
    return mesh


def label_surfaces(
    labels: LabelMap,
    *,
    organs: Iterable[int | str] | None = None,
    iso_spacing: float | None = None,
    workers: int = 1,
    engine: str = "auto",
    progress: ProgressFn | None = None,
) -> dict[int, trimesh.Trimesh]:
    """One closed marching-cubes surface per label, in LPS mm with outward winding.

    Parameters
    ----------
    labels : LabelMap
        Integer label map with its affine.
    organs : iterable of int or str, optional
        Label ids or names to extract (default: every label present).
    iso_spacing : float, optional
        Resample each mask to cubic voxels of this size (mm) before extraction.
    workers : int
        Threads extracting labels concurrently (0: one per CPU core).
    engine : {"auto", "skimage", "vtk"}
        Marching-cubes implementation; ``"auto"`` picks VTK's flying edges when
        installed, which gives the same surface as scikit-image, faster.
    progress : ProgressFn, optional
        Called with ``("surfaces", fraction)``.

    Returns
    -------
    dict of int to trimesh.Trimesh
        Label id -> surface, in ascending id order.

    Raises
    ------
    EmptySegmentationError
        If the label map is empty or a requested organ has no voxels.
    """
    boxes = label_boxes(labels, organs)
    engine = resolve_engine(engine)
    return surfaces_in_boxes(labels, boxes, iso_spacing=iso_spacing, workers=workers, engine=engine,
                             progress=progress)


def surfaces_in_boxes(
    labels: LabelMap,
    boxes: dict[int, tuple[slice, slice, slice]],
    *,
    iso_spacing: float | None = None,
    workers: int = 1,
    engine: str = "auto",
    progress: ProgressFn | None = None,
) -> dict[int, trimesh.Trimesh]:
    """:func:`label_surfaces` for labels whose bounding boxes are already known."""
    engine = resolve_engine(engine)
    array = np.asarray(labels.array)
    ids = sorted(boxes)
    workers = (os.cpu_count() or 1) if workers == 0 else max(1, int(workers))

    def one(label: int) -> trimesh.Trimesh:
        sub = array[boxes[label]] == label
        shift = np.eye(4)
        shift[:3, 3] = [s.start for s in boxes[label]]
        return mask_surface(sub, labels.affine @ shift, iso_spacing=iso_spacing, engine=engine)

    out: dict[int, trimesh.Trimesh] = {}
    report(progress, "surfaces", 0.0)
    if workers == 1 or len(ids) == 1:
        for n, label in enumerate(ids):
            out[label] = one(label)
            report(progress, "surfaces", (n + 1) / len(ids))
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {label: pool.submit(one, label) for label in ids}
            for n, label in enumerate(ids):
                out[label] = futures[label].result()
                report(progress, "surfaces", (n + 1) / len(ids))
    return out


def label_boxes(
    labels: LabelMap, organs: Iterable[int | str] | None = None
) -> dict[int, tuple[slice, slice, slice]]:
    """Bounding boxes (i, j, k slices) of the requested labels, in one pass over the array.

    Parameters
    ----------
    labels : LabelMap
    organs : iterable of int or str, optional
        Label ids or names (default: every label present).

    Returns
    -------
    dict of int to tuple of 3 slices
        In ascending label order.

    Raises
    ------
    EmptySegmentationError
        If nothing is labelled or a requested organ has no voxels.
    InputError
        If a requested name is not in the label table.
    """
    from scipy import ndimage

    array = np.asarray(labels.array)
    if array.dtype.kind not in "iu":
        array = array.astype(np.int64)
    if array.size and int(array.max()) > 65535:
        # sparse huge ids: one box per present id rather than a list up to the maximum
        present = {}
        for label in np.unique(array):
            if label > 0:
                present[int(label)] = bounding_box(array == label)
    else:
        # find_objects skips labels < 1 and needs no temporary copy of the array;
        # run it on the box around all labels (cheap to find) rather than the whole field
        outer = bounding_box(array)
        objects = ndimage.find_objects(array[outer]) if outer is not None else []
        present = {
            n + 1: tuple(slice(o.start + b.start, o.start + b.stop) for o, b in zip(outer, box, strict=True))
            for n, box in enumerate(objects)
            if box is not None
        }
    if not present:
        raise EmptySegmentationError(
            "the label map holds no labelled voxels; check that the right file was given"
        )
    if organs is None:
        return dict(sorted(present.items()))
    out = {}
    for key in organs:
        try:
            label = labels.label_of(key)
        except KeyError as exc:
            raise InputError(str(exc.args[0])) from None
        if label not in present:
            raise EmptySegmentationError(
                f"organ {key!r} (label {label}) has no voxels in this label map; "
                f"present labels: {', '.join(map(str, present))}"
            )
        out[label] = present[label]
    return dict(sorted(out.items()))


def select_labels(labels: LabelMap, organs: Iterable[int | str] | None) -> list[int]:
    """Resolve ``organs`` (ids or names; None = all present) to sorted label ids.

    Raises
    ------
    EmptySegmentationError
        If nothing is labelled or a requested organ has no voxels.
    InputError
        If a requested name is not in the label table.
    """
    return list(label_boxes(labels, organs))


def iso_surface(
    volume: Volume, level: float, *, engine: str = "auto", largest_only: bool = False
) -> trimesh.Trimesh:
    """Surface of an intensity volume at ``level`` (e.g. bone at 300 HU), in LPS mm.

    The volume is padded by one voxel below ``level`` so the surface is closed
    where the structure meets the field of view.

    Parameters
    ----------
    volume : Volume
        Intensity image, e.g. float32 Hounsfield units.
    level : float
        Threshold in the volume's units; voxels above it are inside.
    engine : {"auto", "skimage", "vtk"}
        Marching-cubes implementation.
    largest_only : bool
        Keep only the largest connected shell.

    Raises
    ------
    EmptySegmentationError
        If no voxel is above ``level``.
    """
    engine = resolve_engine(engine)
    array = np.asarray(volume.array, dtype=np.float32)
    above = array > level
    box = bounding_box(above)
    if box is None:
        raise EmptySegmentationError(
            f"no voxel is above {level} {volume.units}: choose a lower threshold"
        )
    fill = np.float32(min(level - 1.0, float(array.min())))
    crop, lo = _padded_crop(array, box, fill)
    mesh = _mesh_from_field(crop, float(level), lo.astype(np.float64), volume.affine, engine)
    if mesh is None:
        raise EmptySegmentationError(f"no surface found at {level} {volume.units}")
    if largest_only:
        parts = mesh.split(only_watertight=False)
        mesh = max(parts, key=lambda m: len(m.faces))
    return mesh
