"""Training the image-to-shape completion network (:mod:`medrecon.completion.shape_net`).

Each training sample is one organ of one phantom, made sparse the two ways a
user draws: every n-th slice kept (n = 3..5, random offset) and n slices per
organ (n = 4..6). Loss: binary cross-entropy plus soft Dice against the
organ's occupancy on the box grid. The optimisation is
:func:`medrecon.train.loop.fit`, the loop every medrecon network trains with,
and the result is a checkpoint like every other (``model.safetensors`` +
``model.json``, :func:`medrecon.models.checkpoint.save_checkpoint`). Phantom
seeds >= 2000 (the held-out evaluation seeds are 0-19).

Command::

    python -m medrecon.train.shape --seeds 2000-2047 --steps 700 --seed 0 --out FOLDER

The committed model ``medrecon/models/shape_default`` was trained on the same
samples with the same loss by this module's predecessor,
``medrecon.completion.train_shape`` (Adam with a one-cycle schedule; the
command in its card).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medrecon.completion.features import label_inputs, target_grid
from medrecon.completion.sparse import annotations, every_nth, per_label
from medrecon.errors import InputError
from medrecon.progress import ProgressFn
from medrecon.train.loop import History, LoopConfig, fit, seed_everything
from medrecon.volume import LabelMap, Volume

#: TotalSegmentator ids of the organs the default model is trained and evaluated on.
ORGANS = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver", 6: "stomach",
          7: "pancreas", 52: "aorta"}


@dataclass(frozen=True)
class Sample:
    """One training example (arrays stored as float16 to save memory).

    Attributes
    ----------
    volume : (5, gi, gj, gk) ndarray of float16
    slices : (S, 2, gi, gj) ndarray of float16
    positions : (S,) ndarray of float32
    target : (1, gi, gj, gk) ndarray of float16, occupancy in [0, 1]
    """

    volume: np.ndarray
    slices: np.ndarray
    positions: np.ndarray
    target: np.ndarray


def sparse_views(labels: LabelMap, rng: np.random.Generator, *, organs: Sequence[int]) -> list[LabelMap]:
    """Make the two sparse versions of ``labels`` for training (random n and offset)."""
    n = int(rng.integers(3, 6))
    return [every_nth(labels, n, offset=int(rng.integers(n))),
            per_label(labels, int(rng.integers(4, 7)), ids=organs)]


def case_samples(
    image: Volume | None,
    labels: LabelMap,
    *,
    rng: np.random.Generator,
    grid: tuple[int, int, int],
    max_slices: int,
    organs: Iterable[int] = tuple(ORGANS),
) -> list[Sample]:
    """Training samples of every organ of one case, in both sparse settings.

    Labels other than ``organs`` are dropped first (a user draws organs only).
    """
    organs = [o for o in organs if o in labels.labels]
    truth = np.asarray(labels.array)
    kept = labels.replace(array=np.where(np.isin(truth, organs), truth, 0).astype(truth.dtype))
    img = None if image is None else np.asarray(image.resample_like(labels).array
                                                if not image.same_grid(labels) else image.array)
    out = []
    for sparse in sparse_views(kept, rng, organs=organs):
        arr = np.asarray(sparse.array)
        for label, ann in annotations(sparse).items():
            inputs = label_inputs(arr, ann, spacing=sparse.spacing, image=img, grid=grid,
                                  max_slices=max_slices)
            target = target_grid(truth == label, inputs.box, grid)
            out.append(Sample(inputs.volume.astype(np.float16), inputs.slices.astype(np.float16),
                              inputs.positions, target[None].astype(np.float16)))
    return out


def _augment(batch: list[Sample], rng: np.random.Generator, *, drop_image: float) -> list[Sample]:
    out = []
    for s in batch:
        vol, sl, pos, tgt = (np.asarray(s.volume, np.float32), np.asarray(s.slices, np.float32),
                             s.positions, np.asarray(s.target, np.float32))
        if rng.random() < drop_image:  # the network must also work without an image
            vol = vol.copy()
            vol[0:2] = 0.0
            sl = sl.copy()
            sl[:, 0] = 0.0
        for ax in (0, 1):
            if rng.random() < 0.5:
                vol, tgt = np.flip(vol, 1 + ax), np.flip(tgt, 1 + ax)
                sl = np.flip(sl, 2 + ax)
        if rng.random() < 0.5:
            vol, tgt, pos = np.flip(vol, 3), np.flip(tgt, 3), 1.0 - pos
        out.append(Sample(np.ascontiguousarray(vol), np.ascontiguousarray(sl), pos, np.ascontiguousarray(tgt)))
    return out


def dice_bce_loss(logits, target):
    """Binary cross-entropy plus (1 - soft Dice) per sample, averaged; target in [0, 1]."""
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    soft_dice = (2 * (prob * t).sum(1) + 1.0) / (prob.sum(1) + t.sum(1) + 1.0)
    return bce + (1.0 - soft_dice).mean()


def train_shape_net(
    samples: Sequence[Sample],
    config: LoopConfig,
    *,
    batch_size: int = 8,
    net_args: Mapping[str, Any] | None = None,
    drop_image: float = 0.25,
    device: str = "cpu",
    state_path: str | os.PathLike | None = None,
    show_bar: bool = False,
    progress: ProgressFn | None = None,
) -> tuple[Any, History]:
    """Train a fresh :class:`~medrecon.completion._net.ShapeNet` with :func:`~medrecon.train.loop.fit`.

    Parameters
    ----------
    samples : sequence of Sample
        From :func:`case_samples`; each batch draws ``batch_size`` of them
        (without replacement) and flips them at random.
    config : LoopConfig
        Steps, learning rate, schedule, seed (it also seeds the network's initial weights).
    batch_size : int
        Samples per step.
    net_args : mapping, optional
        :func:`~medrecon.completion.shape_net.build_shape_net` arguments.
    drop_image : float
        Probability that a sample's image channels are zeroed (the network must
        also work without an image).
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    state_path : path-like, optional
        Resume state for :func:`~medrecon.train.loop.fit`.
    show_bar : bool
        Draw a tqdm bar.
    progress : ProgressFn, optional
        Called with ("training", fraction); may raise ``Cancelled``.

    Returns
    -------
    model : ShapeNet
        In eval mode, on ``device``.
    history : History
        Losses per step and timings.
    """
    import torch

    from medrecon.completion.shape_net import batch_inputs, build_shape_net
    from medrecon.models.inference import resolve_device

    if not samples:
        raise InputError("no training samples: the cases hold none of the organs")
    dev = resolve_device(device)
    seed_everything(config.seed)
    model = build_shape_net(**dict(net_args or {})).to(dev)
    rng = np.random.default_rng(config.seed)
    max_slices = model.config["max_slices"]

    def next_batch():
        idx = rng.choice(len(samples), size=min(batch_size, len(samples)), replace=False)
        batch = _augment([samples[i] for i in idx], rng, drop_image=drop_image)
        inputs = tuple(t.to(dev) for t in batch_inputs(batch, max_slices=max_slices))
        target = torch.stack([torch.as_tensor(s.target) for s in batch]).to(dev)
        return inputs, target

    def loss_fn(net, batch):
        inputs, target = batch
        logits, _ = net(*inputs)
        return dice_bce_loss(logits.float(), target)

    history = fit(model, next_batch, loss_fn, config, device=dev, state_path=state_path,
                  show_bar=show_bar, progress=progress)
    return model, history


def _seed_range(text: str) -> list[int]:
    if "-" in text:
        lo, hi = (int(x) for x in text.split("-", 1))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    """Train and save a shape model from phantoms (see the module docstring)."""
    from medrecon.completion.shape_net import save_shape_model
    from medrecon.phantom import make_phantom
    from medrecon.progress import TqdmProgress

    p = argparse.ArgumentParser(prog="python -m medrecon.train.shape", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="2000-2047", help="phantom seeds (>= 2000), e.g. 2000-2047")
    p.add_argument("--steps", type=int, default=700)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", type=int, nargs=3, default=(32, 32, 32))
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    seeds = _seed_range(args.seeds)
    if min(seeds) < 2000:
        p.error("training seeds must be >= 2000 (0-1999 are kept for evaluation)")
    net_args = {"grid": list(args.grid)}
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    samples: list[Sample] = []
    with TqdmProgress("phantoms") as bar:
        for n, s in enumerate(seeds):
            image, labels = make_phantom(s)
            samples += case_samples(image, labels, rng=rng, grid=tuple(args.grid), max_slices=12)
            bar("making samples", (n + 1) / len(seeds))
    t1 = time.time()
    # Adam-like (no weight decay, no clipping), warm-up over the first tenth, then cosine
    loop = LoopConfig(steps=args.steps, lr=args.lr, weight_decay=0.0, warmup=max(1, args.steps // 10),
                      clip=None, seed=args.seed)
    model, history = train_shape_net(samples, loop, batch_size=args.batch_size, net_args=net_args,
                                     device=args.device, show_bar=True)
    losses = history.losses
    command = "python -m medrecon.train.shape " + " ".join(sys.argv[1:] if argv is None else argv)
    info = {"command": command, "phantom_seeds": args.seeds, "seed": args.seed, "steps": args.steps,
            "batch_size": args.batch_size, "lr": args.lr, "samples": len(samples),
            "organs": {str(k): v for k, v in ORGANS.items()},
            "loss_first_20": float(np.mean(losses[:20])), "loss_last_20": float(np.mean(losses[-20:])),
            "data_seconds": round(t1 - t0, 1), "train_seconds": round(history.seconds, 1),
            "device": str(next(model.parameters()).device), "torch_threads": 1}
    save_shape_model(model, args.out, info=info)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
