import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from medrecon.completion import complete, every_nth  # noqa: E402
from medrecon.completion.shape_net import (  # noqa: E402
    batch_inputs,
    build_shape_net,
    load_shape_model,
    save_shape_model,
)
from medrecon.errors import ModelError  # noqa: E402
from medrecon.train.loop import LoopConfig  # noqa: E402
from medrecon.train.shape import case_samples, dice_bce_loss, train_shape_net  # noqa: E402
from medrecon.volume import LabelMap, Volume  # noqa: E402


def synthetic_case(seed, shape=(40, 40, 36), spacing=(2.0, 2.0, 3.0)):
    """Two random ellipsoid organs in an image with organ-specific HU plus noise."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=False)], indexing="ij")
    labels = np.zeros(shape, np.uint8)
    image = np.full(shape, -100.0, np.float32)
    for label, hu, centre in ((5, 60.0, (30, 35, 50)), (1, 45.0, (55, 50, 60))):
        c = np.asarray(centre) + rng.uniform(-4, 4, 3)
        r = rng.uniform([10, 10, 18], [16, 16, 30])
        inside = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grids, c, r, strict=False)) <= 1.0
        labels[inside & (labels == 0)] = label
        image[inside] = hu
    image += rng.normal(0, 10, shape).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    return Volume(image, affine, modality="CT", units="HU"), LabelMap(labels, affine, names={5: "liver", 1: "spleen"})


GRID = (16, 16, 16)


def test_shape_net_trains_and_loss_falls():
    rng = np.random.default_rng(0)
    samples = []
    for seed in range(3):
        image, labels = synthetic_case(seed)
        samples += case_samples(image, labels, rng=rng, grid=GRID, max_slices=6, organs=(1, 5))
    assert len(samples) == 12  # 3 cases x 2 sparse settings x 2 organs
    assert samples[0].volume.shape == (5, *GRID) and samples[0].target.shape == (1, *GRID)
    net_args = {"grid": GRID, "latent": 32, "base": 8, "max_slices": 6}
    loop = LoopConfig(steps=40, lr=3e-3, warmup=4, weight_decay=0.0, clip=None, seed=0)
    model, history = train_shape_net(samples, loop, batch_size=4, net_args=net_args)
    losses = history.losses
    assert len(losses) == 40 and np.mean(losses[-5:]) < np.mean(losses[:5])
    # on the whole (un-augmented) training set the trained net beats its starting point,
    # which is exactly the SDF interpolation (the residual head starts at zero)
    untrained = build_shape_net(**net_args).eval()
    inputs = batch_inputs(samples, max_slices=6)
    target = torch.stack([torch.as_tensor(s.target.astype(np.float32)) for s in samples])
    with torch.no_grad():
        before = dice_bce_loss(untrained(*inputs)[0], target).item()
        after = dice_bce_loss(model(*inputs)[0], target).item()
    assert after < 0.92 * before


def test_checkpoint_round_trip_and_refusals(tmp_path):
    net = build_shape_net(grid=GRID, latent=16, base=8, max_slices=4)
    save_shape_model(net, tmp_path / "m", info={"command": "test"})
    back = load_shape_model(tmp_path / "m")
    for (k, a), (k2, b) in zip(net.state_dict().items(), back.state_dict().items(), strict=False):
        assert k == k2 and torch.equal(a, b)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="model.json and model.safetensors"):
        load_shape_model(tmp_path / "empty")
    # a pickle in place of the weights is refused, never unpickled
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x80\x04\x95" + b"cos\nsystem\n" * 4)
    with pytest.raises(ModelError):
        load_shape_model(tmp_path / "m")


def nearest_slice_fill(sparse, label):
    """The staircase: every slice in the drawn range copies the nearest drawn slice."""
    drawn = sparse == label
    ks = np.flatnonzero(drawn.any(axis=(0, 1)))
    out = np.zeros_like(drawn)
    for k in range(ks[0], ks[-1] + 1):
        out[:, :, k] = drawn[:, :, ks[np.argmin(np.abs(ks - k))]]
    return out


def test_committed_model_beats_nearest_slice_fill_on_held_out_phantom(small_phantom):
    from medrecon.completion.metrics import dice
    from medrecon.train.shape import ORGANS

    image, labels = small_phantom  # seed 0: never used for training (seeds >= 2000)
    truth = np.asarray(labels.array)
    organs = [o for o in ORGANS if o in labels.labels]
    kept = labels.replace(array=np.where(np.isin(truth, organs), truth, 0).astype(truth.dtype))
    sparse = every_nth(kept, 4, offset=1)
    out = complete(sparse, image=image).array  # method="network", model="default"
    np.testing.assert_array_equal(out[:, :, 1::4], sparse.array[:, :, 1::4])
    net = [dice(out == o, truth == o) for o in organs]
    stair = [dice(nearest_slice_fill(sparse.array, o), truth == o) for o in organs]
    assert np.mean(net) > np.mean(stair) + 0.02
    assert min(net) > 0.6
