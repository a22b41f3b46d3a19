"""Pretrained engines without running them: choosing, finding weights, safe loading, bundle names.

None of these tests needs nnunetv2; those that run nnU-Net are in test_nnunet.py.
"""

import importlib.util
import json
import os
import pickle
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from medrecon.errors import InputError, MissingDependencyError, ModelError
from medrecon.sources import resolve_source

torch = pytest.importorskip("torch")

DATA = Path(__file__).parent / "data"
VOCABULARY = {int(k): v for k, v in json.loads((DATA / "totalseg" / "class_map_total.json").read_text()).items()}
VOCAB_ID = {v: k for k, v in VOCABULARY.items()}


@pytest.fixture
def nnunet_installed(monkeypatch):
    """Pretend nnunetv2 is installed: choosing an engine only looks for it."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "nnunetv2" else real(name, *a))


@pytest.fixture
def totalseg_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "ts"))
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    return tmp_path / "ts" / "nnunet" / "results"


def test_model_strings_choose_the_engines(nnunet_installed):
    from medrecon.sources.nnunet import NnunetSource
    from medrecon.sources.totalseg import TotalSegmentatorSource

    assert resolve_source(model="totalsegmentator") == TotalSegmentatorSource("total")
    assert resolve_source(model="totalsegmentator:total_mr", fast=True, organs=["liver"], device="cuda") == \
        TotalSegmentatorSource("total_mr", fast=True, organs=("liver",), device="cuda")
    assert resolve_source(model="nnunet:/models/Dataset1_X/T__P__3d_fullres") == \
        NnunetSource("/models/Dataset1_X/T__P__3d_fullres")
    assert type(resolve_source(model="nnunet:x")).kind == "engine"
    with pytest.raises(InputError, match="unknown TotalSegmentator task 'lung_vessels'; medrecon runs total, total_mr"):
        resolve_source(model="totalsegmentator:lung_vessels")
    with pytest.raises(InputError, match="--fast goes with --model totalsegmentator"):
        resolve_source(model="default", fast=True)
    with pytest.raises(InputError, match="needs the trained-model folder"):
        resolve_source(model="nnunet:")


def test_engines_without_nnunetv2_say_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nnunetv2" else real(name, *a))
    for model in ("totalsegmentator", "nnunet:/some/folder"):
        with pytest.raises(MissingDependencyError, match=r"needs nnU-Net v2 \(nnunetv2\), which is not installed: "
                                                         r"run  pip install 'torch==[\d.]+' 'medrecon\[nnunet\]'"):
            resolve_source(model=model)
    assert resolve_source(model="default").kind == "network"  # everything else works without it


@pytest.mark.parametrize(("task", "fast", "command", "datasets"), [
    ("total", False, "total", "Dataset291, Dataset292, Dataset293, Dataset294, Dataset295"),
    ("total", True, "total_fast", "Dataset297"),
    ("total_mr", False, "total_mr", "Dataset850, Dataset851"),
    ("total_mr", True, "total_fast_mr", "Dataset852"),
])
def test_missing_weights_name_the_command_that_fetches_them(totalseg_home, task, fast, command, datasets):
    from medrecon.sources.totalseg import TotalSegmentatorSource

    with pytest.raises(ModelError) as err:
        TotalSegmentatorSource(task, fast=fast).folders()
    message = str(err.value)
    assert "\n" not in message and str(totalseg_home) in message and f"(missing {datasets})" in message
    assert f"'totalseg_download_weights -t {command}'" in message
    assert "'nnUNetv2_install_pretrained_model_from_zip ZIP'" in message and "never downloads" in message
    assert not totalseg_home.exists()  # nothing was fetched or created


def test_weights_are_found_where_totalsegmentator_puts_them(totalseg_home, monkeypatch):
    from medrecon.sources.totalseg import TotalSegmentatorSource

    def fake_part(results, name, trainer):
        folder = results / name / f"{trainer}__nnUNetPlans__3d_fullres"
        (folder / "fold_0").mkdir(parents=True)
        (folder / "plans.json").write_text("{}")
        (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
        return folder

    mr = fake_part(totalseg_home, "Dataset852_TotalSegMRI_total_3mm_1088subj", "nnUNetTrainer_2000epochs_NoMirroring")
    assert TotalSegmentatorSource("total_mr", fast=True).folders() == [(852, 1, mr)]
    # TOTALSEG_WEIGHTS_PATH names the results folder itself
    other = totalseg_home.parent.parent / "elsewhere"
    ct = fake_part(other, "Dataset297_TotalSegmentator_total_3mm_1559subj", "nnUNetTrainer_4000epochs_NoMirroring")
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(other))
    assert TotalSegmentatorSource("total", fast=True).folders() == [(297, 1, ct)]
    # --organs: only the parts holding the structures run (liver: part 1, rib_left_1: part 5)
    for name in ("Dataset291_a", "Dataset295_b"):
        fake_part(other, name, "nnUNetTrainerNoMirroring")
    chosen = TotalSegmentatorSource("total", organs=("Liver", "rib left 1")).folders()
    assert [(d, first) for d, first, _ in chosen] == [(291, 1), (295, 92)]
    assert VOCABULARY[5] == "liver" and VOCABULARY[92] == "rib_left_1"


def test_total_mr_classes_get_vocabulary_ids():
    from medrecon.sources.totalseg import _vocabulary

    mr = {int(k): v for k, v in json.loads((DATA / "totalseg" / "class_map_total_mr.json").read_text()).items()}
    table = _vocabulary("total_mr")
    assert set(table) == set(mr)
    for cls, name in mr.items():
        label, got = table[cls]
        assert got == name
        assert label == VOCAB_ID[name] if name in VOCAB_ID else label >= 300
    assert len({label for label, _ in table.values()}) == len(mr)


def save_checkpoint(path, extra):
    weights = {"conv.weight": torch.zeros(2, 1, 3, 3, 3)}
    torch.save({"network_weights": weights, **extra}, path)


class Payload:
    """Unpickling this runs a shell command that creates a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_nnunet_checkpoints_load_with_plain_types_only(tmp_path):
    from medrecon.models.nnunet import load_checkpoint

    plain = tmp_path / "plain.pth"
    save_checkpoint(plain, {"logging": {"mean_fg_dice": [np.float64(0.9)], "train_losses": [np.float32(-0.5)],
                                        "dice_per_class_or_region": [np.array([0.5, 0.25])]},
                            "_best_ema": np.float64(0.9), "init_args": {"device": torch.device("cpu")},
                            "inference_allowed_mirroring_axes": (0, 1, 2), "trainer_name": "nnUNetTrainer"})
    checkpoint = load_checkpoint(plain)
    assert checkpoint["_best_ema"] == np.float64(0.9) and checkpoint["trainer_name"] == "nnUNetTrainer"
    np.testing.assert_array_equal(checkpoint["logging"]["dice_per_class_or_region"][0], [0.5, 0.25])

    hidden = tmp_path / "hidden.pth"  # an object array smuggles a foreign object through numpy
    save_checkpoint(hidden, {"logging": {"x": np.array([Fraction(1, 3)], dtype=object)}})
    with pytest.raises(ModelError, match="refused"):
        load_checkpoint(hidden)

    foreign = tmp_path / "foreign.pth"
    save_checkpoint(foreign, {"init_args": {"anything": Fraction(1, 3)}})
    with pytest.raises(ModelError, match=r"refused: the checkpoint holds the object fractions\.Fraction"):
        load_checkpoint(foreign)

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    save_checkpoint(evil, {"logging": Payload(marker)})
    with pytest.raises(ModelError, match="refused"):
        load_checkpoint(evil)
    assert not marker.exists()

    bare = tmp_path / "bare.pth"
    with open(bare, "wb") as fh:
        pickle.dump({"network_weights": Payload(marker)}, fh)
    with pytest.raises(ModelError, match="refused"):
        load_checkpoint(bare)
    assert not marker.exists()


def test_whole_body_bundle_channels_map_onto_the_vocabulary(tmp_path):
    from monai.networks.nets import UNet

    from medrecon.models.checkpoint import load_model

    root = tmp_path / "wholeBody_ct_segmentation"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "metadata.json").write_bytes((DATA / "monai_wholebody" / "metadata.json").read_bytes())
    (root / "configs" / "inference.json").write_text(json.dumps({"network_def": {
        "_target_": "monai.networks.nets.UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 105,
        "channels": [4, 8], "strides": [2], "num_res_units": 0}}))
    net = UNet(spatial_dims=3, in_channels=1, out_channels=105, channels=(4, 8), strides=(2,), num_res_units=0)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    model = load_model(root, trust_bundle=True)
    channels = json.loads((DATA / "monai_wholebody" / "metadata.json").read_text())
    channels = channels["network_data_format"]["outputs"]["pred"]["channel_def"]
    ids = model.card.channel_ids
    assert len(ids) == 105 and len(set(ids)) == 105 and ids[0] == 0
    for channel, name in channels.items():
        if channel == "0":
            continue
        label = ids[int(channel)]
        assert model.names[label] == name
        assert label == VOCAB_ID[name] if name in VOCAB_ID else label >= 300
    assert ids[7] == 52 and ids[5] == 5 and ids[1] == 1  # aorta, liver, spleen as in TotalSegmentator v2
    assert ids[44] >= 300 and model.names[ids[44]] == "heart_myocardium"  # v1 only: a new id, its own name


def test_engines_say_which_modality_they_need(tmp_path):
    from medrecon.sources.nnunet import NnunetSource
    from medrecon.sources.plausibility import required_modality
    from medrecon.sources.totalseg import TotalSegmentatorSource

    assert required_modality(TotalSegmentatorSource("total")) == "CT"
    assert required_modality(TotalSegmentatorSource("total_mr")) == "MR"
    for channels, needed in (({"0": "CT"}, "CT"), ({"0": "T1"}, None), ({"0": "CT", "1": "T2"}, None)):
        (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": channels}))
        assert required_modality(NnunetSource(tmp_path)) == needed
