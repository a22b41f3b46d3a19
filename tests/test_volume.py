import dataclasses

import numpy as np
import pytest

from medrecon.errors import GeometryError
from medrecon.volume import LabelMap, Volume


def oblique_flipped_affine():
    # 30 degrees about z, i axis flipped, anisotropic spacing
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([-0.8, 0.9, 2.5])
    a[:3, 3] = [10.0, -20.0, 30.0]
    return a


def test_geometry_helpers_roundtrip():
    a = oblique_flipped_affine()
    v = Volume(np.zeros((4, 5, 6), np.float32), a)
    assert np.allclose(v.spacing, [0.8, 0.9, 2.5])
    assert np.allclose(v.origin, [10, -20, 30])
    assert v.is_oblique
    ijk = np.array([[1.0, 2.0, 3.0], [0.5, 0, 5]])
    assert np.allclose(v.world_to_voxel(v.voxel_to_world(ijk)), ijk)
    # voxel (1,0,0) lies 0.8 mm along the negative rotated x axis
    assert np.allclose(v.voxel_to_world([[1, 0, 0]])[0] - v.origin, [-0.8 * np.cos(np.pi / 6), -0.8 * np.sin(np.pi / 6), 0])


def test_volume_is_immutable_and_does_not_touch_caller_array():
    arr = np.zeros((2, 2, 2))
    v = Volume(arr, np.eye(4))
    with pytest.raises(ValueError):
        v.array[0, 0, 0] = 1
    arr[0, 0, 0] = 5  # caller keeps a writable array
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.affine = np.eye(4)


@pytest.mark.parametrize(
    "bad",
    [np.eye(3), np.full((4, 4), np.nan), np.diag([1.0, 0.0, 1.0, 1.0]), np.diag([1.0, np.inf, 1.0, 1.0])],
)
def test_bad_affines_are_refused(bad):
    with pytest.raises(GeometryError):
        Volume(np.zeros((2, 2, 2)), bad)


def test_orientation_codes_and_reorient_keep_world_positions():
    a = np.diag([-1.0, 1.0, -2.0, 1.0])  # i -> R, j -> P, k -> I
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    v = Volume(arr, a)
    assert v.orientation == "RPI"
    r = v.reorient("LPS")
    assert r.orientation == "LPS"
    # every voxel value sits at the same world point after reorientation
    for ijk in [(0, 0, 0), (1, 2, 3), (1, 0, 2)]:
        w = v.voxel_to_world([ijk])
        rijk = np.round(r.world_to_voxel(w)[0]).astype(int)
        assert r.array[tuple(rijk)] == v.array[ijk]


def test_label_resampling_is_nearest_and_image_linear():
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[1:3, 1:3, 1:3] = 7
    lab = LabelMap(arr, np.eye(4), names={7: "liver"})
    fine = lab.resample_spacing(0.5)
    assert set(np.unique(fine.array)) == {0, 7}
    assert fine.array.dtype == np.uint8
    img = Volume(arr.astype(np.float32), np.eye(4))
    fine_img = img.resample_spacing(0.5)
    assert len(np.unique(fine_img.array)) > 2  # interpolated values
    # the centre of the field of view does not move
    assert np.allclose(fine.voxel_to_world((np.array(fine.shape) - 1) / 2), [1.5, 1.5, 1.5])


def test_label_map_names_and_float_integers():
    lab = LabelMap(np.array([[[0.0, 5.0]]]), np.eye(4), names={"5": "liver"})
    assert lab.labels == [5]
    assert lab.name_of(5) == "liver" and lab.name_of(9) == "label_9"
    assert lab.label_of("liver") == 5 and lab.label_of("5") == 5
    with pytest.raises(GeometryError, match="integers"):
        LabelMap(np.array([[[0.5]]]), np.eye(4))
