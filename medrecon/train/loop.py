"""A small, generic training loop any medrecon network can use.

:func:`fit` runs ``steps`` optimiser steps of ``loss_fn(model, batch)`` over
batches from ``next_batch()``, with AdamW and a warm-up + cosine schedule,
bf16 autocast on GPUs that support it, channels-last memory, optional
``torch.compile``, gradient accumulation, gradient clipping, resumable state
(tensors only, read back with ``weights_only=True``), a tqdm bar showing the
loss and the last validation score, and TensorBoard scalars when
``tensorboard`` is installed. Under ``torchrun`` it wraps the model in
DistributedDataParallel by itself (:func:`distributed`), so the same command
scales to several GPUs.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medrecon.errors import ModelError
from medrecon.progress import ProgressFn, report


@dataclass(frozen=True)
class LoopConfig:
    """Optimisation settings of :func:`fit`.

    Attributes
    ----------
    steps : int
        Optimiser steps (each of ``accum`` micro-batches).
    lr : float
        Peak learning rate of AdamW.
    weight_decay : float
        AdamW weight decay.
    warmup : int
        Linear warm-up steps before the cosine decay to ``lr / 50``.
    accum : int
        Micro-batches per optimiser step (gradient accumulation).
    amp : bool
        bf16 autocast where the device supports it (CUDA with bf16); ignored on the CPU.
    channels_last : bool
        Channels-last memory format for 4D inputs on CUDA.
    compile : bool
        Wrap the model with ``torch.compile``.
    clip : float or None
        Gradient-norm clip.
    seed : int
        Seeds Python, NumPy and torch (plus the rank under DDP).
    val_every : int
        Steps between calls of ``validate`` (0: only at the end).
    checkpoint_every : int
        Steps between writes of the resume state (0: only at the end).
    max_seconds : float or None
        Wall-clock budget: training stops when it is spent, and the learning-rate
        schedule runs on whichever of steps or time is further along, so a run cut
        short by time still ends annealed.
    """

    steps: int = 1000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    accum: int = 1
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    clip: float | None = 1.0
    seed: int = 0
    val_every: int = 0
    checkpoint_every: int = 0
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.accum < 1:
            raise ValueError(f"steps and accum must be >= 1, got {self.steps} and {self.accum}")


@dataclass
class History:
    """What :func:`fit` did: per-step losses, validation scores and timings."""

    losses: list[float] = field(default_factory=list)
    val: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    seconds: float = 0.0
    start_step: int = 0
    #: (steps done, seconds since the start) each time losses were read back: the device
    #: has finished those steps then, so rates between marks are exact
    marks: list[tuple[int, float]] = field(default_factory=list)

    def steady_rate(self) -> float | None:
        """Return steps per second between the first and last marks (start-up excluded)."""
        if len(self.marks) < 2 or self.marks[-1][1] <= self.marks[0][1]:
            return None
        (s0, t0), (s1, t1) = self.marks[0], self.marks[-1]
        return (s1 - s0) / (t1 - t0)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def distributed() -> tuple[int, int, Any]:
    """(rank, world size, device) - initialises torch.distributed under torchrun.

    Outside torchrun: (0, 1, None), and the caller picks the device.
    """
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return dist.get_rank(), world, device


def is_2d(model) -> bool:
    """Tell whether ``model`` is a 2D network (channels-last applies to 4D tensors only)."""
    return not any(p.ndim == 5 for p in model.parameters())


def amp_enabled(device, wanted: bool) -> bool:
    """Tell whether bf16 autocast should be used on ``device``."""
    import torch

    return bool(wanted and device.type == "cuda" and torch.cuda.is_bf16_supported())


def _lr_factor(step: int, cfg: LoopConfig, elapsed: float = 0.0) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    if cfg.max_seconds:
        t = max(t, elapsed / cfg.max_seconds)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _tensorboard(logdir: Path | None):
    if logdir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(logdir))


def fit(
    model,
    next_batch: Callable[[], Any],
    loss_fn: Callable[[Any, Any], Any],
    config: LoopConfig,
    *,
    device,
    state_path: str | os.PathLike | None = None,
    validate: Callable[[Any], dict[str, float]] | None = None,
    logdir: str | os.PathLike | None = None,
    show_bar: bool = True,
    progress: ProgressFn | None = None,
) -> History:
    """Train ``model`` in place.

    Parameters
    ----------
    model : torch.nn.Module
        Already on ``device``.
    next_batch : callable
        Returns the next batch, already on the device (augmentation may run there).
    loss_fn : callable
        ``loss_fn(model, batch) -> scalar tensor``.
    config : LoopConfig
        Optimisation settings.
    device : torch.device
        Where the model lives.
    state_path : path-like, optional
        Resume state: read at start when it exists, written every
        ``config.checkpoint_every`` steps and at the end (rank 0 only).
    validate : callable, optional
        ``validate(model) -> {"dice": ...}``; shown on the bar and logged.
    logdir : path-like, optional
        TensorBoard folder (used only if tensorboard is installed).
    show_bar : bool
        Draw a tqdm bar (rank 0).
    progress : ProgressFn, optional
        Called with ("training", fraction); may raise ``Cancelled``.
    """
    import torch
    from tqdm.auto import tqdm

    rank, world, _ = distributed()
    seed_everything(config.seed + rank)
    if config.channels_last and device.type == "cuda" and is_2d(model):
        model.to(memory_format=torch.channels_last)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history = History()
    start = 0
    if state_path is not None and Path(state_path).is_file():
        start = _load_state(Path(state_path), model, opt)
        history.start_step = start
    use_amp = amp_enabled(device, config.amp)
    writer = _tensorboard(Path(logdir) if logdir and rank == 0 else None)
    bar = tqdm(total=config.steps, initial=start, desc="training", leave=False,
               disable=not show_bar or rank != 0)
    t0 = time.perf_counter()
    last_val: dict[str, float] = {}
    pending: list = []
    net.train()
    for step in range(start, config.steps):
        elapsed = time.perf_counter() - t0
        if config.max_seconds and elapsed >= config.max_seconds:
            break
        for group in opt.param_groups:
            group["lr"] = config.lr * _lr_factor(step, config, elapsed)
        opt.zero_grad(set_to_none=True)
        total = None
        for _ in range(config.accum):
            batch = next_batch()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = loss_fn(net, batch) / config.accum
            loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        if config.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        opt.step()
        pending.append(total)
        done = step + 1
        # losses are read back in groups: a read waits for the device, and waiting every
        # step would stop the host from preparing the next batch while the GPU works
        if len(pending) >= _SYNC_EVERY or done == config.steps:
            _flush(pending, history, writer, step)
            history.marks.append((done, time.perf_counter() - t0))
        if validate is not None and config.val_every and done % config.val_every == 0 and done < config.steps:
            last_val = _run_validation(net, model, validate, done, history, writer, rank)
        if state_path is not None and config.checkpoint_every and done % config.checkpoint_every == 0 and rank == 0:
            _save_state(Path(state_path), model, opt, done)
        bar.update(1)
        if history.losses and not pending:
            bar.set_postfix(loss=f"{history.losses[-1]:.4f}", **{k: f"{v:.3f}" for k, v in last_val.items()})
        report(progress, "training", done / config.steps)
    _flush(pending, history, writer, start + len(history.losses) + len(pending) - 1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    history.seconds = time.perf_counter() - t0
    final = start + len(history.losses)
    if validate is not None:
        _run_validation(net, model, validate, final, history, writer, rank)
    if state_path is not None and rank == 0:
        _save_state(Path(state_path), model, opt, final)
    bar.close()
    if writer is not None:
        writer.close()
    model.eval()
    return history


_SYNC_EVERY = 25


def _flush(pending: list, history: History, writer, last_step: int) -> None:
    """Read the pending per-step losses back from the device; stop on divergence."""
    import torch

    if not pending:
        return
    values = torch.stack(pending).float().cpu().tolist()
    first = last_step - len(values) + 1
    pending.clear()
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise ModelError(f"training diverged at step {first + i} (loss {v}); lower --lr")
        history.losses.append(v)
        if writer is not None:
            writer.add_scalar("loss", v, first + i)


def _run_validation(net, model, validate, step, history, writer, rank) -> dict[str, float]:
    model.eval()
    scores = validate(model) if rank == 0 else {}
    net.train()
    history.val.append((step, dict(scores)))
    if writer is not None:
        for k, v in scores.items():
            writer.add_scalar(f"val/{k}", v, step)
    return dict(scores)


def _save_state(path: Path, model, opt, step: int) -> None:
    import torch

    from medrecon.atomic import atomic_path

    state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
             "step": torch.tensor(step)}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path, model, opt) -> int:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        return int(state["step"])
    except Exception as exc:  # noqa: BLE001 - any unreadable state is the same problem
        raise ModelError(f"cannot resume from {path}: {exc}; delete it to start afresh") from exc
