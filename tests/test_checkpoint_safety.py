import json
import os
import pickle

import pytest
import torch

from medrecon.errors import ModelError
from medrecon.models import segment
from medrecon.models.card import ModelCard
from medrecon.models.checkpoint import load_model, save_model
from medrecon.models.nets import NetSpec, build_network
from medrecon.train.toy import make_toy


class Payload:
    """Unpickling this runs a shell command that creates a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_pickle(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": Payload(marker)}, fh)


@pytest.mark.parametrize("name", ["model.pt", "weights.pth", "x.ckpt", "model.bin"])
def test_pickled_checkpoint_is_refused_and_never_run(tmp_path, name):
    marker = tmp_path / "pwned"
    evil = tmp_path / name
    write_pickle(evil, marker)
    with pytest.raises(ModelError, match="pickle"):
        load_model(evil)
    volume, _ = make_toy(0)
    with pytest.raises(ModelError):
        segment(volume, model=evil)
    assert not marker.exists()


def test_pickle_disguised_as_safetensors_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "ckpt"
    spec = NetSpec("unet2d", 5, 2, {"channels": [4, 8], "strides": [2]})
    card = ModelCard(net=spec.to_dict(), labels={5: "liver"}, channel_ids=(0, 5))
    save_model(build_network(spec), card, folder)
    write_pickle(folder / "model.safetensors", marker)
    with pytest.raises(ModelError, match="safetensors"):
        load_model(folder)
    assert not marker.exists()


def test_checkpoint_round_trip(tmp_path):
    spec = NetSpec("unet2d", 3, 3, {"channels": [4, 8], "strides": [2]})
    net = build_network(spec)
    card = ModelCard(net=spec.to_dict(), labels={1: "spleen", 5: "liver"}, channel_ids=(0, 1, 5),
                     spacing_mm=(2.0, 2.0, 3.0), context=3, training={"note": "test"})
    save_model(net, card, tmp_path / "m")
    loaded = load_model(tmp_path / "m" / "model.json")
    assert loaded.card.to_dict() == card.to_dict()
    assert loaded.names == {1: "spleen", 5: "liver"}
    for (k, a), (k2, b) in zip(net.state_dict().items(), loaded.network.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)


def make_bundle(root, state=None):
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    config = {
        "network_def": {"_target_": "monai.networks.nets.UNet", "spatial_dims": 3, "in_channels": 1,
                        "out_channels": 2, "channels": [4, 8], "strides": [2], "num_res_units": 0},
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Spacingd", "keys": "image", "pixdim": [4.0, 4.0, 4.0]},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -200, "a_max": 300,
             "b_min": 0.0, "b_max": 1.0, "clip": True}]},
        "roi_size": [32, 32, 32],
    }
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    (root / "configs" / "metadata.json").write_text(json.dumps(
        {"network_data_format": {"outputs": {"pred": {"channel_def": {"0": "background", "1": "liver"}}}}}))
    from monai.networks.nets import UNet

    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,), num_res_units=0)
    torch.save(state if state is not None else net.state_dict(), root / "models" / "model.pt")
    return net


def test_bundle_needs_trust(tmp_path):
    make_bundle(tmp_path / "bundle")
    with pytest.raises(ModelError, match="--trust-bundle"):
        load_model(tmp_path / "bundle")
    volume, _ = make_toy(0)
    with pytest.raises(ModelError, match="--trust-bundle"):
        segment(volume, model=tmp_path / "bundle")


def test_trusted_bundle_loads_tensors_only(tmp_path):
    net = make_bundle(tmp_path / "bundle")
    model = load_model(tmp_path / "bundle", trust_bundle=True)
    assert model.card.spatial_dims == 3
    assert model.card.spacing_mm == (4.0, 4.0, 4.0)
    assert model.card.window == (-200.0, 300.0) and model.card.value_range == (0.0, 1.0)
    assert model.names == {5: "liver"}  # the vocabulary's id of the channel named liver
    for a, b in zip(net.state_dict().values(), model.network.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_trusted_bundle_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    root = tmp_path / "bundle"
    make_bundle(root)
    write_pickle(root / "models" / "model.pt", marker)
    with pytest.raises(ModelError, match="weights_only"):
        load_model(root, trust_bundle=True)
    assert not marker.exists()
