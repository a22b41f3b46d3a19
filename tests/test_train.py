"""Training: each network learns on a fixed batch, layouts, resume, determinism, the CLI."""

import json

import numpy as np
import pytest
import torch

from medrecon.cli import main
from medrecon.errors import InputError
from medrecon.io import save
from medrecon.models import load_model
from medrecon.models.nets import NetSpec, build_network
from medrecon.train.data import PhantomStream, dataset_pairs, load_pairs, to_case
from medrecon.train.loop import LoopConfig, fit
from medrecon.train.sampler import Batcher
from medrecon.train.segtrain import TrainConfig, train_segmenter
from medrecon.train.toy import make_toy

GRID = {"spacing": (4.0, 4.0, 4.0), "orientation": "LPS", "window": (-300.0, 400.0),
        "value_range": (-1.0, 1.0), "channel_ids": (0, 1, 2, 5)}


@pytest.fixture(scope="module")
def toy_cases():
    return [to_case(*make_toy(1000 + s), name=str(s), **GRID) for s in range(2)]


@pytest.mark.parametrize("arch, options, patch, context", [
    ("unet2d", {"channels": [8, 16, 32], "strides": [2, 2]}, 32, 5),
    ("flexunet2d", {"decoder_channels": [32, 16, 8, 8, 4]}, 32, 5),
    ("unet3d", {"channels": [4, 8, 16], "strides": [2, 2]}, (16, 16, 16), 0),
])
def test_each_network_learns(toy_cases, arch, options, patch, context):
    torch.manual_seed(0)
    spec = NetSpec(arch, in_channels=context or 1, out_channels=4, options=options)
    model = build_network(spec)
    from monai.losses import DiceCELoss

    batch = Batcher(toy_cases, batch=4, patch=patch, context=context, seed=0, foreground=1.0)()
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    history = fit(model, lambda: batch, lambda net, b: loss(net(b[0]), b[1][:, None]),
                  LoopConfig(steps=12, lr=1e-2, warmup=1), device=torch.device("cpu"), show_bar=False)
    assert len(history.losses) == 12
    assert np.mean(history.losses[-3:]) < 0.8 * np.mean(history.losses[:3])


def test_batches_pair_images_with_their_labels(toy_cases):
    batcher = Batcher(toy_cases, batch=8, patch=24, context=3,
                      planes=("axial", "coronal", "sagittal"), augment=False, seed=3)
    for _ in range(4):
        x, y = batcher()
        assert x.shape == (8, 3, 24, 24) and y.shape == (8, 24, 24) and y.dtype == torch.int64
        # toy organs are 30-60 HU, air is -1000 HU: the centre slice must agree with the labels
        organ_hu = (x[:, 1][y > 0] + 1) / 2 * 700 - 300
        assert organ_hu.min() > -80 and (y > 0).any()


def test_graphed_batches_fall_back_on_the_cpu(toy_cases):
    from medrecon.train.graphed import GraphedBatches

    batcher = Batcher(toy_cases, batch=2, patch=16, context=3, seed=0)
    assert GraphedBatches.wrap(batcher) is batcher
    with pytest.raises(ValueError, match="CUDA"):
        GraphedBatches(batcher)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graphed_batches_match_the_batcher_on_a_gpu(toy_cases):
    from medrecon.train.graphed import GraphedBatches

    dev = torch.device("cuda")
    source = GraphedBatches.wrap(Batcher(toy_cases, batch=8, patch=24, context=3, device=dev,
                                         planes=("axial", "coronal", "sagittal"), seed=3,
                                         augment=False),
                                 channels_last=True)
    assert isinstance(source, GraphedBatches)
    seen = []
    for i in range(8):
        if i == 4:  # swapping a case in while the next batch is being made
            source.add(toy_cases[0])
        x, y = source()
        assert x.shape == (8, 3, 24, 24) and y.shape == (8, 24, 24) and y.dtype == torch.int64
        assert x.is_contiguous(memory_format=torch.channels_last)
        organ_hu = (x[:, 1][y > 0] + 1) / 2 * 700 - 300
        assert (y > 0).any() and organ_hu.min() > -80
        seen.append(x.sum().item())
    assert len(set(seen)) == len(seen)  # every replay draws fresh sample centres


def test_resume_and_determinism(toy_cases, tmp_path):
    def run(steps, state=None, seed=0):
        torch.manual_seed(123)
        model = build_network(NetSpec("unet2d", 3, 4, {"channels": [4, 8], "strides": [2]}))
        batcher = Batcher(toy_cases, batch=2, patch=16, context=3, seed=seed)
        from monai.losses import DiceCELoss

        loss = DiceCELoss(to_onehot_y=True, softmax=True)
        return fit(model, batcher, lambda net, b: loss(net(b[0]), b[1][:, None]),
                   LoopConfig(steps=steps, lr=5e-3, warmup=1, seed=seed), device=torch.device("cpu"),
                   state_path=state, show_bar=False)

    a, b = run(4), run(4)
    assert a.losses == b.losses  # same seed, same numbers
    state = tmp_path / "state.pt"
    first = run(3, state)
    resumed = run(5, state)
    assert first.start_step == 0 and resumed.start_step == 3 and len(resumed.losses) == 2


def write_pairs(folder, layout):
    folder.mkdir()
    for s in range(2):
        vol, lab = make_toy(1000 + s)
        if layout == "plain":
            save(vol, folder / f"case{s}_image.nii.gz")
            save(lab, folder / f"case{s}_label.nii.gz")
        else:
            (folder / "imagesTr").mkdir(exist_ok=True)
            (folder / "labelsTr").mkdir(exist_ok=True)
            image = f"imagesTr/case{s}{'_0000' if layout == 'nnunet' else ''}.nii.gz"
            save(vol, folder / image)
            save(lab, folder / f"labelsTr/case{s}.nii.gz")
    if layout == "msd":
        (folder / "dataset.json").write_text(json.dumps({"training": [
            {"image": f"./imagesTr/case{s}.nii.gz", "label": f"./labelsTr/case{s}.nii.gz"} for s in range(2)]}))


@pytest.mark.parametrize("layout", ["plain", "msd", "nnunet"])
def test_dataset_layouts(tmp_path, layout):
    write_pairs(tmp_path / layout, layout)
    pairs = dataset_pairs(tmp_path / layout)
    assert [p[1].name for p in pairs] == [f"case{s}{'_label' if layout == 'plain' else ''}.nii.gz"
                                         for s in range(2)]
    assert all(img.is_file() and lab.is_file() and img != lab for img, lab in pairs)


def test_plain_pairs_in_detached_nrrd(tmp_path):
    # .nhdr headers with their voxels in a separate file, as pynrrd writes them
    import nrrd

    folder = tmp_path / "nhdr"
    folder.mkdir()
    truth = {}
    for s in range(2):
        vol, lab = make_toy(1000 + s)
        for kind, obj in (("image", vol), ("label", lab)):
            header = {"space": "left-posterior-superior", "space directions": obj.affine[:3, :3].T,
                      "space origin": obj.affine[:3, 3], "kinds": ["domain"] * 3}
            nrrd.write(str(folder / f"case{s}_{kind}.nhdr"), np.asarray(obj.array), header, index_order="F")
            truth[f"case{s}_{kind}"] = np.asarray(obj.array)
    pairs = dataset_pairs(folder)
    assert [(img.name, lab.name) for img, lab in pairs] == [
        (f"case{s}_image.nhdr", f"case{s}_label.nhdr") for s in range(2)]
    for (vol, lab), s in zip(load_pairs(pairs, lambda v, lab, name: (v, lab)), range(2), strict=True):
        np.testing.assert_array_equal(vol.array, truth[f"case{s}_image"])
        np.testing.assert_array_equal(lab.array, truth[f"case{s}_label"])


def test_empty_dataset_is_an_error(tmp_path):
    with pytest.raises(InputError, match="found no"):
        dataset_pairs(tmp_path)


def test_train_on_pairs_folder_writes_a_loadable_checkpoint(tmp_path):
    write_pairs(tmp_path / "data", "plain")
    config = TrainConfig(data=str(tmp_path / "data"), spacing_mm=(4.0, 4.0, 4.0), patch=32, batch=2,
                         context=3, net_options={"channels": [4, 8], "strides": [2]},
                         loop=LoopConfig(steps=3, warmup=1))
    model, history = train_segmenter(config, tmp_path / "ckpt", device="cpu", show_bar=False)
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.names == {1: "spleen", 2: "kidney_right", 5: "liver"}
    assert loaded.card.training["steps"] == 3 and len(history.losses) == 3
    for a, b in zip(model.network.state_dict().values(), loaded.network.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_phantom_stream_never_uses_heldout_seeds():
    with pytest.raises(ValueError, match="held out"):
        PhantomStream(19, to_case)


def test_cli_train_on_phantoms(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", "phantoms", "-o", str(out), "--small", "--steps", "4", "--batch", "2",
                 "--patch", "48", "--cases", "2", "--channels", "4,8", "--spacing", "4,4,8",
                 "--workers", "0", "--quiet"]) == 0
    assert "trained 4 steps" in capsys.readouterr().out
    card = json.loads((out / "model.json").read_text())
    assert card["labels"]["5"] == "liver" and card["labels"]["52"] == "aorta"
    assert card["training"]["first_seed"] >= 1000 and "0-19" in card["training"]["seed_rule"]
