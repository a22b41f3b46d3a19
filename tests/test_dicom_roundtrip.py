"""Volumes written by ``medrecon.io.dicom_write`` load back on the same grid with the same HU."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from medrecon.io.dicom import load_dicom
from medrecon.io.dicom_write import write_dicom_series
from medrecon.volume import Volume


def _volume(affine: np.ndarray) -> Volume:
    rng = np.random.default_rng(3)
    hu = rng.integers(-1024, 1500, size=(9, 7, 5)).astype(np.float32)  # integer HU: lossless
    return Volume(hu, affine, modality="CT", units="HU")


def test_flipped_axes_round_trip(tmp_path):
    affine = np.diag([-0.8, 0.9, -2.5, 1.0])  # i to the right, k inferior
    affine[:3, 3] = (40.0, -30.0, 100.0)
    original = _volume(affine)
    write_dicom_series(original, tmp_path)
    loaded = load_dicom(tmp_path)
    back = loaded.reorient(original.orientation)
    assert back.same_grid(original, atol=1e-3)
    np.testing.assert_array_equal(back.array, original.array)


@pytest.mark.parametrize("seed", [0, 1])
def test_oblique_round_trip(tmp_path, seed):
    rot = Rotation.random(random_state=seed).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rot * [0.7, 0.75, 2.0]
    affine[:3, 3] = (-12.0, 8.0, 33.0)
    original = _volume(affine)
    write_dicom_series(original, tmp_path)
    loaded = load_dicom(tmp_path)
    assert loaded.is_oblique
    # same voxel centres: map ours onto the original's index space, it must be integral
    ijk = np.argwhere(np.ones(original.shape, bool))
    mapped = loaded.world_to_voxel(original.voxel_to_world(ijk))
    np.testing.assert_allclose(mapped, np.round(mapped), atol=1e-3)
    idx = np.round(mapped).astype(int)
    np.testing.assert_array_equal(loaded.array[tuple(idx.T)], original.array[tuple(ijk.T)])
