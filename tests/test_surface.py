"""Marching-cubes surfaces against analytic shapes and known geometry."""

import numpy as np
import pytest
from _builders import CENTRE, ellipsoid_mask, oblique_grid, world_points
from scipy import ndimage

from medrecon.errors import EmptySegmentationError, InputError
from medrecon.surface import iso_surface, label_surfaces, mask_surface
from medrecon.surface.extract import resolve_engine
from medrecon.volume import LabelMap, Volume


def ellipsoid_area(a, b, c):
    # Knud Thomsen's approximation, relative error < 1.1 %; exact for a sphere
    p = 1.6075
    return 4 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


@pytest.mark.parametrize("engine", ["skimage", "vtk"])
@pytest.mark.parametrize(
    ("axes", "spacing"),
    [((20.0, 20.0, 20.0), (0.9, 1.1, 1.6)), ((25.0, 18.0, 14.0), (0.8, 1.0, 1.5))],
)
def test_raw_surface_matches_analytic_shape_under_oblique_flipped_affine(axes, spacing, engine):
    mask, affine = ellipsoid_mask(axes, spacing)
    assert np.linalg.det(affine[:3, :3]) < 0
    mesh = mask_surface(mask, affine, engine=engine).to_trimesh()
    volume = 4.0 / 3.0 * np.pi * np.prod(axes)
    assert mesh.is_watertight
    assert mesh.volume > 0  # outward winding despite the reflection
    assert abs(mesh.volume / volume - 1) < 0.01
    assert np.linalg.norm(mesh.center_mass - CENTRE) < 0.5
    # every face normal points away from the centre of the convex shape
    outward = np.einsum("ij,ij->i", mesh.face_normals, mesh.triangles_center - CENTRE)
    assert np.all(outward > 0)


def test_winding_is_outward_for_every_axis_flip():
    g = np.mgrid[:12, :12, :12]
    mask = ((g - 5.5) ** 2).sum(0) <= 16
    for signs in [(1, 1, 1), (-1, 1, 1), (1, -1, 1), (-1, -1, 1), (-1, -1, -1)]:
        mesh = mask_surface(mask, np.diag([*signs, 1.0]) @ np.diag([0.7, 0.8, 2.5, 1.0])).to_trimesh()
        assert mesh.volume > 0, signs


def test_single_voxel_gives_closed_mesh_even_at_the_border():
    for index in [(1, 1, 1), (0, 0, 0), (2, 0, 2)]:
        mask = np.zeros((3, 3, 3), bool)
        mask[index] = True
        mesh = mask_surface(mask, np.diag([-0.5, -0.5, 3.0, 1.0])).to_trimesh()
        assert mesh.is_watertight
        # marching cubes cuts the voxel into an octahedron of 1/6 of its volume
        assert mesh.volume == pytest.approx(0.5 * 0.5 * 3.0 / 6.0)


def test_mask_touching_the_field_of_view_is_closed():
    mask = np.ones((6, 5, 4), bool)
    mesh = mask_surface(mask, np.eye(4)).to_trimesh()
    assert mesh.is_watertight and mesh.volume > 0


def test_vtk_engine_gives_the_same_surface_as_skimage():
    mask, affine = ellipsoid_mask((15.0, 11.0, 9.0), (1.0, 1.2, 2.0))
    a = mask_surface(mask, affine, engine="skimage").to_trimesh()
    b = mask_surface(mask, affine, engine="vtk").to_trimesh()
    # both place vertices on the voxel-edge midpoints: the same vertex set
    va = np.unique(np.round(a.vertices, 6), axis=0)
    vb = np.unique(np.round(b.vertices, 6), axis=0)
    assert va.shape == vb.shape and np.allclose(va, vb)
    assert b.volume == pytest.approx(a.volume, rel=1e-3)
    assert b.area == pytest.approx(a.area, rel=1e-3)


def test_auto_engine_resolves():
    assert resolve_engine("auto") in ("skimage", "vtk")
    with pytest.raises(ValueError, match="engine"):
        resolve_engine("gpu")


def test_iso_spacing_reduces_the_staircase_of_thick_slices():
    axes = (20.0, 20.0, 20.0)
    mask, affine = ellipsoid_mask(axes, (1.0, 1.0, 5.0))
    area = ellipsoid_area(*axes)
    coarse = mask_surface(mask, affine).to_trimesh()
    fine = mask_surface(mask, affine, iso_spacing=1.0).to_trimesh()
    assert fine.is_watertight and fine.volume > 0
    assert abs(fine.area / area - 1) < abs(coarse.area / area - 1)
    assert abs(fine.volume / (4 / 3 * np.pi * 8000) - 1) < 0.03


def test_label_surfaces_per_label_with_names_and_threads():
    g = np.mgrid[:30, :30, :20]
    array = np.zeros((30, 30, 20), np.uint8)
    array[((g[0] - 8) ** 2 + (g[1] - 8) ** 2 + (g[2] - 8) ** 2) <= 25] = 5
    array[18:25, 18:26, 5:12] = 1
    array[0, 29, 19] = 52  # one voxel in a corner of the field of view
    labels = LabelMap(array, np.diag([-0.8, -0.8, 2.0, 1.0]), names={5: "liver", 1: "spleen", 52: "aorta"})
    serial = label_surfaces(labels, workers=1)
    threaded = label_surfaces(labels, workers=3)
    assert sorted(serial) == [1, 5, 52]
    for k in serial:
        mesh = serial[k].to_trimesh()
        assert mesh.is_watertight and mesh.volume > 0
        assert np.allclose(serial[k].vertices, threaded[k].vertices)
    box = serial[1].to_trimesh()
    # a 7 x 8 x 7 voxel box: marching cubes bevels its 12 edges and 8 corners
    assert box.bounds[1, 2] - box.bounds[0, 2] == pytest.approx(7 * 2.0)
    only = label_surfaces(labels, organs=["liver", 52])
    assert sorted(only) == [5, 52]


def test_label_surfaces_errors():
    labels = LabelMap(np.zeros((4, 4, 4), np.uint8), np.eye(4), names={5: "liver"})
    with pytest.raises(EmptySegmentationError, match="no labelled voxels"):
        label_surfaces(labels)
    labels = labels.replace(array=np.pad(np.ones((2, 2, 2), np.uint8), 1))
    with pytest.raises(EmptySegmentationError, match="liver"):
        label_surfaces(labels, organs=["liver"])
    with pytest.raises(InputError, match="no label named"):
        label_surfaces(labels, organs=["pancreas"])


def test_iso_surface_of_a_distance_field_is_the_analytic_sphere():
    radius = 18.0
    affine, shape = oblique_grid((1.0, 1.3, 2.0), 25.0)
    field = radius - np.linalg.norm(world_points(affine, shape) - CENTRE, axis=1)
    volume = Volume(field.reshape(shape).astype(np.float32), affine, units="mm")
    mesh = iso_surface(volume, 0.0).to_trimesh()
    assert mesh.is_watertight and mesh.volume > 0
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.01)
    assert np.allclose(np.linalg.norm(mesh.vertices - CENTRE, axis=1), radius, atol=0.1)
    with pytest.raises(EmptySegmentationError, match="lower threshold"):
        iso_surface(volume, 1000.0)


def test_bone_iso_surface_lies_on_300_hu_of_real_ct(totalseg_dir):
    from medrecon.io import load

    ct = load(totalseg_dir / "example_ct_sm.nii.gz")
    mesh = iso_surface(ct, 300.0).to_trimesh()
    assert mesh.volume > 0
    # trilinear interpolation of the CT at the vertices gives the threshold back
    ijk = ct.world_to_voxel(mesh.vertices)
    hu = ndimage.map_coordinates(np.asarray(ct.array, np.float32), ijk.T, order=1)
    assert np.median(np.abs(hu - 300.0)) < 1.0
    largest = iso_surface(ct, 300.0, largest_only=True).to_trimesh()
    assert len(mesh.split(only_watertight=False)) > 1
    assert len(largest.split(only_watertight=False)) == 1 and len(largest.faces) < len(mesh.faces)


def _shells(mesh):
    """Signed volumes (mm^3) of the shells of a closed mesh: > 0 a piece, < 0 a cavity."""
    tm = mesh.to_trimesh()
    return sorted(part.volume for part in tm.split(only_watertight=False))


@pytest.mark.parametrize("engine", ["skimage", "vtk"])
def test_detail_mm_surface_keeps_the_volume_of_a_hollow_ball_on_an_oblique_flipped_grid(engine):
    spacing = (0.8, 0.9, 1.0)
    affine, shape = oblique_grid(spacing, 26.0)
    r = np.linalg.norm(world_points(affine, shape) - CENTRE, axis=1).reshape(shape)
    mask = (r <= 20.0) & (r > 8.0)
    exact = 4.0 / 3.0 * np.pi * (20.0**3 - 8.0**3)
    fine = mask_surface(mask, affine, engine=engine)
    coarse = mask_surface(mask, affine, detail_mm=2.0, engine=engine)
    tm = coarse.to_trimesh()
    assert tm.is_watertight and tm.volume > 0  # closed, outward despite the reflection
    assert abs(tm.volume / exact - 1) < 0.01
    # blocks of 2 x 2 x 2 voxels: about a quarter of the faces
    assert len(coarse.faces) < 0.4 * len(fine.faces)
    # the cavity is still there, at its size
    pieces = _shells(coarse)
    assert len(pieces) == 2 and abs(-pieces[0] / (4.0 / 3.0 * np.pi * 8.0**3) - 1) < 0.05
    # the vertices lie within a block of the true sphere
    d = np.linalg.norm(np.asarray(coarse.vertices) - CENTRE, axis=1)
    assert np.all((np.abs(d - 20.0) < 1.2) | (np.abs(d - 8.0) < 1.2))


def test_detail_mm_coarser_than_the_voxels_changes_nothing_and_rejects_iso_spacing():
    mask, affine = ellipsoid_mask((12.0, 10.0, 8.0), (2.0, 2.0, 3.0))
    plain = mask_surface(mask, affine)
    same = mask_surface(mask, affine, detail_mm=1.5)  # smaller than a voxel: single voxels
    np.testing.assert_array_equal(np.asarray(same.faces), np.asarray(plain.faces))
    with pytest.raises(ValueError, match="not both"):
        mask_surface(mask, affine, detail_mm=2.0, iso_spacing=1.0)
    with pytest.raises(ValueError, match="positive"):
        mask_surface(mask, affine, detail_mm=0.0)


def test_detail_mm_makes_no_debris_and_no_cavity_the_mask_has_not():
    # one piece: a ball with a 1-voxel wire out to knots of 3 x 3 x 3 voxels, and a
    # 1-voxel channel from the outside into a small chamber inside the ball
    mask = np.zeros((60, 40, 40), bool)
    g = np.mgrid[:60, :40, :40]
    mask[((g - np.array([20, 20, 20])[:, None, None, None]) ** 2).sum(0) <= 12**2] = True
    mask[31:58, 20, 20] = True
    for x in (38, 45, 52):
        mask[x - 1:x + 2, 19:22, 19:22] = True
    mask[18:23, 18:23, 16:21] = False  # the chamber
    mask[20, 20, 20:40] = False  # its channel to the outside
    assert ndimage.label(mask)[1] == 1
    assert ndimage.label(~mask)[1] == 1  # no cavity
    fine = mask_surface(mask, np.eye(4))
    assert len(_shells(fine)) == 1
    coarse = mask_surface(mask, np.eye(4), detail_mm=2.0)
    # the wire and the channel fade in 2 x 2 x 2 blocks; the knots it leaves and the
    # chamber it closes are not surfaces of their own
    assert len(_shells(coarse)) == 1
    assert coarse.to_trimesh().is_watertight
    assert abs(coarse.to_trimesh().volume / fine.to_trimesh().volume - 1) < 0.02


def test_detail_mm_gives_a_thin_plate_a_width_that_smoothing_does_not_cross():
    from medrecon.mesh.selfintersect import count_self_intersections
    from medrecon.mesh.smooth import smooth

    mask = np.zeros((40, 40, 24), bool)
    mask[4:36, 4:36, 4:8] = True  # a slab, and on it a plate one voxel thick, half a block
    mask[4:36, 20, 8:20] = True
    mask[8:32, 8:12, 8:20] = True  # and a block two voxels from the plate: a thin gap
    mesh = mask_surface(mask, np.diag([0.8, 0.8, 0.8, 1.0]), detail_mm=1.6)
    assert mesh.to_trimesh().is_watertight
    assert count_self_intersections(smooth(mesh, 0.5)) == 0
