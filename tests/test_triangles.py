"""TriangleMesh, the one mesh type of the pipeline: placement against trimesh, conversions."""

import subprocess
import sys

import numpy as np
import pytest
import trimesh
from _builders import ellipsoid_mask, oblique_grid

from medrecon.mesh import OrganMesh, check, merge_scene, repair
from medrecon.mesh.smooth import smooth
from medrecon.surface import mask_surface
from medrecon.triangles import TriangleMesh


def tetrahedron():
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return TriangleMesh(vertices, faces)


@pytest.mark.parametrize("flip", [True, False])
def test_transformed_matches_trimesh_apply_transform(flip):
    affine, _ = oblique_grid((0.8, 1.1, 2.5), 20.0, flip=flip)
    assert (np.linalg.det(affine[:3, :3]) < 0) == flip
    mesh = tetrahedron()
    ours = mesh.transformed(affine)
    theirs = mesh.to_trimesh().apply_transform(affine)
    assert np.allclose(ours.vertices, theirs.vertices, rtol=0, atol=1e-12)
    assert np.array_equal(ours.faces, theirs.faces)
    # still outward: positive volume after a reflection, as trimesh keeps it
    assert tetrahedron().to_trimesh().volume == pytest.approx(1.0)
    assert ours.to_trimesh().volume == pytest.approx(abs(np.linalg.det(affine[:3, :3])), rel=1e-9)
    assert np.array_equal(mesh.faces, tetrahedron().faces)  # the input is not modified


def test_transformed_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        tetrahedron().transformed(np.eye(3))
    with pytest.raises(ValueError, match=r"\(V, 3\)"):
        TriangleMesh(np.zeros((4, 2)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"\(F, 3\)"):
        TriangleMesh(np.zeros((4, 3)), np.zeros((2, 4)))


def test_trimesh_round_trip_and_dtypes():
    mesh = tetrahedron()
    assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64
    back = TriangleMesh.from_trimesh(mesh.to_trimesh())
    assert np.array_equal(back.vertices, mesh.vertices) and np.array_equal(back.faces, mesh.faces)
    with pytest.raises(AttributeError):
        mesh.vertices = np.zeros((4, 3))  # frozen


def test_concatenate_reindexes_faces():
    a = tetrahedron()
    b = TriangleMesh(a.vertices + [10.0, 0.0, 0.0], a.faces)
    both = TriangleMesh.concatenate([a, b])
    assert len(both.vertices) == 8 and len(both.faces) == 8
    assert np.array_equal(both.faces[4:], b.faces + 4)
    # two disjoint tetrahedra of volume 1 each, both outward
    assert both.to_trimesh().volume == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no meshes"):
        TriangleMesh.concatenate([])


def test_mask_surface_under_a_flipped_affine_is_outward_and_printable():
    mask, affine = ellipsoid_mask((12.0, 9.0, 7.0), (0.9, 1.0, 1.8))
    assert np.linalg.det(affine[:3, :3]) < 0
    mesh = mask_surface(mask, affine)
    assert isinstance(mesh, TriangleMesh)
    assert mesh.to_trimesh().volume > 0 and check(mesh).printable


def test_steps_take_and_give_triangle_meshes():
    mask, affine = ellipsoid_mask((10.0, 8.0, 6.0), (1.0, 1.0, 1.5))
    raw = mask_surface(mask, affine)
    smoothed = smooth(raw)
    assert isinstance(smoothed, TriangleMesh) and smoothed is not raw
    assert smooth(raw, 0.0) is raw  # nothing to do: the same (immutable) mesh
    # a hole: repair closes it and gives back a TriangleMesh
    holed = TriangleMesh(smoothed.vertices, smoothed.faces[1:])
    fixed, state = repair(holed)
    assert isinstance(fixed, TriangleMesh) and state.printable
    assert len(holed.faces) == len(smoothed.faces) - 1  # the input is not modified


def test_organ_mesh_is_frozen_and_gives_trimesh_on_request():
    mesh = tetrahedron()
    organ = OrganMesh(label=3, name="kidney_left", mesh=mesh, raw=mesh)
    assert organ.mesh is mesh and organ.report == {}
    converted = organ.trimesh()
    assert isinstance(converted, trimesh.Trimesh) and np.array_equal(converted.faces, mesh.faces)
    with pytest.raises(AttributeError):
        organ.name = "liver"
    report = {"label": 3}
    organ = OrganMesh(3, "kidney_left", mesh, mesh, report)
    report["label"] = 4
    assert organ.report == {"label": 3}  # its own copy
    with pytest.raises(TypeError, match="TriangleMesh.from_trimesh"):
        OrganMesh(3, "kidney_left", mesh.to_trimesh(), mesh)
    scene = merge_scene([organ, OrganMesh(4, "x", mesh, mesh)])
    assert isinstance(scene, TriangleMesh) and len(scene.faces) == 8


def test_mesh_command_does_not_import_trimesh(tmp_path):
    # trimesh's import costs ~0.4 s: a label map -> STL run must not need it
    from medrecon.io import save
    from medrecon.volume import LabelMap

    mask, affine = ellipsoid_mask((10.0, 8.0, 6.0), (1.0, 1.0, 1.5))
    save(LabelMap(mask.astype(np.uint8), affine, names={1: "liver"}), tmp_path / "l.nii.gz")
    code = (
        "import sys\n"
        "from medrecon.cli import main\n"
        f"assert main(['mesh', {str(tmp_path / 'l.nii.gz')!r}, '-o', {str(tmp_path / 'o')!r}, "
        "'--decimate', '0.5']) == 0\n"
        "assert 'trimesh' not in sys.modules, 'trimesh was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "o" / "meshes" / "liver.stl").is_file()
