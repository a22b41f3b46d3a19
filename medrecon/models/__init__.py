"""Organ segmentation with 2.5D slice networks (MONAI/PyTorch).

Entry point: :func:`segment` (a :class:`~medrecon.volume.Volume` in, a
:class:`~medrecon.volume.LabelMap` on exactly the same grid out, with
TotalSegmentator label ids and names); :func:`segment_scored` gives the same
labels with the model's confidence per organ and the planes it used. Checkpoints: :mod:`.checkpoint`;
architectures: :mod:`.nets`; the model grid: :mod:`.grid`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from math import prod

from medrecon.errors import EmptySegmentationError, InputError
from medrecon.progress import ProgressFn, report, scaled
from medrecon.volume import LabelMap, Volume

__all__ = ["ScoredLabels", "load_model", "segment", "segment_scored"]

#: Largest input (voxels) whose labels ``upsample="auto"`` interpolates linearly.
LINEAR_LIMIT = 24_000_000


def load_model(model="default", *, trust_bundle: bool = False):
    """Load a model (see :func:`medrecon.models.checkpoint.load_model`), cached by path."""
    from medrecon.models.card import SegModel
    from medrecon.models.checkpoint import resolve_model_path

    if isinstance(model, SegModel):
        return model
    path = resolve_model_path(model)
    stamp = max((f.stat().st_mtime_ns for f in path.rglob("*") if f.is_file()), default=0) \
        if path.is_dir() else path.stat().st_mtime_ns
    return _load_cached(str(path.resolve()), stamp, bool(trust_bundle))


@dataclass(frozen=True, eq=False)
class ScoredLabels:
    """A network's labels with its own confidence, as every network source gives them.

    Attributes
    ----------
    labels : LabelMap
        Labels on the input grid.
    confidence : Mapping[int, float]
        Label id -> mean top-class probability over the organ's voxels (on the
        model grid), in [0, 1]; the plausibility checks use it.
    planes : tuple of str
        Slice planes whose passes were fused (empty for 3D networks and engines).
    plane_confidence : Mapping[str, float]
        Each plane pass's confidence where ``planes="auto"`` compared them.
    """

    labels: LabelMap
    confidence: Mapping[int, float] = field(default_factory=dict)
    planes: tuple[str, ...] = ()
    plane_confidence: Mapping[str, float] = field(default_factory=dict)


@lru_cache(maxsize=4)
def _load_cached(path: str, stamp: int, trust_bundle: bool):
    from medrecon.models.checkpoint import load_model as _load

    return _load(path, trust_bundle=trust_bundle)


def segment(
    volume: Volume,
    *,
    model="default",
    device: str = "cpu",
    planes: str | Sequence[str] = "auto",
    trust_bundle: bool = False,
    batch_size: int | None = None,
    upsample: str = "auto",
    largest_component: bool = True,
    progress: ProgressFn | None = None,
) -> LabelMap:
    """Segment organs in a CT volume: the labels of :func:`segment_scored`, without the confidence.

    Parameters
    ----------
    volume : Volume
        (I, J, K) image, CT in Hounsfield units, any orientation.
    model : str, path-like or SegModel
        ``"default"`` (shipped model), a checkpoint folder/file, a MONAI bundle
        folder (needs ``trust_bundle``) or an already loaded model.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    planes : str or sequence of str
        ``"auto"`` (the planes the model was trained on, axial only where
        :func:`segment_scored` says), ``"axial"``, or ``"all"`` to average axial,
        coronal and sagittal passes.
    trust_bundle : bool
        Allow MONAI bundle folders (their configs contain code).
    batch_size : int, optional
        Slices (2D) or windows (3D) per forward pass (default: by network and device).
    upsample : {"auto", "linear", "nearest"}
        How labels return to the input grid (see :func:`segment_scored`).
    largest_component : bool
        Keep only the largest connected component of each organ.
    progress : ProgressFn, optional
        Called with (stage, fraction); may raise ``Cancelled``.

    Returns
    -------
    LabelMap
        Same shape and affine as ``volume``; ids and names from the model's label table.

    Raises
    ------
    ModelError
        Unloadable, unsafe or mismatched model.
    EmptySegmentationError
        The model found no organ at all.
    """
    return segment_scored(volume, model=model, device=device, planes=planes, trust_bundle=trust_bundle,
                          batch_size=batch_size, upsample=upsample, largest_component=largest_component,
                          progress=progress).labels


def segment_scored(
    volume: Volume,
    *,
    model="default",
    device: str = "cpu",
    planes: str | Sequence[str] = "auto",
    trust_bundle: bool = False,
    batch_size: int | None = None,
    upsample: str = "auto",
    largest_component: bool = True,
    progress: ProgressFn | None = None,
) -> ScoredLabels:
    """Segment organs in a CT volume.

    The image is resampled (linearly, separably) to the model's voxel size and
    orientation, labelled slice by slice (or with sliding windows for 3D
    networks) and the labels are mapped back onto the input grid exactly.

    Parameters
    ----------
    volume : Volume
        (I, J, K) image, CT in Hounsfield units, any orientation.
    model : str, path-like or SegModel
        ``"default"`` (shipped model), a checkpoint folder/file, a MONAI bundle
        folder (needs ``trust_bundle``) or an already loaded model.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    planes : str or sequence of str
        ``"auto"`` (default: every plane the model was trained on, all three for the
        shipped model, but axial only on slabs shorter than 150 mm head to foot and
        where the other planes are less sure than the axial one),
        ``"axial"``, or ``"all"`` to average axial, coronal and sagittal passes.
    trust_bundle : bool
        Allow MONAI bundle folders (their configs contain code).
    batch_size : int, optional
        Slices (2D) or windows (3D) per forward pass (default 8 slices or 4 windows
        on the CPU, 64 slices or 8 windows on a GPU); halved
        automatically on GPU out-of-memory errors.
    upsample : str
        How labels return to the input grid: ``"linear"`` (interpolate class
        probabilities, smooth borders), ``"nearest"`` (fast, for large volumes) or
        ``"auto"`` (linear up to :data:`LINEAR_LIMIT` input voxels).
    largest_component : bool
        Keep only the largest connected component of each organ (stray blobs are
        false positives: every predicted structure is one body).
    progress : ProgressFn, optional
        Called with (stage, fraction); may raise ``Cancelled``.

    Returns
    -------
    ScoredLabels
        Labels with the same shape and affine as ``volume`` (ids and names from the
        model's label table), each organ's confidence and the planes used.

    Raises
    ------
    ModelError
        Unloadable, unsafe or mismatched model.
    EmptySegmentationError
        The model found no organ at all.
    """
    import torch

    from medrecon.models.grid import GridMap, as_tensor
    from medrecon.models.inference import (
        channel_confidence,
        ids_from_channels,
        normalise,
        predict_grid,
        resolve_device,
    )

    if not isinstance(volume, Volume):
        raise InputError(f"segment needs a medrecon Volume, got {type(volume).__name__}; "
                         "load files with medrecon.io.load")
    report(progress, "loading model", 0.0)
    seg_model = load_model(model, trust_bundle=trust_bundle)
    card = seg_model.card
    grid = GridMap.build(volume.affine, volume.shape, spacing=card.spacing_mm,
                         orientation=card.orientation)
    report(progress, "resampling to the model grid", 0.05)
    dev = resolve_device(device)
    src = as_tensor(volume.array, torch.float32).to(dev)
    x = normalise(grid.image_to_model(src, fill=card.window[0]), card)
    del src
    if upsample not in ("auto", "linear", "nearest"):
        raise ValueError(f"upsample must be 'auto', 'linear' or 'nearest', got {upsample!r}")
    linear = upsample == "linear" or (upsample == "auto" and prod(volume.shape) <= LINEAR_LIMIT)
    pred = predict_grid(seg_model, x, planes=planes, device=device, batch_size=batch_size,
                        probabilities=linear, progress=scaled(progress, 0.1, 0.9))
    out, top, planes_used, plane_confidence = pred.out, pred.top, pred.planes, pred.plane_confidence
    del x, pred
    if largest_component:
        from medrecon.models.postprocess import largest_component_labels, largest_components

        report(progress, "removing stray fragments", 0.88)
        out = (largest_components(out) if linear
               else largest_component_labels(out, n_channels=len(card.channel_ids)))
    if linear:  # confidence after the clean-up, from the probabilities the labels come from
        best = torch.max(out, dim=0)
        channels, top = best.indices, best.values
    else:
        channels = out
    confidence = {card.channel_ids[c]: round(p, 4)
                  for c, p in channel_confidence(channels, top, len(card.channel_ids)).items()}
    del channels, top
    report(progress, "mapping labels to the input grid", 0.9)
    if linear:
        array = ids_from_channels(grid.argmax_to_input(out), card.channel_ids).cpu().numpy()
    else:
        array = grid.labels_to_input(ids_from_channels(out, card.channel_ids))
    if not array.any():
        raise EmptySegmentationError(
            f"the model found no organ in {volume.source or 'the volume'}: is it a CT of the "
            "trunk in Hounsfield units? For other data train a model with 'medrecon train'"
        )
    report(progress, "done", 1.0)
    labels = LabelMap(array=array, affine=volume.affine, names=seg_model.names,
                      source=os.fspath(volume.source) if volume.source else "")
    return ScoredLabels(labels, confidence, planes_used, dict(plane_confidence))
