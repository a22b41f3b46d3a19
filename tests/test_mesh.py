"""Post-processing of organ meshes: smoothing, decimation, repair, hollowing, report."""

import numpy as np
import pytest
import trimesh
from _builders import CENTRE, ellipsoid_mask

from medrecon.errors import EmptySegmentationError, InputError
from medrecon.mesh import (
    MeshOptions,
    build_organ_meshes,
    check,
    filter_components,
    merge_scene,
    repair,
)
from medrecon.mesh.decimate import decimate
from medrecon.mesh.hollow import hollow
from medrecon.mesh.report import distances_to_surface, mesh_report, point_triangle_distance
from medrecon.mesh.smooth import (
    VTK_TOLERANCE,
    pass_band,
    sinc_coefficients,
    smooth,
    windowed_sinc,
)
from medrecon.surface import mask_surface
from medrecon.triangles import TriangleMesh
from medrecon.volume import LabelMap


@pytest.fixture(scope="module")
def sphere_2mm():
    """A 25 mm sphere voxelised with 2 mm slices on an oblique, flipped grid."""
    mask, affine = ellipsoid_mask((25.0, 25.0, 25.0), (0.8, 0.8, 2.0))
    return mask, affine, mask_surface(mask, affine)


def test_staircase_then_default_smoothing_matches_analytic_sphere(sphere_2mm):
    _, _, raw = sphere_2mm
    volume, area = 4 / 3 * np.pi * 25.0**3, 4 * np.pi * 25.0**2
    # the raw surface of a binary mask is a staircase: far too much area
    assert raw.to_trimesh().area / area - 1 > 0.08
    smoothed = smooth(raw).to_trimesh()
    assert abs(smoothed.volume / volume - 1) < 0.02
    assert abs(smoothed.area / area - 1) < 0.04
    assert np.linalg.norm(smoothed.center_mass - CENTRE) < 0.5


def test_smoothing_factor_zero_is_identity_and_range_checked(sphere_2mm):
    _, _, raw = sphere_2mm
    assert np.array_equal(smooth(raw, 0.0).vertices, raw.vertices)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(InputError, match="Slicer") as info:
            smooth(raw, bad)
        assert "\n" not in str(info.value)
        with pytest.raises(InputError, match="Slicer"):
            MeshOptions(smooth=bad)


def test_every_smoothing_factor_keeps_a_low_pass_filter():
    # factors 0.1 and 0.3 once sent the cut-off search astray: coefficients of 1e34
    for factor in np.linspace(0.01, 1.0, 100):
        band = pass_band(factor)
        c = sinc_coefficients(band)
        # Chebyshev axis: a Laplacian eigenvalue k sits at cos(theta) = 1 - k / 2
        assert np.polynomial.chebyshev.chebval(1.0 - 0.5 * band, c) == pytest.approx(1.0, abs=1e-9)
        assert np.polynomial.chebyshev.chebval(1.0, c) == pytest.approx(1.0, abs=1e-4)  # k = 0: volume
        assert np.all(np.abs(np.polynomial.chebyshev.chebval(np.linspace(-1.0, 1.0, 201), c)) < 1.01)


@pytest.mark.parametrize("factor", [0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0])
def test_every_smoothing_factor_gives_a_closed_mesh_of_the_sphere_volume(sphere_2mm, factor):
    _, _, raw = sphere_2mm
    volume = 4 / 3 * np.pi * 25.0**3
    out = smooth(raw, factor)
    assert check(out).printable
    assert abs(out.to_trimesh().volume / volume - 1) < 0.02


def test_tight_pass_band_keeps_thin_structures(totalseg_dir):
    from medrecon.io import load_labels

    labels = load_labels(totalseg_dir / "example_seg.nii.gz", names=totalseg_dir / "class_map_total.json")
    raw = mask_surface(labels.mask(labels.label_of("rib_right_11")), labels.affine)
    raw_volume = raw.to_trimesh().volume
    ours = smooth(raw).to_trimesh().volume / raw_volume - 1
    vtk_like = trimesh.Trimesh(
        windowed_sinc(raw.vertices, raw.faces, band=pass_band(0.5), tolerance=VTK_TOLERANCE), raw.faces
    ).volume / raw_volume - 1
    assert -0.12 < ours < 0 and vtk_like < ours - 0.05


def test_windowed_sinc_is_a_low_pass_filter():
    c = sinc_coefficients(pass_band(0.5))
    # response to a Laplacian eigenvalue k = 2 (1 - cos theta), theta in [0, pi/2]
    theta = np.linspace(0, np.pi / 2, 91)
    response = np.polynomial.chebyshev.chebval(np.cos(theta), c)
    assert response[0] == pytest.approx(1.0, abs=1e-3)  # k = 0: position and volume kept
    assert np.all(response[theta <= 0.1] > 0.99)  # the pass band, theta_pb = acos(1 - 0.005)
    assert np.all(np.abs(response[theta >= 1.2]) < 0.01)  # voxel-scale wiggles removed


def test_smoothing_matches_vtk_windowed_sinc_with_slicer_settings():
    vtk_np = pytest.importorskip("vtkmodules.util.numpy_support")
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
    from vtkmodules.vtkFiltersCore import vtkWindowedSincPolyDataFilter

    mask, affine = ellipsoid_mask((14.0, 10.0, 8.0), (0.8, 0.9, 2.0))
    raw = mask_surface(mask, affine)
    poly = vtkPolyData()
    points = vtkPoints()
    points.SetData(vtk_np.numpy_to_vtk(np.asarray(raw.vertices)))
    poly.SetPoints(points)
    cells = vtkCellArray()
    offsets = np.arange(0, 3 * len(raw.faces) + 1, 3, dtype=np.int64)
    cells.SetData(vtk_np.numpy_to_vtkIdTypeArray(offsets, deep=True),
                  vtk_np.numpy_to_vtkIdTypeArray(np.asarray(raw.faces, np.int64).ravel(), deep=True))
    poly.SetPolys(cells)
    f = vtkWindowedSincPolyDataFilter()
    f.SetInputData(poly)
    # vtkBinaryLabelmapToClosedSurfaceConversionRule with smoothing factor 0.5
    f.SetNumberOfIterations(20)
    f.SetPassBand(10 ** (-4 * 0.5))
    f.BoundarySmoothingOff()
    f.FeatureEdgeSmoothingOff()
    f.NonManifoldSmoothingOn()
    f.NormalizeCoordinatesOn()
    f.Update()
    theirs = vtk_np.vtk_to_numpy(f.GetOutput().GetPoints().GetData())
    ours = windowed_sinc(raw.vertices, raw.faces, band=pass_band(0.5), tolerance=VTK_TOLERANCE)
    moved = np.linalg.norm(ours - raw.vertices, axis=1).mean()
    diff = np.linalg.norm(ours - theirs, axis=1)
    assert moved > 0.1
    assert diff.mean() < 0.1 * moved and diff.max() < 0.1


def test_decimation_is_checked_and_stays_close(sphere_2mm):
    _, _, raw = sphere_2mm
    smoothed = smooth(raw)
    mesh, state, applied = decimate(smoothed, reduction=0.8)
    assert applied > 0
    assert state.printable and check(mesh).printable
    assert len(mesh.faces) < 0.5 * len(smoothed.faces)
    d = distances_to_surface(np.asarray(mesh.vertices), smoothed)
    assert np.percentile(d, 95) < 0.3
    by_count, _, _ = decimate(smoothed, target_faces=2000)
    assert len(by_count.faces) <= 2200
    with pytest.raises(ValueError, match="exactly one"):
        decimate(smoothed)


def two_cubes(offset):
    a = trimesh.creation.box((1, 1, 1))
    b = trimesh.creation.box((1, 1, 1))
    b.apply_translation(offset)
    return TriangleMesh.from_trimesh(trimesh.util.concatenate([a, b]))


def test_check_finds_nonmanifold_vertices_and_edges():
    # touching at one corner: watertight, manifold edges, one non-manifold vertex
    corner = repair(two_cubes((1, 1, 1)))[0]
    state = check(corner)
    assert state.watertight and not state.manifold
    assert state.nonmanifold_vertices == 1 and state.nonmanifold_edges == 0
    # sharing one edge: that edge has four faces
    edge = check(repair(two_cubes((1, 1, 0)))[0])
    assert edge.nonmanifold_edges == 1 and not edge.watertight
    apart = check(two_cubes((3, 0, 0)))
    assert apart.printable and apart.shells == 2


def test_repair_fills_holes_and_fixes_winding_and_junk():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    faces = np.asarray(sphere.faces).copy()
    faces[:40] = faces[:40, ::-1]  # flipped triangles
    holed = np.delete(faces, [100, 101, 300], axis=0)  # holes
    junk = np.vstack([holed, holed[:5], [[0, 0, 1]]])  # duplicates and a degenerate face
    broken = TriangleMesh(sphere.vertices, junk)
    assert not check(broken).watertight
    fixed, state = repair(broken)
    assert state.printable
    assert fixed.to_trimesh().volume == pytest.approx(sphere.volume, rel=0.01)
    inverted = TriangleMesh(sphere.vertices, np.asarray(sphere.faces)[:, ::-1])
    assert repair(inverted)[0].to_trimesh().volume > 0


def test_repair_removes_decimation_fins():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
    a, b = (int(x) for x in sphere.faces[0][:2])
    tip = len(sphere.vertices)
    vertices = np.vstack([sphere.vertices, [[0.0, 0.0, 15.0]]])
    # a zero-thickness double-sided triangle hanging on an existing edge
    faces = np.vstack([sphere.faces, [[a, b, tip], [b, a, tip]]])
    finned = TriangleMesh(vertices, faces)
    assert check(finned).nonmanifold_edges == 1
    fixed, state = repair(finned)
    assert state.printable and len(fixed.faces) == len(sphere.faces)


def test_component_filtering_never_drops_the_organ():
    big = trimesh.creation.icosphere(radius=10.0)
    small = trimesh.creation.icosphere(radius=1.0)
    small.apply_translation((30, 0, 0))
    both = TriangleMesh.from_trimesh(trimesh.util.concatenate([big, small]))

    def pieces(mesh):
        return len(mesh.to_trimesh().split())

    assert pieces(filter_components(both, keep_largest=True)) == 1
    assert pieces(filter_components(both, min_volume_mm3=1.0)) == 2
    assert pieces(filter_components(both, min_volume_mm3=10.0)) == 1
    assert pieces(filter_components(both, min_volume_mm3=1e9)) == 1


def test_hollow_shell_has_the_requested_wall():
    mask, affine = ellipsoid_mask((20.0, 20.0, 20.0), (0.8, 0.9, 1.2))
    outer = smooth(mask_surface(mask, affine))
    shell, state = hollow(outer, mask, affine, 3.0, smoothing=0.5)
    assert state.printable and state.shells == 2
    shell = shell.to_trimesh()
    cavity = min(shell.split(only_watertight=False), key=lambda p: abs(p.volume))
    assert cavity.volume < 0 or trimesh.Trimesh(cavity.vertices, cavity.faces).volume < 0
    wall = distances_to_surface(np.asarray(cavity.vertices), outer)
    assert 2.5 < wall.min() and wall.max() < 3.5
    analytic = 4 / 3 * np.pi * (20.0**3 - 17.0**3)
    assert shell.volume == pytest.approx(analytic, rel=0.08)
    # a part thinner than two walls stays solid
    solid, solid_state = hollow(outer, mask, affine, 25.0)
    assert solid_state.shells == 1
    assert solid.to_trimesh().volume == pytest.approx(outer.to_trimesh().volume)


def test_point_triangle_distance_regions():
    a, b, c = np.array([[0.0, 0, 0]]), np.array([[1.0, 0, 0]]), np.array([[0.0, 1, 0]])
    cases = {(0.2, 0.2, 3.0): 3.0, (-1.0, -1.0, 0.0): np.sqrt(2), (2.0, 0.0, 0.0): 1.0,
             (0.5, -2.0, 0.0): 2.0, (1.0, 1.0, 0.0): np.sqrt(2) / 2}
    for p, expected in cases.items():
        assert point_triangle_distance(np.array([p]), a, b, c)[0] == pytest.approx(expected)


def test_report_numbers(sphere_2mm):
    mask, affine, raw = sphere_2mm
    voxel_mm3 = mask.sum() * abs(np.linalg.det(affine[:3, :3]))
    same = mesh_report(raw, raw=raw, voxel_volume_mm3=voxel_mm3)
    assert same["hd95_mm"] == pytest.approx(0.0, abs=1e-9)
    assert same["voxel_volume_ml"] == pytest.approx(voxel_mm3 / 1000)
    moved = TriangleMesh(raw.vertices + (0.5, 0, 0), raw.faces)
    shifted = mesh_report(moved, raw=raw)
    # a 0.5 mm shift: no point is further than 0.5 mm, most are near it on the flanks
    assert 0.2 < shifted["hd95_mm"] <= 0.5 + 1e-9
    assert shifted["watertight"] and shifted["manifold"] and shifted["shells"] == 1
    lo, hi = np.asarray(shifted["bbox_mm"])
    bounds = moved.to_trimesh().bounds
    assert np.allclose(lo, bounds[0]) and np.allclose(hi, bounds[1])


def small_label_map():
    g = np.mgrid[:50, :50, :24]
    array = np.zeros((50, 50, 24), np.uint8)
    array[((g[0] - 25) ** 2 + (g[1] - 25) ** 2 + ((g[2] - 12) * 2.5) ** 2) <= 18**2] = 5
    array[40:46, 3:9, 3:8] = 1
    array[3:5, 40:42, 18:20] = 1  # a second, small piece of the spleen
    array[2, 2, 2] = 52  # a single voxel
    return LabelMap(array, np.diag([-0.8, -0.8, 2.0, 1.0]), names={5: "liver", 1: "spleen", 52: "aorta"})


def test_build_organ_meshes_default_and_options():
    labels = small_label_map()
    calls = []
    organs = build_organ_meshes(labels, progress=lambda stage, f: calls.append((stage, f)))
    assert [o.name for o in organs] == ["spleen", "liver", "aorta"]
    assert calls[-1][1] == pytest.approx(1.0) and {s for s, _ in calls} == {"surfaces", "meshes"}
    for o in organs:
        r = o.report
        assert r["watertight"] and r["manifold"] and r["outward"], o.name
        assert r["mesh_volume_ml"] > 0
        assert r["voxel_volume_ml"] == pytest.approx(np.count_nonzero(labels.array == o.label) * 1.28 / 1000)
    # the single voxel keeps a closed, unsmoothed octahedron
    assert organs[2].report["mesh_volume_ml"] == pytest.approx(1.28 / 6 / 1000)
    assert organs[0].report["shells"] == 2
    largest = build_organ_meshes(labels, MeshOptions(keep_largest=True, decimate=0.5), organs=["spleen"])
    assert largest[0].report["shells"] == 1 and largest[0].report["faces"] < organs[0].report["faces"]
    raw = build_organ_meshes(labels, MeshOptions(smooth=0, decimate=0), organs=[5])
    assert raw[0].report["hd95_mm"] == pytest.approx(0.0, abs=1e-9)
    assert np.array_equal(raw[0].mesh.vertices, raw[0].raw.vertices)
    scene = merge_scene(organs)
    assert len(scene.faces) == sum(len(o.mesh.faces) for o in organs)


def test_build_organ_meshes_hollow_and_errors():
    labels = small_label_map()
    [liver] = build_organ_meshes(labels, MeshOptions(hollow_mm=3.0), organs=["liver"])
    assert liver.report["shells"] == 2 and liver.report["watertight"] and liver.report["outward"]
    assert liver.report["mesh_volume_ml"] < 0.7 * liver.report["voxel_volume_ml"]
    with pytest.raises(EmptySegmentationError):
        build_organ_meshes(labels.replace(array=np.zeros((3, 3, 3), np.uint8)))
    with pytest.raises(ValueError, match="decimate"):
        MeshOptions(decimate=1.0)
