"""Training a segmentation network (2.5D slice network or 3D baseline) end to end.

:func:`train_segmenter` builds the data (phantoms by default: seeds from
:data:`~medrecon.train.data.FIRST_TRAIN_SEED` upward, never the held-out
evaluation seeds 0-19), the network and its card, runs :func:`~medrecon.train.loop.fit`
with MONAI's Dice + cross-entropy loss and writes a checkpoint
(``model.safetensors`` + ``model.json``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from medrecon.errors import InputError
from medrecon.models.card import ModelCard, SegModel
from medrecon.models.checkpoint import load_model, save_model
from medrecon.models.nets import NetSpec, build_network
from medrecon.progress import ProgressFn
from medrecon.train.data import (
    FIRST_TRAIN_SEED,
    Case,
    PhantomStream,
    dataset_pairs,
    load_pairs,
    phantom_pair,
    to_case,
)
from medrecon.train.loop import History, LoopConfig, distributed, fit

#: Structures the default model learns from phantoms (TotalSegmentator ids). Lung lobes,
#: bones and muscles are left to HU-threshold presets.
DEFAULT_ORGANS = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver",
                  6: "stomach", 7: "pancreas", 51: "heart", 52: "aorta", 63: "inferior_vena_cava"}

#: Seeds used for validation during training: neither training (>= 1000) nor evaluation (0-19).
VALIDATION_SEEDS = (500, 501)


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how.

    Attributes
    ----------
    arch : str
        ``unet2d``, ``flexunet2d`` or ``unet3d``.
    net_options : Mapping
        Extra MONAI constructor arguments (e.g. ``{"channels": [16, 32, 64, 128]}``).
    labels : Mapping[int, str] or None
        Label id -> name to predict; None: every label of the first training case.
    data : str
        ``"phantoms"`` or a dataset folder (MSD, nnU-Net raw or plain pairs).
    cases : int
        Training phantoms held in memory at a time.
    refresh_every : int
        Replace one phantom with a fresh seed every this many steps (0: never).
    phantom_small : bool
        Use the phantom generator's ``small`` preset.
    spacing_mm : tuple of 3 float
        Model-grid voxel size.
    orientation : str
        Model-grid orientation codes.
    window : tuple of 2 float
        Intensity window (HU).
    context : int
        Slices per 2D input stack (odd).
    planes : tuple of str
        Planes to train 2D networks on.
    patch : int
        Patch edge in model voxels (2D: in-plane; 3D: cube).
    batch : int
        Samples per micro-batch.
    workers : int
        Processes making phantoms in the background (0: one thread).
    init : str or None
        Checkpoint (folder, ``.json`` or ``"default"``) whose weights start the
        training (fine-tuning); its architecture and label table must match.
    loop : LoopConfig
        Optimisation settings (steps, lr, amp, accumulation, ...).
    """

    arch: str = "unet2d"
    net_options: Mapping[str, Any] = field(default_factory=lambda: {"num_res_units": 1})
    labels: Mapping[int, str] | None = None
    data: str = "phantoms"
    cases: int = 12
    refresh_every: int = 0
    phantom_small: bool = False
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)
    orientation: str = "LPS"
    window: tuple[float, float] = (-300.0, 400.0)
    context: int = 5
    planes: tuple[str, ...] = ("axial",)
    patch: int = 128
    batch: int = 16
    workers: int = 1
    init: str | None = None
    loop: LoopConfig = field(default_factory=LoopConfig)

    def __post_init__(self) -> None:
        if self.arch != "unet3d" and self.context % 2 != 1:
            raise ValueError(f"context must be odd, got {self.context}")


def phantom_config(small: bool):
    """Return the phantom generator's ``small`` preset when asked for, else None (default)."""
    if not small:
        return None
    from medrecon.phantom import PhantomConfig

    return PhantomConfig(small=True)


def _label_table(config: TrainConfig, first_labels) -> dict[int, str]:
    if config.labels is not None:
        return {int(k): str(v) for k, v in config.labels.items()}
    table = {i: first_labels.name_of(i) for i in first_labels.labels}
    if not table:
        raise InputError("the first training case holds no labels")
    return table


def train_segmenter(config: TrainConfig, outdir: str | os.PathLike, *, device: str = "auto",
                    resume: bool = False, show_bar: bool = True,
                    progress: ProgressFn | None = None) -> tuple[SegModel, History]:
    """Train a network per ``config`` and write its checkpoint to ``outdir``.

    Parameters
    ----------
    config : TrainConfig
        Data, network and optimisation settings.
    outdir : path-like
        Receives ``model.safetensors``, ``model.json`` and ``train_state.pt`` (resume state).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (under torchrun: each rank's GPU).
    resume : bool
        Continue from ``outdir/train_state.pt`` when it exists.

    Returns
    -------
    (SegModel, History)
    """
    import torch
    from monai.losses import DiceCELoss

    from medrecon.models.inference import resolve_device
    from medrecon.train.graphed import GraphedBatches
    from medrecon.train.sampler import Batcher

    rank, world, ddp_device = distributed()
    dev = ddp_device or resolve_device(device)
    outdir = Path(outdir)
    small = phantom_config(config.phantom_small)
    is3d = config.arch == "unet3d"

    if config.data == "phantoms":
        first = phantom_pair(FIRST_TRAIN_SEED + rank * 100_000, small)
        table = _label_table(config, first[1])
    else:
        pairs = dataset_pairs(config.data)
        from medrecon.io import load_labels

        table = _label_table(config, load_labels(pairs[0][1]))
    channel_ids = (0, *sorted(table))
    common = {"spacing": config.spacing_mm, "orientation": config.orientation,
              "window": config.window, "value_range": (-1.0, 1.0), "channel_ids": channel_ids}

    convert = partial(to_case, **common)

    stream = None
    if config.data == "phantoms":
        start = FIRST_TRAIN_SEED + rank * 100_000
        cases = [convert(*first, name=f"phantom seed {start}")]
        stream = PhantomStream(start + 1, convert, workers=config.workers, config=small)
        while len(cases) < config.cases:
            cases.append(stream.take())
        val_cases = [convert(*phantom_pair(s, small), name=f"phantom seed {s}") for s in VALIDATION_SEEDS]
    else:
        cases = load_pairs(pairs, convert)
        val_cases = cases[-1:] if len(cases) > 1 else []
        cases = cases[:-1] if len(cases) > 1 else cases

    spec = NetSpec(config.arch, in_channels=1 if is3d else config.context,
                   out_channels=len(channel_ids), options=dict(config.net_options))
    model = build_network(spec)
    if config.init:
        start_from = load_model(config.init)
        if start_from.card.net != spec.to_dict() or tuple(start_from.card.channel_ids) != channel_ids:
            raise InputError(f"--init {config.init}: its network or label table differs from this "
                             "run's; fine-tuning needs the same architecture and labels")
        model.load_state_dict(start_from.network.state_dict())
    model = model.to(dev)
    batcher = Batcher(cases, batch=config.batch, patch=config.patch,
                      context=0 if is3d else config.context,
                      # axial slices are what inference uses by default: half the batches
                      planes=config.planes if len(config.planes) == 1 else ("axial", *config.planes),
                      orientation=config.orientation, device=dev, background=-1.0,
                      seed=config.loop.seed + rank)
    # on a GPU, batches are replayed CUDA graphs made one step ahead (see train.graphed)
    source = GraphedBatches.wrap(batcher, channels_last=config.loop.channels_last and not is3d)
    loss = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=False, smooth_nr=1e-5, smooth_dr=1e-5)
    steps_seen = [0]

    def next_batch():
        steps_seen[0] += 1
        if stream is not None and config.refresh_every and steps_seen[0] % config.refresh_every == 0:
            fresh = stream.ready()
            if fresh is not None:
                source.add(fresh, replace=True)
        return source()

    def loss_fn(net, batch):
        x, y = batch
        if dev.type == "cuda" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return loss(net(x).float(), y[:, None])

    card_kwargs = {
        "net": spec.to_dict(), "labels": table, "channel_ids": channel_ids,
        "spacing_mm": config.spacing_mm, "orientation": config.orientation,
        "window": config.window, "context": 1 if is3d else config.context,
        "planes": config.planes, "roi_mm": tuple(config.patch * s for s in config.spacing_mm),
    }

    def validate(net) -> dict[str, float]:
        probe = SegModel(network=net, card=ModelCard(**card_kwargs), source="training")
        return {"val_dice": round(model_grid_dice(probe, val_cases, device=str(dev)), 4)}

    try:
        history = fit(model, next_batch, loss_fn, config.loop, device=dev,
                      state_path=outdir / "train_state.pt" if (resume or config.loop.checkpoint_every) else None,
                      validate=validate if val_cases else None, logdir=outdir / "tb",
                      show_bar=show_bar, progress=progress)
    finally:
        if stream is not None:
            stream.close()
    training = {
        "data": "synthetic phantoms (medrecon.phantom.make_phantom"
                + (", small preset)" if config.phantom_small else ")") if config.data == "phantoms"
                else str(config.data),
        "seed_rule": f"training seeds >= {FIRST_TRAIN_SEED}; validation seeds "
                     f"{list(VALIDATION_SEEDS)}; held-out evaluation seeds 0-19",
        "first_seed": FIRST_TRAIN_SEED,
        "last_seed": stream.next_seed - 1 if stream is not None else None,
        "config": _jsonable_config(config), "device": str(dev), "world_size": world,
        "steps": history.start_step + len(history.losses), "seconds": round(history.seconds, 1),
        "initialised_from": config.init,
        "final_loss": round(float(sum(history.losses[-20:]) / max(1, len(history.losses[-20:]))), 5),
        "validation": history.val[-1][1] if history.val else {},
        "command": " ".join(sys.argv) if sys.argv and "medrecon" in sys.argv[0] else "",
    }
    card = ModelCard(**card_kwargs, training=training)
    model.eval()
    if rank == 0:
        save_model(model, card, outdir)
    return SegModel(network=model, card=card, source=str(outdir)), history


def _jsonable_config(config: TrainConfig) -> dict[str, Any]:
    d = asdict(config)
    d["net_options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(config.net_options).items()}
    d["labels"] = None if config.labels is None else {str(k): v for k, v in config.labels.items()}
    return d


def model_grid_dice(model: SegModel, cases: Sequence[Case], *, device: str = "cpu") -> float:
    """Mean foreground Dice over ``cases``, computed on the model grid (fast check)."""
    import torch

    from medrecon.models.inference import predict_model_grid

    scores = []
    for case in cases:
        pred = predict_model_grid(model, case.image.cpu(), planes="axial", device=device)
        gt = case.labels.cpu()
        for c in range(1, len(model.card.channel_ids)):
            p, g = pred == c, gt == c
            denom = int(p.sum() + g.sum())
            if int(g.sum()):
                scores.append(2 * int((p & g).sum()) / denom)
    return float(torch.tensor(scores).mean()) if scores else 0.0
