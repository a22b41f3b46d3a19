"""The image-to-shape network and its checkpoints.

:class:`ShapeNet` (tensors (N, C, gi, gj, gk), slice axis last):

1. a 2D CNN encoder with shared weights encodes each drawn slice (image and
   mask channels) into a vector, tagged with the slice's position in the box;
2. fully connected layers fuse the set of slice vectors (mean and max over the
   slices, so any number of slices works) into a latent code;
3. a 3D transposed-convolution decoder turns the latent code into a feature grid
   over the organ's box;
4. a small 3D convolutional head reads those features with the box's image and
   the signed-distance interpolation (:mod:`~medrecon.completion.features`) and
   predicts a correction (residual) to the interpolation's logit. The output is
   the organ occupancy logit ``gain * sdf + bias + residual``.

At inference the residual, predicted on the coarse box grid, is upsampled to the
box at full resolution and added to the full-resolution interpolation, so fine
detail of the drawing is not lost to the coarse grid.

Checkpoints are medrecon's one checkpoint format
(:func:`medrecon.models.checkpoint.save_checkpoint`): a folder with
``model.safetensors`` (weights only, never a pickle) and ``model.json`` (here:
architecture arguments, training command, metrics). The trainer is
:mod:`medrecon.train.shape`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medrecon.completion.features import CHANNELS, label_inputs
from medrecon.completion.sdf import LabelScore
from medrecon.completion.sparse import Annotation
from medrecon.errors import ModelError, require
from medrecon.progress import ProgressFn, report

#: Folder of the committed default shape model.
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "shape_default"
FORMAT = "medrecon-shape-net/1"


def _torch():
    return require("torch", extra="ml", feature="network shape completion")


def build_shape_net(**kwargs: Any):
    """Build a :class:`ShapeNet` (``torch.nn.Module``) from JSON-able arguments.

    Parameters
    ----------
    grid : tuple of 3 int
        Box grid (gi, gj, gk); each a multiple of 8 (default 32, 32, 32).
    latent : int
        Size of the latent code (default 128).
    base : int
        Channel width of the convolutions (default 16).
    max_slices : int
        Most drawn slices the encoder reads (default 12).
    """
    _torch()
    require("monai", extra="ml", feature="network shape completion")
    from medrecon.completion._net import ShapeNet

    return ShapeNet(**kwargs)


def save_shape_model(model, folder: str | os.PathLike, *, info: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``folder`` (atomically).

    Parameters
    ----------
    model : ShapeNet
        The trained network.
    folder : path-like
        Output folder (created).
    info : dict
        JSON-able training description and metrics, stored under ``"training"``.
    """
    from medrecon.models.checkpoint import save_checkpoint

    card = {"format": FORMAT, "architecture": "ShapeNet", "args": model.config,
            "channels": list(CHANNELS), "training": info}
    return save_checkpoint(model, card, folder)


def load_shape_model(model: str | os.PathLike = "default"):
    """Load a shape model: ``"default"`` or a folder (or its ``model.json``).

    Weights are read with safetensors only; nothing is unpickled.

    Raises
    ------
    ModelError
        If the folder lacks ``model.json``/``model.safetensors``, or they do not
        describe a shape network.
    """
    from medrecon.models.checkpoint import checkpoint_files, load_weights, read_card

    folder = DEFAULT_MODEL if str(model) == "default" else Path(model)
    try:
        meta_path, weights = checkpoint_files(folder)
    except ModelError as exc:
        raise ModelError(f"{folder} is not a shape model: {exc} "
                         "(train one with  python -m medrecon.train.shape --out FOLDER)") from None
    meta = read_card(meta_path)
    if meta.get("format") != FORMAT:
        raise ModelError(f"{meta_path} is not a {FORMAT} checkpoint (format={meta.get('format')!r})")
    net = build_shape_net(**meta.get("args", {}))
    load_weights(net, weights)
    net.eval()
    return net


def batch_inputs(items: list, *, max_slices: int):
    """Stack :class:`LabelInputs` (or training samples) into tensors.

    Returns
    -------
    volume : (N, 5, gi, gj, gk) tensor
    slices : (N, S, 2, gi, gj) tensor, zero-padded
    positions : (N, S) tensor
    valid : (N, S) bool tensor
    """
    torch = _torch()
    n = len(items)
    s = max(1, min(max_slices, max(len(it.positions) for it in items)))
    gi, gj = items[0].volume.shape[1:3]
    slices = torch.zeros((n, s, 2, gi, gj))
    positions = torch.zeros((n, s))
    valid = torch.zeros((n, s), dtype=torch.bool)
    for b, it in enumerate(items):
        m = min(s, len(it.positions))
        slices[b, :m] = torch.as_tensor(np.asarray(it.slices[:m], np.float32))
        positions[b, :m] = torch.as_tensor(np.asarray(it.positions[:m], np.float32))
        valid[b, :m] = True
    volume = torch.stack([torch.as_tensor(np.asarray(it.volume, np.float32)) for it in items])
    return volume, slices, positions, valid


def network_scores(
    array: np.ndarray,
    annotations: dict[int, Annotation],
    *,
    spacing: np.ndarray,
    image: np.ndarray | None,
    model,
    flips: bool = True,
    progress: ProgressFn | None = None,
) -> list[LabelScore]:
    """Occupancy logits of every annotated label, at full resolution in its box.

    Parameters
    ----------
    array : (I, J, K) ndarray of int
        Sparse labels, slice axis last.
    annotations : dict
        From :func:`medrecon.completion.sparse.annotations`.
    spacing : (3,) array_like of float
        Voxel size in mm.
    image : (I, J, K) ndarray of float, optional
        The image on the same grid.
    model : ShapeNet
        From :func:`load_shape_model`.
    flips : bool
        Average the residual over the 8 flips of the box axes (the flips the
        network was trained with), which steadies the correction.
    """
    torch = _torch()
    import torch.nn.functional as F

    cfg = model.config
    grid = tuple(cfg["grid"])
    out = []
    items = list(annotations.items())
    for n, (label, ann) in enumerate(items):
        report(progress, f"completion: {label}", 0.05 + 0.9 * n / max(1, len(items)))
        inputs = label_inputs(array, ann, spacing=spacing, image=image, grid=grid,
                              max_slices=cfg["max_slices"])
        volume, slices, positions, valid = batch_inputs([inputs], max_slices=cfg["max_slices"])
        combos = [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)] if flips else [(0, 0, 0)]
        with torch.inference_mode():
            residual = torch.zeros((1, 1, *grid))
            for fi, fj, fk in combos:
                vdims = [d for d, f in ((2, fi), (3, fj), (4, fk)) if f]
                sdims = [d for d, f in ((3, fi), (4, fj)) if f]
                v = volume.flip(vdims) if vdims else volume
                sl = slices.flip(sdims) if sdims else slices
                pos = 1.0 - positions if fk else positions
                _, r = model(v, sl, pos, valid)
                residual += (r.flip(vdims) if vdims else r) / len(combos)
            full = F.interpolate(residual, size=inputs.sdf_full.shape, mode="trilinear",
                                 align_corners=True)[0, 0].numpy()
        gain, bias = model.gain.item(), model.bias.item()
        out.append(LabelScore(label, inputs.box, (gain * inputs.sdf_full + bias + full).astype(np.float32)))
    return out
