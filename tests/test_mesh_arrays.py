"""MeshArrays, the plain-array mesh of the pipeline: placement against trimesh, conversions."""

import subprocess
import sys

import numpy as np
import pytest
import trimesh
from _builders import ellipsoid_mask, oblique_grid

from medrecon.mesh import OrganMesh, check, repair
from medrecon.mesh.smooth import smooth
from medrecon.surface import MeshArrays, mask_surface, mask_surface_arrays
from medrecon.surface.arrays import as_trimesh, same_kind


def tetrahedron():
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return MeshArrays(vertices, faces)


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
        MeshArrays(np.zeros((4, 2)), np.zeros((0, 3)))


def test_mask_surface_arrays_is_mask_surface_under_a_flipped_affine():
    mask, affine = ellipsoid_mask((12.0, 9.0, 7.0), (0.9, 1.0, 1.8))
    assert np.linalg.det(affine[:3, :3]) < 0
    arrays = mask_surface_arrays(mask, affine)
    mesh = mask_surface(mask, affine)
    assert isinstance(arrays, MeshArrays) and isinstance(mesh, trimesh.Trimesh)
    assert np.array_equal(arrays.vertices, mesh.vertices) and np.array_equal(arrays.faces, mesh.faces)
    assert mesh.volume > 0 and check(arrays).printable


def test_steps_return_the_kind_they_were_given():
    mask, affine = ellipsoid_mask((10.0, 8.0, 6.0), (1.0, 1.0, 1.5))
    arrays = mask_surface_arrays(mask, affine)
    smoothed = smooth(arrays)
    smoothed_trimesh = smooth(arrays.to_trimesh())
    assert isinstance(smoothed, MeshArrays) and isinstance(smoothed_trimesh, trimesh.Trimesh)
    assert np.array_equal(smoothed.vertices, smoothed_trimesh.vertices)
    # a hole: repair closes it and gives back MeshArrays
    holed = MeshArrays(smoothed.vertices, smoothed.faces[1:])
    fixed, state = repair(holed)
    assert isinstance(fixed, MeshArrays) and state.printable
    assert isinstance(same_kind(smoothed_trimesh, fixed.vertices, fixed.faces), trimesh.Trimesh)
    assert as_trimesh(smoothed_trimesh) is smoothed_trimesh


def test_organ_mesh_gives_trimesh_from_arrays_and_keeps_a_given_trimesh():
    arrays = tetrahedron()
    organ = OrganMesh(label=3, name="kidney_left", mesh=arrays, raw=arrays)
    assert isinstance(organ.mesh, trimesh.Trimesh) and organ.mesh is organ.mesh
    assert np.array_equal(organ.mesh.faces, arrays.faces) and organ.report == {}
    given = arrays.to_trimesh()
    organ = OrganMesh(3, "kidney_left", given, given, {"label": 3})
    assert organ.mesh is given and organ.arrays.vertices.shape == (4, 3)


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
