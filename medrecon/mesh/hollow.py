"""Hollow shells of a given wall thickness (saves resin when printing).

The cavity is the set of points deeper than the wall thickness inside the
mask. Its surface is contoured from the mask's signed distance map,
interpolated onto a cubic grid fine enough for the wall, smoothed like the outer surface, and
subtracted from the outer mesh with manifold3d's exact Boolean difference, so
the result is a valid closed 2-manifold even where the smoothed surfaces would
touch. Where the organ is thinner than two walls no cavity forms and the part
stays solid there. Pieces of the cavity smaller than a cube of the wall's size
(local maxima of the distance map just past the wall) are left solid: they
save no material and would only be sealed voids. When the outer surface was
decimated, the cavity is decimated to the same number of triangles per mm^2.

The shell is closed: liquid resin stays trapped inside unless drain holes are
added in the slicer software.
"""

from __future__ import annotations

import numpy as np

from medrecon.errors import MedreconError
from medrecon.mesh.decimate import decimate
from medrecon.mesh.repair import MeshCheck, check
from medrecon.mesh.smooth import smooth
from medrecon.triangles import TriangleMesh


def _to_manifold(mesh: TriangleMesh):
    import manifold3d

    m = manifold3d.Manifold(
        manifold3d.Mesh64(
            vert_properties=np.ascontiguousarray(mesh.vertices, dtype=np.float64),
            tri_verts=np.ascontiguousarray(mesh.faces, dtype=np.uint64),
        )
    )
    if m.status() != manifold3d.Error.NoError:
        raise MedreconError(
            f"the mesh is not an oriented 2-manifold ({m.status()}); cannot hollow it. "
            "Repair it first (medrecon.mesh.repair.repair)"
        )
    return m


def _from_manifold(m) -> TriangleMesh:
    out = m.to_mesh64()
    # own, writeable copies: manifold3d's arrays are read-only views, which
    # fast-simplification refuses
    return TriangleMesh(np.array(np.asarray(out.vert_properties)[:, :3], dtype=np.float64),
                        np.array(out.tri_verts, dtype=np.int64))


def cavity_surface(
    mask: np.ndarray, affine: np.ndarray, thickness_mm: float, *, smoothing: float = 0.0
) -> TriangleMesh | None:
    """Surface of the points more than ``thickness_mm`` inside ``mask`` (None if none are).

    Parameters
    ----------
    mask : (I, J, K) ndarray of bool
        The organ.
    affine : (4, 4) ndarray
        Voxel index to LPS mm.
    thickness_mm : float
        Wall thickness in mm.
    smoothing : float
        Smoothing factor applied to the cavity (Slicer's scale, see
        :mod:`medrecon.mesh.smooth`).
    """
    from medrecon.surface.extract import bounding_box, contour, padded_crop
    from medrecon.surface.resample import iso_resample

    box = bounding_box(np.asarray(mask, dtype=bool))
    if box is None:
        return None
    crop, lo = padded_crop(np.asarray(mask, dtype=np.uint8), box, 0)
    shift = np.eye(4)
    shift[:3, 3] = lo
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    step = float(min(spacing.min(), thickness_mm / 2.0))
    depth, grid_affine = iso_resample(crop, np.asarray(affine, dtype=np.float64) @ shift, step)
    level = float(thickness_mm)
    if depth.max() <= level:
        return None
    cavity = contour(depth, level, np.zeros(3), grid_affine, "skimage")
    if cavity is None:
        return None
    return smooth(cavity, smoothing) if smoothing > 0 else cavity


def hollow(
    outer: TriangleMesh,
    mask: np.ndarray,
    affine: np.ndarray,
    thickness_mm: float,
    *,
    smoothing: float = 0.0,
    faces_per_mm2: float | None = None,
) -> tuple[TriangleMesh, MeshCheck]:
    """Hollow ``outer`` (the surface of ``mask``) leaving walls ``thickness_mm`` thick.

    Parameters
    ----------
    outer : TriangleMesh
        Closed, outward-wound surface of the organ in LPS mm.
    mask, affine : see :func:`cavity_surface`.
    thickness_mm : float
        Wall thickness in mm (> 0).
    smoothing : float
        Smoothing factor for the cavity, normally the one used for ``outer``.
    faces_per_mm2 : float, optional
        Decimate the cavity to this many triangles per mm^2 of its area
        (normally the decimated outer surface's); None keeps it as contoured.

    Returns
    -------
    mesh : TriangleMesh
        Outer shell plus inward-facing cavity shell(s); ``outer`` itself if the
        organ is nowhere thicker than two walls.
    check : MeshCheck
    """
    if not thickness_mm > 0:
        raise ValueError(f"wall thickness must be > 0 mm, got {thickness_mm}")
    if faces_per_mm2 is not None and not faces_per_mm2 > 0:
        raise ValueError(f"faces_per_mm2 must be > 0, got {faces_per_mm2}")
    cavity = cavity_surface(mask, affine, thickness_mm, smoothing=smoothing)
    if cavity is None:
        return outer, check(outer)
    import manifold3d

    inner = _to_manifold(cavity)
    pieces = inner.decompose()
    kept = [piece for piece in pieces if piece.volume() >= thickness_mm**3]
    if not kept:
        return outer, check(outer)
    if len(kept) < len(pieces):
        inner = manifold3d.Manifold.compose(kept)
    if faces_per_mm2 is not None:
        target = max(4, int(round(faces_per_mm2 * inner.surface_area())))
        if target < inner.num_tri():
            inner = _to_manifold(decimate(_from_manifold(inner), target_faces=target)[0])
    shell = _from_manifold(_to_manifold(outer) - inner)
    return shell, check(shell)
