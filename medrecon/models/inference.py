"""Running a segmentation network over a volume, on the model grid and back.

2D (2.5D) networks see stacks of ``context`` neighbouring slices as channels
and label the centre slice; every slice of the model grid is labelled in
batches and the results stacked. With ``planes="all"`` the axial, coronal and
sagittal passes are fused by averaging their probabilities. 3D networks run
with MONAI sliding windows. The label map is then mapped back onto the input
grid exactly (:class:`~medrecon.models.grid.GridMap`).

A CUDA out-of-memory error halves the batch; at a batch of one the work moves
to the CPU with a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medrecon.errors import ModelError, ResourceLimitError
from medrecon.models.card import ModelCard, SegModel
from medrecon.progress import ProgressFn, report

PLANES = ("axial", "coronal", "sagittal")
_PLANE_CODES = {"axial": "SI", "coronal": "AP", "sagittal": "LR"}


def plane_axis(plane: str, orientation: str) -> int:
    """Model-grid axis normal to ``plane`` for a grid of ``orientation`` codes."""
    if plane not in _PLANE_CODES:
        raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
    for axis, code in enumerate(orientation.upper()):
        if code in _PLANE_CODES[plane]:
            return axis
    raise ValueError(f"orientation {orientation!r} has no axis normal to the {plane} plane")


#: ``planes="auto"`` fuses coronal and sagittal passes only when the volume spans at
#: least this many mm head to foot: on a thin slab those planes see short strips with
#: no anatomical context and fusion lowers accuracy (liver Dice 0.81 vs 0.87 axial on a
#: 24-slice slab of a held-out phantom; 3-plane fusion wins on whole abdomens).
AUTO_FUSION_MIN_MM = 150.0

#: ``planes="auto"`` keeps the 3-plane fusion only when it leaves the model about as
#: sure of the organs as the axial pass alone. Confidence is the mean top-class
#: probability over an organ's voxels, averaged over the organs found; fusion is
#: used unless its confidence falls more than this below the axial pass's. Where the
#: three planes agree (studies like the phantoms the model was trained on) averaging
#: them keeps the probabilities high and fusion is the validated, more accurate
#: setting: on 74 unseen phantoms the drop is 0.016-0.072 (bench/bench_phantom_robustness.py).
#: Where the coronal and sagittal passes see something unlike their training (a real
#: study: arms, table, other anatomy in the slices) they disagree with the axial one
#: and the fused probabilities collapse (a drop of 0.35 on the real CTs in tests/data,
#: where fusion loses the kidneys); axial alone is then the better answer.
AUTO_FUSION_MAX_DROP = 0.15


@dataclass(frozen=True, eq=False)
class GridPrediction:
    """What one network run gives on the model grid.

    Attributes
    ----------
    out : torch.Tensor
        (C, I, J, K) float16 softmax probabilities (averaged over the planes used),
        or (I, J, K) int64 output-channel index per voxel.
    top : torch.Tensor
        (I, J, K) float16 probability of the top class at each voxel (the model's
        confidence there), from the same probabilities as ``out``; a single-plane
        run without probabilities fills it on organ voxels only (0 on background).
    planes : tuple of str
        The slice planes whose passes were fused (empty for 3D networks).
    plane_confidence : Mapping[str, float]
        Where ``planes="auto"`` compared axial alone with the fusion: the confidence
        of each, ``"axial"`` and ``"all"`` (see :func:`choose_fusion`); else empty.
    """

    out: Any
    top: Any
    planes: tuple[str, ...] = ()
    plane_confidence: Mapping[str, float] = field(default_factory=dict)


def choose_fusion(plane_confidence: Mapping[str, float], *,
                  max_drop: float = AUTO_FUSION_MAX_DROP) -> bool:
    """Tell whether ``planes="auto"`` keeps the 3-plane fusion (else axial alone).

    Parameters
    ----------
    plane_confidence : mapping of str to float
        ``"axial"``: the axial pass's confidence, ``"all"``: the fused result's; each
        the mean over the organs found of the mean top-class probability over the
        organ's voxels (see :func:`mean_organ_confidence`), NaN when none is found.
    max_drop : float
        How far the fused confidence may fall below the axial one.

    Returns
    -------
    bool
        True to fuse: the axial pass found nothing (nothing to prefer), or fusion
        keeps the confidence within ``max_drop`` of the axial pass's.
    """
    axial, fused = plane_confidence["axial"], plane_confidence["all"]
    if not math.isfinite(axial):
        return True
    return math.isfinite(fused) and fused >= axial - max_drop


def mean_organ_confidence(probs) -> float:
    """Mean over the organs found of their mean top-class probability (NaN when none is found).

    Parameters
    ----------
    probs : (C, I, J, K) torch.Tensor
        Class probabilities, channel 0 background.
    """
    import torch

    best = torch.max(probs, dim=0)
    per = channel_confidence(best.indices, best.values, probs.shape[0])
    return sum(per.values()) / len(per) if per else math.nan


def channel_confidence(channels, top, n_channels: int) -> dict[int, float]:
    """Mean top-class probability over each output channel's voxels.

    Parameters
    ----------
    channels : (I, J, K) torch.Tensor of int
        Output-channel index per voxel.
    top : (I, J, K) torch.Tensor of float
        Top-class probability per voxel.
    n_channels : int
        Output channels of the network (channel 0 is background).

    Returns
    -------
    dict of int to float
        Channel index -> mean probability, for the channels (not 0) present.
    """
    import torch

    flat = channels.reshape(-1).long()
    counts = torch.bincount(flat, minlength=n_channels)
    sums = torch.bincount(flat, weights=top.reshape(-1).double(), minlength=n_channels)
    return {int(c): float(sums[c] / counts[c]) for c in range(1, n_channels) if counts[c] > 0}


def resolve_planes(planes: str | Sequence[str], trained: Sequence[str] = ("axial",)) -> tuple[str, ...]:
    """Turn ``"auto"``, ``"axial"``, ``"all"`` or plane names into a tuple of plane names.

    ``"auto"`` means every plane the model was ``trained`` on: the default model is
    trained on all three, and fusing them is what meets its accuracy targets.
    """
    if isinstance(planes, str):
        if planes == "auto":
            planes = tuple(trained) or ("axial",)
        else:
            planes = PLANES if planes == "all" else (planes,)
    out = tuple(planes)
    for p in out:
        if p not in PLANES:
            raise ValueError(f"planes must be 'all' or names from {PLANES}, got {p!r}")
    return out


def normalise(x, card: ModelCard):
    """Clip to the card's window and scale linearly onto its value range (torch)."""
    lo, hi = card.window
    a, b = card.value_range
    return (x.clamp(lo, hi) - lo) * ((b - a) / (hi - lo)) + a


def resolve_device(device: str):
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` -> a ``torch.device``."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for but PyTorch sees no CUDA GPU; "
                         "use --device cpu (or auto)")
    return dev


class _Runner:
    """Calls the network on batches, shrinking them on CUDA out-of-memory errors."""

    def __init__(self, network, device, batch_size: int) -> None:
        self.network = network
        self.device = device
        self.batch_size = max(1, int(batch_size))

    def _move(self, device) -> None:
        self.device = device
        self.network.to(device)
        volumetric = any(p.ndim == 5 for p in self.network.parameters())
        self.network.to(memory_format=self._memory_format(5 if volumetric else 4))

    def _memory_format(self, ndim: int):
        """Channels-last where it is faster: 2D nets everywhere, 3D nets on the CPU.

        On the CPU, oneDNN runs the default 2.5D network 1.5x and the 3D baseline
        1.45x faster channels-last (2 threads); on a GPU, 2D channels-last is what
        the tensor cores want, and 3D stays as measured.
        """
        import torch

        if ndim == 4:
            return torch.channels_last
        if ndim == 5 and self.device.type == "cpu":
            return torch.channels_last_3d
        return torch.contiguous_format

    def forward(self, x):
        """Logits for ``x`` (N, C, ...) as float32 on the CPU-or-device of the run."""
        import torch

        while True:
            try:
                with torch.inference_mode():
                    parts = []
                    for s in range(0, x.shape[0], self.batch_size):
                        xb = x[s:s + self.batch_size].to(self.device, non_blocking=True)
                        xb = xb.contiguous(memory_format=self._memory_format(xb.ndim))
                        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                            enabled=self.device.type == "cuda"):
                            parts.append(self.network(xb).float())
                    return parts[0] if len(parts) == 1 else torch.cat(parts)
            except torch.OutOfMemoryError as exc:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.batch_size > 1:
                    self.batch_size //= 2
                    warnings.warn(f"out of memory on {self.device}: retrying with {self.batch_size} "
                                  "per batch (slower; --batch-size sets it)", RuntimeWarning,
                                  stacklevel=3)
                    continue
                if self.device.type == "cuda":
                    warnings.warn("GPU out of memory at a batch of one slice: continuing on the "
                                  "CPU (slower)", RuntimeWarning, stacklevel=3)
                    self._move(__import__("torch").device("cpu"))
                    continue
                raise ResourceLimitError(
                    "out of memory even with one slice per batch; use a coarser model "
                    "spacing or free memory"
                ) from exc


def _slice_pass(runner: _Runner, x, axis: int, card: ModelCard, divisor: int, *,
                into=None, chunk: int, progress: ProgressFn | None, stage: str):
    """One 2.5D pass over model-grid image ``x`` (I, J, K) with slices normal to ``axis``.

    With ``into``, a (C, I, J, K) float32 tensor, adds the softmax probabilities to it
    (planes are fused in one buffer) and returns it; else returns ``(channels, top)``,
    (I, J, K) int64 channels and float16 top-class probabilities (0 on background).
    """
    import torch

    n, h, w = x.movedim(axis, 0).shape
    half = card.context // 2
    ph, pw = (-h) % divisor, (-w) % divisor
    # one contiguous copy, padded in-plane once: stacks are then cheap row gathers
    xs = x.new_full((n, h + ph, w + pw), card.value_range[0])
    xs[:, :h, :w] = x.movedim(axis, 0)
    offsets = torch.arange(-half, half + 1)
    out = (into.movedim(axis + 1, 1) if into is not None  # (C, n, h, w) view of ``into``
           else torch.zeros((n, h, w), dtype=torch.int64, device=x.device))
    top = None if into is not None else torch.zeros((n, h, w), dtype=torch.float16, device=x.device)
    report(progress, stage, 0.0)
    for s in range(0, n, chunk):
        idx = (torch.arange(s, min(n, s + chunk))[:, None] + offsets[None, :]).clamp(0, n - 1)
        logits = runner.forward(xs[idx.to(xs.device)])[:, :, :h, :w].to(x.device)  # (b, C, h, w)
        if into is not None:
            out[:, s:s + len(idx)] += torch.softmax(logits, dim=1).movedim(1, 0)
        else:
            best = torch.max(logits, dim=1)
            out[s:s + len(idx)] = best.indices
            # the top class's softmax probability (the confidence), on organ voxels only:
            # 1 / sum(exp(l - l_max)); a full softmax would cost 5 % of the pass
            organ = best.indices != 0
            picked = logits.movedim(1, -1)[organ]
            top[s:s + len(idx)][organ] = torch.exp(picked - best.values[organ][:, None]).sum(-1).reciprocal().half()
        report(progress, stage, min(n, s + chunk) / n)
    if into is not None:
        return into
    return out.movedim(0, axis), top.movedim(0, axis)


#: Slices (2D) or windows (3D) per forward pass, by (spatial dims, device type). On
#: 2 CPU threads the 2.5D network runs fastest with 4-8 slices (1.18 s per 104 slices
#: of 240 x 240 at 8, 1.40 s at 16: cache), the 3D baseline with 4 windows of 96^3
#: (2.88 s per 18 windows, 3.29 s at 2).
DEFAULT_BATCH = {(2, "cpu"): 8, (3, "cpu"): 4, (2, "cuda"): 64, (3, "cuda"): 8}


def default_batch(spatial_dims: int, device_type: str) -> int:
    """Default slices or windows per forward pass (see :data:`DEFAULT_BATCH`)."""
    return DEFAULT_BATCH.get((spatial_dims, device_type), 8)


def predict_model_grid(model: SegModel, x, *, planes: str | Sequence[str] = "auto",
                       device: str = "cpu", batch_size: int | None = None,
                       probabilities: bool = False, progress: ProgressFn | None = None):
    """Label a normalised model-grid image with the network.

    Parameters
    ----------
    model : SegModel
        Loaded network and card.
    x : (I, J, K) torch.Tensor of float32
        Image on the model grid, already normalised (:func:`normalise`).
    planes : str or sequence of str
        ``"auto"`` (the planes the model was trained on; axial only for slabs under
        :data:`AUTO_FUSION_MIN_MM` and for studies where the other planes are less
        sure than the axial one, see :func:`choose_fusion`), ``"axial"``, ``"all"``
        (fuse three planes) or plane names (2D networks).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    batch_size : int, optional
        Slices (2D) or windows (3D) per forward pass; default :func:`default_batch`.
    probabilities : bool
        Return softmax probabilities instead of channel indices.

    Returns
    -------
    torch.Tensor
        (I, J, K) int64 output-channel index per voxel (0 = background), or with
        ``probabilities`` (C, I, J, K) float16 (averaged over planes); on the device of ``x``.
        :func:`predict_grid` gives the same with the model's confidence and the planes used.
    """
    return predict_grid(model, x, planes=planes, device=device, batch_size=batch_size,
                        probabilities=probabilities, progress=progress).out


def predict_grid(model: SegModel, x, *, planes: str | Sequence[str] = "auto",
                 device: str = "cpu", batch_size: int | None = None,
                 probabilities: bool = False, progress: ProgressFn | None = None) -> GridPrediction:
    """:func:`predict_model_grid` with the model's confidence and the planes it used.

    Returns
    -------
    GridPrediction
        The labels or probabilities, the top-class probability per voxel, the planes
        fused and (for ``planes="auto"`` on a whole abdomen) each plane pass's confidence.
    """
    import torch

    card = model.card
    dev = resolve_device(device)
    runner = _Runner(model.network, dev, batch_size or default_batch(card.spatial_dims, dev.type))
    runner._move(dev)
    divisor = _divisor(model)
    if card.spatial_dims == 3:
        return _volume_pass(runner, x, card, divisor, progress, probabilities)
    chosen = resolve_planes(planes, card.planes)
    compare = planes == "auto" and len(chosen) > 1 and "axial" in chosen
    if compare:
        axial = plane_axis("axial", card.orientation)
        if x.shape[axial] * card.spacing_mm[axial] < AUTO_FUSION_MIN_MM:
            chosen, compare = ("axial",), False
        else:  # the axial pass first: it is what auto falls back on
            chosen = ("axial", *(p for p in chosen if p != "axial"))
    elif planes == "auto" and len(chosen) > 1:
        axial = plane_axis("axial", card.orientation)
        if x.shape[axial] * card.spacing_mm[axial] < AUTO_FUSION_MIN_MM:
            chosen = chosen[:1]
    missing = [p for p in chosen if p not in card.planes]
    if missing:
        raise ModelError(f"this model was trained on {', '.join(card.planes)} slices only, not "
                         f"{', '.join(missing)}; use planes='axial' or a model trained on all planes")
    if len(chosen) == 1 and not probabilities:
        channels, top = _slice_pass(runner, x, plane_axis(chosen[0], card.orientation), card, divisor,
                                    chunk=runner.batch_size, progress=progress,
                                    stage=f"segmenting {chosen[0]} slices")
        return GridPrediction(channels, top, chosen)
    total = torch.zeros((len(card.channel_ids), *x.shape), dtype=torch.float32, device=x.device)
    confidence: dict[str, float] = {}
    axial_only = None
    for plane in chosen:
        _slice_pass(runner, x, plane_axis(plane, card.orientation), card, divisor, into=total,
                    chunk=runner.batch_size, progress=progress, stage=f"segmenting {plane} slices")
        if compare and plane == "axial":  # kept in case fusion turns out worse
            axial_only = total.half()
            confidence["axial"] = mean_organ_confidence(axial_only)
    total.div_(len(chosen))
    used = chosen
    if compare:
        confidence["all"] = mean_organ_confidence(total)
        if not choose_fusion(confidence):
            total, used = axial_only.float(), ("axial",)
    del axial_only
    best = torch.max(total, dim=0)
    return GridPrediction(total.half() if probabilities else best.indices, best.values.half(), used,
                          {k: round(v, 4) for k, v in confidence.items()})


def _divisor(model: SegModel) -> int:
    from medrecon.models.nets import NetSpec

    if model.card.net.get("arch") == "bundle":
        return 16
    return NetSpec.from_dict(model.card.net).divisor


def _volume_pass(runner: _Runner, x, card: ModelCard, divisor: int, progress, probabilities):
    import torch
    from monai.inferers import sliding_window_inference

    roi = [max(divisor, int(round(r / s / divisor)) * divisor)
           for r, s in zip(card.roi_mm, card.spacing_mm, strict=True)]
    report(progress, "segmenting volume", 0.0)
    with torch.inference_mode():  # the runner returns inference tensors MONAI then scales in place
        logits = sliding_window_inference(
            x[None, None], roi_size=roi, sw_batch_size=runner.batch_size,
            predictor=runner.forward, overlap=0.25, mode="gaussian",
            sw_device=runner.device, device=x.device,
        )
    report(progress, "segmenting volume", 1.0)
    probs = torch.softmax(logits[0], dim=0)
    best = torch.max(probs, dim=0)
    return GridPrediction(probs.half() if probabilities else best.indices, best.values.half())


def channel_argmax(t, dim: int):
    """Index of the largest value along ``dim`` (first one on ties), as int64.

    ``torch.max(...).indices`` gives the same answer as ``argmax`` but is 2-4x faster
    over the channel axis of (C, ...) or (N, C, ...) tensors on the CPU.
    """
    import torch

    return torch.max(t, dim=dim).indices


def ids_from_channels(channels, channel_ids: Sequence[int]):
    """Map output-channel indices to label ids (uint8, or int16 above 255), same device."""
    import torch

    dtype = torch.uint8 if max(channel_ids) < 256 else torch.int16
    lut = torch.as_tensor(np.asarray(channel_ids), dtype=dtype, device=channels.device)
    return lut[channels.long()]
