"""Marching-cubes surfaces of label maps and intensity volumes, in LPS millimetres.

Each label is extracted on its own bounding-box crop, padded by one voxel of
background, so a closed organ always gives a closed surface and the cost follows
the organ, not the field of view. Vertices are computed in (i, j, k) voxel
indices and placed in the world by applying the volume's affine with
:meth:`~medrecon.triangles.TriangleMesh.transformed`, which, like
:meth:`trimesh.Trimesh.apply_transform`, also reverses the triangle winding when
the affine is a reflection (as LPS/RAS affines often are). Every mesh returned
is a :class:`~medrecon.triangles.TriangleMesh` with outward-facing triangles: a
positive signed volume.

Two engines compute the same surface: scikit-image's Lewiner marching cubes (the
reference, always available) and VTK's flying edges (optional, faster, used by
``engine="auto"`` when :mod:`vtk` is importable). On a binary mask both put the
vertices on the midpoints of the voxel edges crossing the boundary.
"""

from __future__ import annotations

import numpy as np

from medrecon.errors import EmptySegmentationError, InputError
from medrecon.surface.resample import iso_resample
from medrecon.triangles import TriangleMesh
from medrecon.volume import Volume

ENGINES = ("auto", "skimage", "vtk")

#: Surfaces from voxel blocks (``detail_mm``): how far from half a block's count is moved
#: before contouring, as a fraction of its voxels (vertices then lie on the middle
#: third of each block edge, see :func:`mask_surface`).
BLOCK_MARGIN = 0.25


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
    # One pass over the whole array, along its slowest axis (whole planes OR-ed
    # together), then a pass over the box it gives to find the extent along that axis.
    outer = 2 if mask.flags.f_contiguous and not mask.flags.c_contiguous else 0
    rest = [a for a in range(3) if a != outer]
    plane = mask.any(axis=outer)
    slices: list[slice] = [slice(0, 0)] * 3
    for n, axis in enumerate(rest):
        hit = np.flatnonzero(plane.any(axis=1 - n))
        if hit.size == 0:
            return None
        slices[axis] = slice(int(hit[0]), int(hit[-1]) + 1)
    sub = mask[tuple(slice(None) if a == outer else slices[a] for a in range(3))]
    hit = np.flatnonzero(sub.any(axis=tuple(rest)))
    slices[outer] = slice(int(hit[0]), int(hit[-1]) + 1)
    return tuple(slices)  # type: ignore[return-value]


def padded_crop(array: np.ndarray, box: tuple[slice, slice, slice], fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``array`` to ``box`` grown by one voxel; outside the array is ``fill``.

    Returns the crop and the (3,) index of its first voxel in ``array`` (may be -1).
    """
    lo = np.array([s.start - 1 for s in box])
    hi = np.array([s.stop + 1 for s in box])
    src_lo = np.maximum(lo, 0)
    src_hi = np.minimum(hi, array.shape)
    # keep the source's memory order (NIfTI arrays are Fortran-ordered, as VTK wants them)
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    crop = np.full(tuple(hi - lo), fill, dtype=array.dtype, order=order)
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


def contour(
    field: np.ndarray, level: float, offset: np.ndarray, affine: np.ndarray, engine: str
) -> TriangleMesh | None:
    """Marching-cubes surface of ``field`` at ``level``, outward, in world mm (None if none).

    Parameters
    ----------
    field : (I, J, K) ndarray
        Values; the inside is above ``level``.
    level : float
        Iso-value.
    offset : (3,) ndarray
        Index of ``field``'s first voxel in the grid of ``affine``.
    affine : (4, 4) ndarray
        Voxel index to LPS mm.
    engine : {"skimage", "vtk"}
        A resolved engine (see :func:`resolve_engine`).
    """
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
    return TriangleMesh(verts, faces).transformed(affine)


def block_factors(spacing: np.ndarray, detail_mm: float) -> np.ndarray:
    """Voxels per block along each axis for blocks about ``detail_mm`` in size (at least 1).

    ``floor(detail_mm / spacing)``: a block is never larger than ``detail_mm``
    along an axis whose voxels are smaller, and an axis whose voxels are
    already that large keeps them.
    """
    return np.maximum(1, np.floor(float(detail_mm) / np.asarray(spacing, dtype=np.float64) + 1e-6)).astype(int)


def block_counts(mask: np.ndarray, box: tuple[slice, slice, slice],
                 factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Count the voxels of ``mask`` in blocks of ``factors`` voxels around ``box``.

    The blocks tile ``box`` grown by one empty block on every side (outside
    ``mask`` counts as empty), so a surface of the counts is closed.

    Returns
    -------
    counts : (I, J, K) ndarray of uint8 or uint16
        Voxels of the mask in each block.
    first : (3,) ndarray of int
        Index in ``mask`` of the first voxel of the first block (may be negative).
    """
    f = np.asarray(factors, dtype=int)
    start = np.array([s.start for s in box]) - f
    blocks = -(-(np.array([s.stop for s in box]) - start) // f) + 1  # ceil, and the empty block after
    stop = start + blocks * f
    src_lo, src_hi = np.maximum(start, 0), np.minimum(stop, mask.shape)
    grid = np.zeros(tuple(blocks * f), dtype=np.uint8)
    grid[tuple(slice(a - b, c - b) for a, b, c in zip(src_lo, start, src_hi, strict=True))] = \
        mask[tuple(slice(a, c) for a, c in zip(src_lo, src_hi, strict=True))]
    dtype = np.uint8 if int(np.prod(f)) <= 255 else np.uint16
    counts = grid.reshape(blocks[0], f[0], blocks[1], f[1], blocks[2], f[2]).sum(axis=(1, 3, 5), dtype=dtype)
    return counts, start


def mask_surface(
    mask: np.ndarray,
    affine: np.ndarray,
    *,
    iso_spacing: float | None = None,
    detail_mm: float | None = None,
    engine: str = "skimage",
) -> TriangleMesh:
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
    detail_mm : float, optional
        Extract the surface from blocks of voxels about this size (mm; see
        :func:`block_factors`) instead of single voxels: the surface is where
        half of a block's voxels are inside, between block centres. A surface
        with n times fewer faces per area, which keeps the mask's volume where
        the structure is thicker than a block (a plane boundary is placed
        without bias); parts thinner than half a block fade out. Not with
        ``iso_spacing``.
    engine : {"skimage", "vtk", "auto"}
        Marching-cubes implementation (same surface, see module docstring).

    Returns
    -------
    TriangleMesh
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
    affine = np.asarray(affine, dtype=np.float64)
    if detail_mm is not None:
        if iso_spacing is not None:
            raise ValueError("give iso_spacing or detail_mm, not both")
        if not detail_mm > 0:
            raise ValueError(f"detail_mm must be a positive number of mm, got {detail_mm}")
        factors = block_factors(np.linalg.norm(affine[:3, :3], axis=0), detail_mm)
        if np.any(factors > 1):
            mesh = _block_surface(mask, box, factors, affine, engine)
            if mesh is not None:
                return mesh
            # a structure thinner than half a block everywhere: keep the voxels
    crop, lo = padded_crop(mask.astype(np.uint8, copy=False), box, 0)
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
    mesh = contour(field, level, offset, crop_affine, engine)
    if mesh is None:  # cannot happen for a non-empty padded mask; be explicit anyway
        raise EmptySegmentationError("marching cubes found no surface in a non-empty mask")
    return mesh


def _smallest(pieces: np.ndarray, *, border: bool) -> float:
    """Voxels in the smallest face-connected piece of ``pieces`` (inf if none).

    With ``border=False`` pieces touching the array's border are left out (for
    background: only the cavities count).
    """
    from scipy import ndimage

    lab, n = ndimage.label(pieces)
    sizes = np.bincount(lab.ravel(), minlength=n + 1).astype(np.float64)
    sizes[0] = np.inf
    if not border:
        for axis in range(3):
            for end in (0, -1):
                sizes[np.take(lab, end, axis=axis)] = np.inf
    return float(sizes.min())


def _block_cleanup(counts: np.ndarray, level: float, n: int, mask: np.ndarray,
                   box: tuple[slice, slice, slice]) -> np.ndarray:
    """Return ``counts`` without the pieces and cavities that blocks make and the mask has not.

    Where thin parts fade, blocks cut off fragments and close off channels into
    cavities. A block piece (face-connected blocks above ``level``) smaller than
    half the mask's smallest face-connected piece is emptied (never the
    largest), and a block cavity smaller than half the mask's smallest cavity is
    filled, so a mask cleaned of debris gives a surface without debris. Sizes
    are in voxels, n per block (a level set at half is as often above the mask
    as below).
    """
    from scipy import ndimage

    # the tight box: background touching its border is outside, not a cavity
    crop = np.asarray(mask[box], dtype=bool)
    out = counts.copy()
    lab, pieces = ndimage.label(out > level)
    if pieces > 1:
        size = np.bincount(lab.ravel(), minlength=pieces + 1) * float(n)
        size[0] = np.inf
        drop = size < 0.5 * _smallest(crop, border=True)
        drop[1 + int(np.argmax(size[1:]))] = False
        out[drop[lab]] = 0
    lab, gaps = ndimage.label(out <= level)
    size = np.bincount(lab.ravel(), minlength=gaps + 1) * float(n)
    size[0] = np.inf
    for axis in range(3):
        for end in (0, -1):
            size[np.take(lab, end, axis=axis)] = np.inf
    if np.isfinite(size).any():  # the blocks hold cavities: measure the mask's own
        out[(size < 0.5 * _smallest(~crop, border=False))[lab]] = n
    return out


def _keep_width(field: np.ndarray, margin: np.float32) -> None:
    """Give every sheet and gap one block wide a width, in place (inside: ``field > 0``).

    A count just above half between two blocks outside puts both sides of the
    sheet next to its block's centre, where smoothing crosses them; the same
    for a gap between two blocks inside. Such blocks get at least ``margin``
    from half, so their vertices stay off the centre (a third of a block and
    more for a margin of n / 4); all other blocks keep their count.
    """
    inside = field > 0
    thin = np.zeros_like(inside)
    gap = np.zeros_like(inside)
    for axis in range(3):
        mid, before, after = ([slice(None)] * 3 for _ in range(3))
        mid[axis], before[axis], after[axis] = slice(1, -1), slice(None, -2), slice(2, None)
        mid, before, after = tuple(mid), tuple(before), tuple(after)
        thin[mid] |= inside[mid] & ~inside[before] & ~inside[after]
        gap[mid] |= ~inside[mid] & inside[before] & inside[after]
    field[thin] = np.maximum(field[thin], margin)
    field[gap] = np.minimum(field[gap], -margin)


def _block_surface(mask: np.ndarray, box: tuple[slice, slice, slice], factors: np.ndarray,
                   affine: np.ndarray, engine: str) -> TriangleMesh | None:
    """Surface at half the voxel count of each block (see :func:`mask_surface`), None if none."""
    counts, first = block_counts(mask, box, factors)
    n = int(np.prod(factors))
    level = n / 2.0 - 0.25  # inside: at least half of the block's voxels (counts are whole)
    if counts.max() <= level:
        return None
    counts = _block_cleanup(counts, level, n, mask, box)
    field = counts.astype(np.float32) - np.float32(n / 2.0)
    # a block holding exactly half is inside, its vertices next to its centre (a
    # boundary through the middle of the block); not on it: no triangles of zero area
    field[field == 0] = np.float32(1e-3)
    _keep_width(field, np.float32(BLOCK_MARGIN * n))
    # block (a, b, c) is centred on voxel first + factors * (a, b, c) + (factors - 1) / 2
    place = np.diag(np.r_[factors.astype(np.float64), 1.0])
    place[:3, 3] = first + (factors - 1) / 2.0
    return contour(field, 0.0, np.zeros(3), affine @ place, engine)


def iso_surface(
    volume: Volume, level: float, *, engine: str = "auto", largest_only: bool = False
) -> TriangleMesh:
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
    crop, lo = padded_crop(array, box, fill)
    mesh = contour(crop, float(level), lo.astype(np.float64), volume.affine, engine)
    if mesh is None:
        raise EmptySegmentationError(f"no surface found at {level} {volume.units}")
    if largest_only:
        parts = mesh.to_trimesh().split(only_watertight=False)
        mesh = TriangleMesh.from_trimesh(max(parts, key=lambda m: len(m.faces)))
    return mesh
