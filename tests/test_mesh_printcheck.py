"""Print checks against ground truth: analytic shapes from label files, and MeshFix.

The shapes are label maps on oblique, reflected grids (det < 0), written to NIfTI
and read back, meshed by medrecon's marching cubes (raw and smoothed as the
pipeline does). Their walls are known analytically. Self-intersections are
cross-checked against MeshFix (pymeshfix), an independent implementation.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import trimesh
from _builders import CENTRE, hollow_shell, oblique_grid, world_points

from medrecon.io import load_labels, save
from medrecon.mesh.printcheck import (
    PROCESSES,
    face_thickness,
    outward_faces,
    print_checks,
    small_features,
    wall_thickness,
)
from medrecon.mesh.selfintersect import count_self_intersections, intersecting_pairs
from medrecon.mesh.smooth import smooth
from medrecon.surface.extract import mask_surface
from medrecon.triangles import TriangleMesh
from medrecon.volume import LabelMap

pymeshfix = pytest.importorskip("pymeshfix")


def meshfix_selection(mesh) -> set[int]:
    """Faces of ``mesh`` that MeshFix's TMesh::selectIntersectingTriangles selects.

    pymeshfix 0.18 returns the selected triangles' indices in the first
    ``len(result)`` entries of an (n, 3) array (the rest is not initialised), in
    MeshFix's own triangle order: mapped back through the triangles it returns.
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int32)
    tm = pymeshfix._meshfix.PyTMesh()
    tm.set_quiet(1)
    tm.load_array(vertices, faces)
    selected = tm.select_intersecting_triangles()
    index = selected.ravel()[: len(selected)]
    # MeshFix drops unused vertices and orders triangles its own way: match by corner positions
    their_points, their_faces = tm.return_arrays()
    ours = {tuple(sorted(map(tuple, vertices[f].tolist()))): k for k, f in enumerate(faces)}
    return {ours[tuple(sorted(map(tuple, their_points[their_faces[i]].tolist())))] for i in index}


def label_file_mesh(tmp_path, mask, affine, smoothing):
    """Write ``mask`` as a label file, read it back and mesh it as the pipeline does."""
    path = save(LabelMap(mask.astype(np.uint8), affine, names={1: "part"}), tmp_path / "part.nii.gz")
    labels = load_labels(path)
    mesh = mask_surface(np.asarray(labels.array) == 1, labels.affine)
    return smooth(mesh, smoothing) if smoothing else mesh


# --- self-intersections -------------------------------------------------------------------


def test_overlapping_spheres_intersect_where_meshfix_says():
    a = trimesh.creation.icosphere(3, radius=10.0)
    b = trimesh.creation.icosphere(3, radius=10.0)
    b.apply_translation([12.0, 3.0, 1.0])
    both = trimesh.util.concatenate([a, b])
    pairs = intersecting_pairs(both)
    assert len(pairs) > 50
    assert set(np.unique(pairs).tolist()) == meshfix_selection(both)
    # ground truth: the spheres meet on a circle; every pair found straddles it
    tri = np.asarray(both.triangles)
    c = np.array([12.0, 3.0, 1.0])
    for i, j in pairs:
        corners = np.vstack([tri[i], tri[j]])
        inside_a = np.linalg.norm(corners, axis=1) < 10.0
        inside_b = np.linalg.norm(corners - c, axis=1) < 10.0
        assert inside_a.any() and inside_b.any()
    # and each sphere alone is clean
    assert count_self_intersections(a) == 0 == len(meshfix_selection(a))


@pytest.mark.parametrize("seed", range(4))
def test_noisy_spheres_agree_with_meshfix(seed):
    rng = np.random.default_rng(seed)
    sphere = trimesh.creation.icosphere(3)
    vertices = np.asarray(sphere.vertices) + rng.normal(0.0, (0.005, 0.02, 0.05, 0.03)[seed], sphere.vertices.shape)
    mesh = TriangleMesh(vertices, np.asarray(sphere.faces))
    assert set(np.unique(intersecting_pairs(mesh)).tolist()) == meshfix_selection(mesh)


@pytest.mark.parametrize("seed", range(4))
def test_coplanar_folds_agree_with_meshfix(seed):
    # a flat-topped marching-cubes box whose top vertices move within the top plane
    mask = np.zeros((8, 8, 8), bool)
    mask[2:6, 2:6, 2:6] = True
    box = mask_surface(mask, np.eye(4))
    vertices = box.vertices.copy()
    top = np.flatnonzero(np.isclose(vertices[:, 2], vertices[:, 2].max())
                         & np.all(np.abs(vertices[:, :2] - 3.5) < 1.4, axis=1))
    rng = np.random.default_rng(seed)
    moved = rng.choice(top, size=2, replace=False)
    vertices[moved, :2] += rng.normal(0.0, 0.8, (2, 2))
    mesh = TriangleMesh(vertices, box.faces)
    assert set(np.unique(intersecting_pairs(mesh)).tolist()) == meshfix_selection(mesh)


@pytest.mark.parametrize("shift", [(0.3, 0.2), (1.0, 0.5), (2.0, 0.25), (0.5, 1e-3), (4.0, 0.0), (6.5, 0.5)])
def test_coplanar_pieces_agree_with_meshfix(shift):
    # a flat-topped box and a copy of its top moved within the top plane: coplanar faces
    # that share no corner overlap, touch along edges and at corners, or lie apart
    mask = np.zeros((8, 8, 8), bool)
    mask[2:6, 2:6, 2:6] = True
    box = mask_surface(mask, np.eye(4))
    vertices = np.asarray(box.vertices, dtype=np.float64)
    faces = np.asarray(box.faces)
    top = faces[np.all(np.isclose(vertices[faces][:, :, 2], vertices[:, 2].max()), axis=1)]
    copy = vertices + [shift[0], shift[1], 0.0]
    mesh = TriangleMesh(np.vstack([vertices, copy]), np.vstack([faces, top + len(vertices)]))
    assert set(np.unique(intersecting_pairs(mesh)).tolist()) == meshfix_selection(mesh)


def test_coplanar_triangles_touching_at_a_point_intersect():
    # ground truth by construction: a corner of the second lies on an edge of the first
    first = [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
    for gap, expected in ((0.0, 1), (1e-3, 0), (-1e-3, 1)):
        c = 1.0 + gap  # (c, c) lies on the first's hypotenuse x + y = 2 when gap is 0
        second = [[c, c, 0.0], [c + 1.0, c, 0.0], [c, c + 1.0, 0.0]]
        mesh = TriangleMesh(np.array(first + second), np.array([[0, 1, 2], [3, 4, 5]]))
        assert count_self_intersections(mesh) == expected


def test_neighbours_count_only_when_they_overlap():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0.2, 0.3, 0], [0, 0, 1], [0.3, 0.3, -1.0]], float)
    fold = TriangleMesh(v, [[0, 1, 2], [1, 0, 4]])  # edge 0-1 shared, coplanar, same side: overlap
    hinge = TriangleMesh(v, [[0, 1, 2], [1, 0, 5]])  # edge shared at a right angle
    flat = TriangleMesh(v, [[0, 1, 2], [1, 3, 2]])  # edge shared, coplanar, opposite sides
    pierce = TriangleMesh(v, [[0, 1, 2], [0, 5, 6]])  # vertex 0 shared, the other cuts through
    touch = TriangleMesh(v, [[0, 1, 2], [0, 5, 4]])  # vertex 0 shared, 0-4 lies inside face 0: contact along it
    assert [count_self_intersections(m) for m in (fold, hinge, flat, pierce, touch)] == [1, 0, 0, 1, 1]
    for m in (fold, hinge, flat, pierce, touch):
        assert len(set(np.unique(intersecting_pairs(m)).tolist())) == len(meshfix_selection(m))


def test_clean_organ_surface_has_none_welded_or_not(tmp_path):
    affine, shape = oblique_grid((0.9, 0.8, 1.3), 30.0)
    xyz = world_points(affine, shape) - CENTRE
    mask = (((xyz / [28.0, 18.0, 12.0]) ** 2).sum(axis=1) <= 1.0).reshape(shape)
    mesh = label_file_mesh(tmp_path, mask, affine, 0.5)
    assert count_self_intersections(mesh) == 0 == len(meshfix_selection(mesh))
    # the same surface as an STL holds it: one vertex per triangle corner
    soup = TriangleMesh(mesh.vertices[mesh.faces].reshape(-1, 3), np.arange(3 * len(mesh.faces)).reshape(-1, 3))
    assert count_self_intersections(soup) == 0


# --- wall thickness -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hollow_sphere(tmp_path_factory):
    """A spherical shell, outer radius 5 mm, wall 1.5 mm, on an oblique reflected 0.15 mm grid: (mask, affine)."""
    return hollow_shell()


@pytest.mark.parametrize("smoothing", [0.0, 0.5])
def test_hollow_sphere_wall_reads_1_5_mm(tmp_path, hollow_sphere, smoothing):
    mesh = label_file_mesh(tmp_path, *hollow_sphere, smoothing)
    wall = wall_thickness(mesh, min_wall_mm=1.0)
    assert abs(wall.min - 1.5) <= 0.2
    assert abs(wall.p5 - 1.5) <= 0.2
    assert wall.area_below_min_mm2 == 0.0 and wall.passes
    # inside out (as a reflected affine without the winding fix would leave it): the same walls
    inverted = TriangleMesh(mesh.vertices, mesh.faces[:, ::-1])
    np.testing.assert_array_equal(outward_faces(inverted), outward_faces(mesh))
    assert wall_thickness(inverted, min_wall_mm=1.0) == wall
    # a ray along a staircase normal crosses the wall slantwise: the median reads a little more
    assert abs(np.median(face_thickness(mesh)) - 1.5) <= 0.2


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    """A 0.6 mm plate (4 voxels of 0.15 mm along k) on an oblique, reflected grid: (mask, affine)."""
    affine, _ = oblique_grid((0.1, 0.1, 0.15), 3.0)
    mask = np.zeros((64, 64, 10), bool)
    mask[4:60, 4:60, 3:7] = True
    return mask, affine


@pytest.mark.parametrize("smoothing", [0.0, 0.5])
def test_plate_fails_fdm_and_passes_sla(tmp_path, plate, smoothing):
    mesh = label_file_mesh(tmp_path, *plate, smoothing)
    wall = wall_thickness(mesh, min_wall_mm=PROCESSES["fdm"].min_wall_mm)
    assert abs(wall.min - 0.6) <= 0.05 and abs(wall.p5 - 0.6) <= 0.05
    side = 56 * 0.1
    assert wall.area_below_min_mm2 >= 0.95 * 2 * side**2
    fdm, sla = print_checks(mesh, process="fdm"), print_checks(mesh, process="sla")
    assert not fdm.wall_thickness.passes and not fdm.passes
    assert sla.wall_thickness.passes and sla.passes
    assert sla.self_intersections == 0 and sla.small_features.pieces_below_resolution == 0
    report = fdm.as_dict()
    assert report["wall_thickness_mm"]["min"] == pytest.approx(wall.min)
    assert set(report["wall_thickness_mm"]) == {"min", "p5", "area_below_min_mm2"}
    # a custom minimum wall below the plate passes it
    assert print_checks(mesh, process=dataclasses.replace(PROCESSES["fdm"], min_wall_mm=0.5)).passes


def test_sampled_thickness_estimates_the_full_one(tmp_path, plate):
    mesh = label_file_mesh(tmp_path, *plate, 0.5)
    full = wall_thickness(mesh, min_wall_mm=1.0)
    sample = wall_thickness(mesh, min_wall_mm=1.0, max_faces=len(mesh.faces) // 4)
    assert sample.p5 == pytest.approx(full.p5, abs=0.01)
    assert sample.area_below_min_mm2 == pytest.approx(full.area_below_min_mm2, rel=0.05)
    assert sample == wall_thickness(mesh, min_wall_mm=1.0, max_faces=len(mesh.faces) // 4)  # seeded


# --- small features -------------------------------------------------------------------------


def test_small_pieces_and_cavities_against_the_resolution():
    big = trimesh.creation.icosphere(3, radius=10.0)
    speck = trimesh.creation.box(extents=(0.3, 0.2, 0.25))
    speck.apply_translation([20.0, 0.0, 0.0])
    bubble = trimesh.creation.box(extents=(0.3, 0.3, 0.3))
    bubble.invert()  # a cavity inside the sphere
    mesh = trimesh.util.concatenate([big, speck, bubble])
    fdm = small_features(mesh, resolution_mm=PROCESSES["fdm"].resolution_mm)
    assert (fdm.pieces_below_resolution, fdm.cavities_below_resolution) == (1, 1)
    assert not fdm.passes
    # the speck is 0.2 to 0.3 mm thick: its whole area is thinner than 0.4 mm; the sphere's
    # and the bubble's walls (from the bubble out to the sphere) are 9.8 mm or more
    assert fdm.thin_area_mm2 == pytest.approx(speck.area, rel=1e-6)
    sla = small_features(mesh, resolution_mm=PROCESSES["sla"].resolution_mm)
    assert (sla.pieces_below_resolution, sla.cavities_below_resolution, sla.thin_area_mm2) == (0, 0, 0.0)
    assert sla.passes


def test_bad_limits_are_refused():
    sphere = trimesh.creation.icosphere(1)
    with pytest.raises(ValueError, match="min_wall_mm"):
        wall_thickness(sphere, min_wall_mm=0.0)
    with pytest.raises(ValueError, match="process must be one of"):
        print_checks(sphere, process="sls")
    with pytest.raises(ValueError, match="> 0 mm"):
        dataclasses.replace(PROCESSES["sla"], resolution_mm=-1.0)


def test_rays_that_escape_an_open_mesh_report_none():
    square = TriangleMesh(np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float), [[0, 1, 2], [0, 2, 3]])
    assert np.all(np.isinf(face_thickness(square)))
    report = print_checks(square).as_dict()
    assert report["wall_thickness_mm"] == {"min": None, "p5": None, "area_below_min_mm2": 0.0}
    with pytest.raises(ValueError, match="max_faces"):
        wall_thickness(square, min_wall_mm=1.0, max_faces=0)


def test_creases_at_a_cut_organ_are_not_read_as_thin_walls(totalseg_dir):
    # The stomach of the real 20-slice CT's labels is cut by the field of view at both
    # ends. Decimated, it has a few acute creases (one by the rim of the cut): a ray
    # from a face beside one crosses the crease of its own edge within a fraction of
    # a millimetre (it read 0.14 mm) although the organ is thick there.
    from scipy import ndimage

    from medrecon.mesh import MeshOptions, build_organ_meshes

    labels = load_labels(totalseg_dir / "example_seg_dicom.nii.gz", names=totalseg_dir / "class_map_total.json")
    stomach = labels.label_of("stomach")
    mask = np.asarray(labels.array) == stomach
    # ground truth from the labels: no part of the mask is thinner than 3 pixels in any
    # slice (an opening with a 3 x 3 square keeps every voxel), i.e. about 2.9 mm
    assert labels.spacing[0] < 1.0 and labels.spacing[1] < 1.0
    assert np.array_equal(ndimage.binary_opening(mask, structure=np.ones((3, 3, 1), bool)), mask)
    mesh = build_organ_meshes(labels, MeshOptions(decimate=0.75), organs=[stomach])[0].mesh
    thickness = face_thickness(mesh)
    assert np.nanmin(thickness) >= 1.0
    # the creases are a handful of faces; every other face is measured
    assert 0 < np.count_nonzero(np.isnan(thickness)) <= 5
