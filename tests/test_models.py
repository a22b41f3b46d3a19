"""Segmentation: model grid exactness, the default model on a held-out phantom, fusion, OOM."""

import json

import numpy as np
import pytest
import torch

from medrecon.cli import main
from medrecon.errors import ModelError
from medrecon.evaluate import evaluate
from medrecon.io import load_labels, save
from medrecon.io.sidecar import sidecar_path
from medrecon.models import load_model, segment
from medrecon.models.card import ModelCard, SegModel
from medrecon.models.grid import GridMap
from medrecon.models.inference import (
    choose_fusion,
    mean_organ_confidence,
    plane_axis,
    predict_grid,
    predict_model_grid,
    resolve_planes,
)
from medrecon.models.nets import NetSpec, build_network
from medrecon.phantom import make_phantom
from medrecon.volume import LabelMap, Volume


def oblique_affine(seed=0):
    rng = np.random.default_rng(seed)
    perm = np.eye(3)[[2, 0, 1]] * np.array([[-1], [1], [-1]])  # permuted and flipped axes
    a, b = rng.uniform(0.05, 0.2, 2)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rot = rot @ np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ perm @ np.diag([0.8, 1.1, 2.6])
    affine[:3, 3] = rng.uniform(-50, 50, 3)
    return affine


def test_grid_map_matches_affine_resampling():
    affine, shape = oblique_affine(), (37, 45, 23)
    rng = np.random.default_rng(1)
    from scipy.ndimage import gaussian_filter

    image = gaussian_filter(rng.normal(size=shape), 2).astype(np.float32)
    grid = GridMap.build(affine, shape, spacing=(2.0, 2.0, 3.0), orientation="LPS")
    assert grid.shape == tuple(int(round(n * s / t)) for n, s, t in
                               zip([shape[a] for a in grid.axes],
                                   [np.linalg.norm(affine[:3, a]) for a in grid.axes], (2.0, 2.0, 3.0), strict=True))
    # linear resampling agrees with scipy's affine resampling (Volume.resample_to)
    ours = grid.image_to_model(image, fill=-5.0).numpy()
    ref = Volume(image, affine).resample_to(grid.affine, grid.shape, fill=-5.0).array
    assert np.abs(ours - ref)[2:-2, 2:-2, 2:-2].max() < 1e-5
    # nearest mapping back: each input voxel takes the model voxel whose centre is nearest
    model_labels = rng.integers(0, 250, size=grid.shape).astype(np.uint8)
    back = grid.labels_to_input(model_labels)
    ijk = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1).reshape(-1, 3)
    to_model = np.linalg.inv(grid.affine) @ affine
    exact = ijk @ to_model[:3, :3].T + to_model[:3, 3]
    t = np.clip(np.rint(exact).astype(int), 0, np.array(grid.shape) - 1)
    expected = model_labels[t[:, 0], t[:, 1], t[:, 2]].reshape(shape)
    # voxels exactly halfway between two model voxels may round either way
    clear = (np.abs(np.abs(exact - np.floor(exact)) - 0.5) > 1e-6).all(axis=1).reshape(shape)
    assert clear.mean() > 0.5
    assert np.array_equal(back[clear], expected[clear])


@pytest.fixture(scope="module")
def heldout():
    """Held-out phantom 0 and the default model's axial segmentation of it."""
    volume, truth = make_phantom(0)
    return volume, truth, segment(volume)


def test_default_model_on_heldout_phantom(heldout):
    volume, truth, labels = heldout
    assert labels.shape == volume.shape
    assert np.array_equal(labels.affine, volume.affine)
    assert labels.names[5] == "liver" and labels.names[52] == "aorta"
    assert set(labels.labels) <= set(load_model().card.channel_ids[1:])
    scores = {o["name"]: o["dice"] for o in evaluate(labels, truth, labels=[1, 2, 3, 5, 52])["organs"]}
    assert scores["liver"] > 0.9
    assert min(scores["spleen"], scores["kidney_left"], scores["kidney_right"]) > 0.85


def test_same_world_geometry_gives_same_labels(heldout):
    """Permuting and flipping the array axes (with the affine) changes no label."""
    volume, _, _ = heldout
    crop = (slice(60, 200), slice(50, 190), slice(15, 35))
    affine = volume.affine.copy()
    affine[:3, 3] = volume.voxel_to_world([s.start for s in crop])
    part = Volume(np.asarray(volume.array)[crop], affine, modality="CT", units="HU")
    labels = segment(part)
    # new voxel (a, b, c) is old voxel (b, a, K-1-c)
    array = np.flip(np.transpose(np.asarray(part.array), (1, 0, 2)), axis=2)
    m = np.zeros((4, 4))
    m[0, 1] = m[1, 0] = m[3, 3] = 1
    m[2, 2] = -1
    m[2, 3] = part.shape[2] - 1
    moved = Volume(np.ascontiguousarray(array), part.affine @ m, modality="CT", units="HU")
    out = segment(moved)
    assert np.array_equal(out.affine, moved.affine) and out.shape == moved.shape
    back = np.flip(np.asarray(out.array), axis=2).transpose(1, 0, 2)
    assert len(labels.labels) >= 3
    assert (back == np.asarray(labels.array)).mean() > 0.999


def test_cli_segment_writes_labels_and_sidecar(heldout, tmp_path, capsys):
    volume, truth, _ = heldout
    crop = (slice(40, 220), slice(40, 220), slice(10, 34))
    affine = volume.affine.copy()
    affine[:3, 3] = volume.voxel_to_world([s.start for s in crop])
    save(volume.replace(array=np.asarray(volume.array)[crop], affine=affine), tmp_path / "ct.nii.gz")
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "seg.nii.gz"),
                 "--quiet"]) == 0
    assert "liver" in capsys.readouterr().out
    written = load_labels(tmp_path / "seg.nii.gz")
    assert json.loads(sidecar_path(tmp_path / "seg.nii.gz").read_text())["5"] == "liver"
    assert written.shape == (180, 180, 24)
    assert np.allclose(written.affine, affine, atol=1e-4)
    cropped_truth = LabelMap(np.asarray(truth.array)[crop], affine)
    assert evaluate(written, cropped_truth, labels=[5])["organs"][0]["dice"] > 0.85


def tiny_model(planes=("axial", "coronal", "sagittal"), seed=0):
    torch.manual_seed(seed)
    spec = NetSpec("unet2d", 3, 3, {"channels": [4, 8], "strides": [2], "num_res_units": 0})
    card = ModelCard(net=spec.to_dict(), labels={1: "spleen", 5: "liver"}, channel_ids=(0, 1, 5),
                     spacing_mm=(4.0, 4.0, 4.0), context=3, planes=planes)
    return SegModel(network=build_network(spec).eval(), card=card)


def test_three_plane_fusion_averages_the_plane_passes():
    model = tiny_model()
    x = torch.randn(12, 10, 9)
    fused = predict_model_grid(model, x, planes="all", probabilities=True).float()
    single = [predict_model_grid(model, x, planes=p, probabilities=True).float()
              for p in ("axial", "coronal", "sagittal")]
    assert fused.shape == (3, 12, 10, 9)
    assert torch.allclose(fused, sum(single) / 3, atol=2e-3)
    assert torch.allclose(fused.sum(0), torch.ones(12, 10, 9), atol=5e-3)
    # the three passes really differ: fusion is not one plane in disguise
    assert (single[0] - single[1]).abs().max() > 1e-3
    labels = predict_model_grid(model, x, planes="all")
    top2 = fused.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > 5e-3  # fused is rounded to float16
    assert torch.equal(labels[decided], fused.argmax(0)[decided])


def test_untrained_planes_are_refused():
    with pytest.raises(ModelError, match="trained on axial"):
        predict_model_grid(tiny_model(planes=("axial",)), torch.zeros(8, 8, 8), planes="all")


def test_out_of_memory_halves_the_batch(monkeypatch):
    model = tiny_model()
    x = torch.randn(12, 10, 20)
    expected = predict_model_grid(model, x, planes="axial", batch_size=8)
    forward = model.network.forward
    seen = []

    def flaky(inp):
        seen.append(inp.shape[0])
        if len(seen) <= 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(inp)

    monkeypatch.setattr(model.network, "forward", flaky)
    with pytest.warns(RuntimeWarning, match="retrying with 2 per batch"):
        got = predict_model_grid(model, x, planes="axial", batch_size=8)
    assert torch.equal(got, expected)
    assert seen[:3] == [8, 4, 2] and max(seen[3:]) == 2


def test_auto_planes_fuse_on_whole_abdomens_and_stay_axial_on_slabs():
    model = tiny_model()  # 4 mm model grid, trained on all three planes
    axial = plane_axis("axial", model.card.orientation)
    for n_axial in (9, 40):  # 36 mm slab, 160 mm abdomen
        shape = [12, 10, 11]
        shape[axial] = n_axial
        x = torch.randn(*shape)
        auto = predict_grid(model, x, planes="auto", probabilities=True)
        if n_axial == 9:  # a slab: axial alone, nothing compared
            assert auto.planes == ("axial",) and not auto.plane_confidence
        else:  # a whole abdomen: fusion unless it costs the model its confidence
            fuse = choose_fusion(auto.plane_confidence)
            assert auto.planes == (("axial", "coronal", "sagittal") if fuse else ("axial",))
            single = predict_model_grid(model, x, planes="axial", probabilities=True).float()
            assert auto.plane_confidence["axial"] == pytest.approx(mean_organ_confidence(single), abs=2e-3)
        explicit = predict_model_grid(model, x, planes="all" if len(auto.planes) == 3 else "axial",
                                      probabilities=True)
        assert torch.allclose(auto.out.float(), explicit.float(), atol=2e-3)
        top = auto.out.float().max(0)
        assert torch.allclose(auto.top.float(), top.values, atol=2e-3)
    assert resolve_planes("auto", ("axial",)) == ("axial",)
    assert resolve_planes("auto", ("axial", "coronal", "sagittal")) == ("axial", "coronal", "sagittal")


def test_clean_up_keeps_each_organs_largest_component():
    from medrecon.models.postprocess import largest_component_labels, largest_components

    lab = np.zeros((10, 10, 10), np.int64)
    lab[1:4, 1:4, 1:4] = 1
    lab[7, 7, 7] = 1  # stray voxel of class 1
    lab[5:9, 0:3, 0:3] = 2
    lab[0, 9, 9] = 2  # stray voxel of class 2
    out = largest_component_labels(torch.from_numpy(lab), n_channels=3).numpy()
    assert out[7, 7, 7] == 0 and out[0, 9, 9] == 0
    assert (out == 1).sum() == 27 and (out == 2).sum() == 36
    probs = torch.nn.functional.one_hot(torch.from_numpy(lab), 3).permute(3, 0, 1, 2).float()
    cleaned = largest_components(probs)
    assert cleaned[1, 7, 7, 7] == 0 and cleaned[2, 0, 9, 9] == 0
    assert torch.equal(cleaned[1][torch.from_numpy(out == 1)], torch.ones(27))
    assert torch.equal(probs, torch.nn.functional.one_hot(torch.from_numpy(lab), 3).permute(3, 0, 1, 2).float())


def test_segment_takes_segment_scored_options_by_name():
    import inspect

    from medrecon.models import segment_scored

    ours = inspect.signature(segment).parameters
    theirs = inspect.signature(segment_scored).parameters
    assert list(ours) == list(theirs)
    for name, p in list(ours.items())[1:]:  # the volume, then keyword-only options with the same defaults
        assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default == theirs[name].default, name
    with pytest.raises(TypeError):
        segment(None, "default")  # options by name only
