"""The lighter copy of a mesh that napari draws, and the weld of coincident vertices.

Ground truth: an analytic sphere (radius, volume), trimesh's own watertight and
winding checks, and ``np.unique(axis=0)`` for the weld.
"""

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")

from medrecon.mesh.decimate import lighter_copy  # noqa: E402
from medrecon.mesh.shells import weld_coincident  # noqa: E402
from medrecon.triangles import TriangleMesh  # noqa: E402

RADIUS = 40.0


@pytest.fixture(scope="module")
def sphere() -> TriangleMesh:
    ball = trimesh.creation.icosphere(subdivisions=6, radius=RADIUS)  # 81 920 faces
    return TriangleMesh.from_trimesh(ball)


@pytest.mark.parametrize("target", [20_000, 4_000])
def test_lighter_copy_in_slabs_is_seamless_and_stays_on_the_sphere(sphere, target):
    copy = lighter_copy(sphere, target, piece_faces=9_000)  # 10 slabs, then 11 shifted ones
    assert 0.85 * target <= len(copy.faces) <= 1.1 * target
    mesh = trimesh.Trimesh(copy.vertices, copy.faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent  # the cut edges were welded back
    assert mesh.volume > 0  # still outward
    radius = np.linalg.norm(copy.vertices, axis=1)
    assert np.all(np.abs(radius - RADIUS) < 0.01 * RADIUS)
    sphere_volume = 4.0 / 3.0 * np.pi * RADIUS**3
    assert mesh.volume == pytest.approx(sphere_volume, rel=0.01)


def test_lighter_copy_leaves_small_meshes_and_refuses_absurd_targets(sphere):
    assert lighter_copy(sphere, len(sphere.faces)) is sphere
    with pytest.raises(ValueError, match="target_faces"):
        lighter_copy(sphere, 3)


def test_weld_matches_numpy_unique_rows():
    rng = np.random.default_rng(7)
    points = rng.integers(0, 6, size=(5_000, 3)).astype(np.float64) * 0.5  # many exact repeats
    points[::7] += 1e-9  # near, not equal: kept apart
    unique, inverse = weld_coincident(points)
    expected, expected_inverse = np.unique(points, axis=0, return_inverse=True)
    np.testing.assert_array_equal(unique, expected)
    np.testing.assert_array_equal(inverse, expected_inverse.ravel())
    np.testing.assert_array_equal(unique[inverse], points)
    empty, none = weld_coincident(np.zeros((0, 3)))
    assert empty.shape == (0, 3) and none.shape == (0,)
