"""LPS (i, j, k) <-> napari (z, y, x) geometry, checked against napari's own transforms."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

napari = pytest.importorskip("napari")
trimesh = pytest.importorskip("trimesh")

from napari.layers import Image, Labels, Surface  # noqa: E402

from medrecon.volume import LabelMap, Volume  # noqa: E402
from napari_plugin._geometry import (  # noqa: E402
    data_to_world_matrix,
    layer_affine,
    lps_affine,
    mesh_to_layer,
    surface_to_mesh,
    transform_matrix,
)
from napari_plugin._layers import (  # noqa: E402
    image_layer_data,
    labelmap_from_layer,
    labels_layer_data,
    layer_names,
    surface_layer_data,
    volume_from_layer,
)

pytestmark = pytest.mark.napari


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _oblique_affine(seed: int = 0, *, flip: bool = True) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = _rotation(seed) @ np.diag([0.8, 1.3, 2.5])
    if flip:
        a[:3, 0] *= -1  # a reflection, as RAS<->LPS and row-flipped grids are
    a[:3, 3] = [-120.5, 33.0, -700.25]
    return a


def test_layer_affine_maps_kji_to_zyx_of_the_same_voxel():
    a = _oblique_affine()
    m = layer_affine(a)
    ijk = np.array([[0, 0, 0], [3, 7, 1], [10.5, 2.25, 4]])
    lps = ijk @ a[:3, :3].T + a[:3, 3]
    kji1 = np.c_[ijk[:, ::-1], np.ones(len(ijk))]
    zyx = (kji1 @ m.T)[:, :3]
    np.testing.assert_allclose(zyx, lps[:, ::-1], atol=1e-9)
    np.testing.assert_allclose(lps_affine(m), a, atol=1e-12)


@pytest.mark.parametrize("affine", [np.diag([0.7, 0.9, 2.0, 1.0]), _oblique_affine(1)])
def test_image_layer_places_voxels_where_the_volume_does(affine):
    vol = Volume(np.zeros((6, 5, 4), np.float32), affine, units="HU")
    data, kwargs, kind = image_layer_data(vol, name="ct")
    layer = Image(data, **kwargs)
    assert kind == "image" and layer.data.shape == (4, 5, 6)
    for ijk in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
        world = np.asarray(layer.data_to_world(ijk[::-1]))  # napari's own transform
        np.testing.assert_allclose(world, vol.voxel_to_world([ijk])[0][::-1], atol=1e-6)
    assert kwargs["contrast_limits"] == (-160.0, 240.0)
    back = volume_from_layer(layer)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-9)
    assert back.units == "HU" and back.shape == vol.shape


def test_axial_view_is_radiological():
    # identity LPS affine: +i = patient left, +j = posterior
    vol = Volume(np.zeros((4, 3, 2), np.float32), np.eye(4))
    data, kwargs, _ = image_layer_data(vol)
    layer = Image(data, **kwargs)
    z, y, x = layer.data_to_world((0, 1, 0))
    assert (z, x) == (0, 0) and y > 0  # row index grows downwards = posterior: anterior up
    z, y, x = layer.data_to_world((0, 0, 1))
    assert (z, y) == (0, 0) and x > 0  # column index grows rightwards = patient left


def test_transform_matrix_matches_napari_for_every_transform_kind():
    layer = Surface(
        (np.random.default_rng(0).random((5, 3)), np.array([[0, 1, 2], [1, 2, 3]])),
        scale=(2.0, 0.5, 1.5),
        translate=(10.0, -4.0, 3.0),
        rotate=_rotation(3),
        shear=(0.1, -0.2, 0.05),
        affine=_oblique_affine(4),
    )
    m = data_to_world_matrix(layer)
    state = layer.as_layer_data_tuple()[1]
    np.testing.assert_allclose(transform_matrix(state), m, atol=1e-9)
    for p in [(0, 0, 0), (1.0, 2.0, 3.0), (-4.0, 0.5, 7.0)]:
        np.testing.assert_allclose(m @ [*p, 1.0], [*layer.data_to_world(p), 1.0], atol=1e-9)


def test_mesh_round_trip_keeps_position_and_outward_winding():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
    sphere.apply_translation([30.0, -20.0, 100.0])  # LPS mm
    verts, faces = mesh_to_layer(sphere)
    np.testing.assert_allclose(verts, sphere.vertices[:, ::-1], atol=1e-4)
    # outward normals in napari's (z, y, x) frame: positive signed volume there
    assert trimesh.Trimesh(verts, faces, process=False).volume > 0
    back = surface_to_mesh((verts, faces), {})
    np.testing.assert_allclose(back.vertices, sphere.vertices, atol=1e-4)
    assert back.volume == pytest.approx(sphere.volume, rel=1e-6)
    assert back.is_watertight and back.volume > 0


def test_surface_export_applies_user_scale_and_translate():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=5.0)
    (verts, faces), kwargs, kind = surface_layer_data(sphere, name="ball", label=5)
    assert kind == "surface"
    layer = Surface((verts, faces), scale=(2.0, 2.0, 2.0), translate=(1.0, 2.0, 3.0))
    before = [np.array(d, copy=True) for d in layer.data]
    mesh = surface_to_mesh(layer.data, layer.as_layer_data_tuple()[1])
    expected_zyx = 2.0 * verts + [1.0, 2.0, 3.0]
    np.testing.assert_allclose(mesh.vertices, expected_zyx[:, ::-1], atol=1e-4)
    assert mesh.volume == pytest.approx(8 * sphere.volume, rel=1e-6)
    for a, b in zip(layer.data, before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert tuple(layer.scale) == (2.0, 2.0, 2.0)


def test_labels_layer_round_trip_keeps_names_and_grid():
    array = np.zeros((5, 4, 3), np.uint8)
    array[1:3, 1:3, 1] = 5
    array[4, 0, 2] = 1
    labels = LabelMap(array, _oblique_affine(2), names={5: "liver", 1: "spleen"})
    data, kwargs, kind = labels_layer_data(labels, name="seg")
    layer = Labels(data, **kwargs)
    assert kind == "labels"
    assert layer_names(layer) == {5: "liver", 1: "spleen"}
    # napari shows the organ name of the label under the cursor from `features`
    row = layer.features[layer.features["index"] == 5]
    assert row["name"].item() == "liver"
    back = labelmap_from_layer(layer)
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.affine, labels.affine, atol=1e-9)
    assert not np.allclose(layer.get_color(5), layer.get_color(1))


@pytest.mark.parametrize(
    ("vertical", "horizontal", "depth"),
    [("down", "right", "away"), ("up", "right", "towards"), ("up", "left", "away"), ("down", "left", "towards")],
)
def test_3d_axes_are_made_right_handed(vertical, horizontal, depth):
    from napari.components import ViewerModel

    from napari_plugin._layers import use_patient_handedness

    viewer = ViewerModel()
    viewer.camera.orientation = ("towards", vertical, horizontal)
    use_patient_handedness(viewer)
    got = tuple(str(o.value) for o in viewer.camera.orientation)
    assert got == (depth, vertical, horizontal)
    # screen frame (right, down, into the screen) is right-handed; count sign flips from it
    signs = [1 if got[0] == "away" else -1, 1 if got[1] == "down" else -1, 1 if got[2] == "right" else -1]
    assert np.prod(signs) == 1


def test_ct_window_for_unitless_images_that_look_like_ct(totalseg_dir):
    from medrecon.io import load

    ct = load(totalseg_dir / "example_ct_sm.nii.gz")  # NIfTI: no units recorded
    assert ct.units == ""
    assert image_layer_data(ct)[1]["contrast_limits"] == (-160.0, 240.0)
    mr = Volume(np.random.default_rng(0).uniform(0, 800, (20, 20, 20)).astype(np.float32), np.eye(4))
    assert "contrast_limits" not in image_layer_data(mr)[1]
    tagged = Volume(np.asarray(ct.array), ct.affine, modality="MR")
    assert "contrast_limits" not in image_layer_data(tagged)[1]
