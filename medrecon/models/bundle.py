"""MONAI bundle folders (model-zoo layout), loaded only when the user trusts them.

A bundle's ``configs/inference.json`` (or ``.yaml``) describes its network with
``network_def`` and may hold ``$`` code expressions, which MONAI's
:class:`~monai.bundle.ConfigParser` evaluates: the caller must have passed
``trust_bundle=True`` (checked in :func:`medrecon.models.checkpoint.load_model`).
The weights, ``models/model.safetensors`` or ``models/model.pt``, still load
without running code (``torch.load(weights_only=True)``). TorchScript files
(``model.ts``) are programs and are not supported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medrecon.errors import ModelError, require
from medrecon.models.card import ModelCard, SegModel, load_weights


def _config_file(folder: Path) -> Path:
    for name in ("inference.json", "inference.yaml", "inference.yml"):
        if (folder / "configs" / name).is_file():
            return folder / "configs" / name
    raise ModelError(f"{folder}: bundle has no configs/inference.json (or .yaml)")


def _walk(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _find(raw: Any, key: str, target: str | None = None) -> Any:
    """Return the first plain (non-expression) value of ``key`` in the config.

    With ``target``, only dicts whose ``_target_`` contains it count.
    """
    for d in _walk(raw):
        if key in d and (target is None or target in str(d.get("_target_", ""))):
            value = d[key]
            if not (isinstance(value, str) and value.startswith(("$", "@", "%"))):
                return value
    return None


def _labels(folder: Path, n_out: int) -> dict[int, str]:
    """Label id -> name of output channels 1, 2, ... in order.

    The metadata's channel names (``network_data_format.outputs.*.channel_def``)
    get their ids by the vocabulary's id rule (:func:`medrecon.labels.assign_ids`):
    the whole-body bundle's ``aorta`` (its channel 7) becomes label 52 as in
    TotalSegmentator's ``total`` task; a name the vocabulary does not know gets
    an id from 300 up. Without names, channel ``i`` is label ``i``.
    """
    from medrecon.labels import assign_ids

    meta = folder / "configs" / "metadata.json"
    names: dict[int, str] = {}
    if meta.is_file():
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            outputs = data.get("network_data_format", {}).get("outputs", {})
            for out in outputs.values():
                for k, v in dict(out.get("channel_def", {})).items():
                    names[int(k)] = str(v)
        except (ValueError, AttributeError, TypeError) as exc:
            raise ModelError(f"{meta}: cannot read channel names: {exc}") from exc
    if not any(names.get(i) for i in range(1, n_out)):
        return {i: f"label_{i}" for i in range(1, n_out)}
    pairs = assign_ids([names.get(i, f"label_{i}") for i in range(1, n_out)], source=str(meta))
    return dict(pairs)


def load_bundle(folder: str | Path) -> SegModel:
    """Build a trusted bundle's network and load its weights (tensors only).

    Raises
    ------
    ModelError
        When the bundle lacks a network definition or loadable weights.
    """
    import torch

    bundle = require("monai.bundle", extra="ml", feature="MONAI bundles", package="monai")
    folder = Path(folder)
    cfg_path = _config_file(folder)
    parser = bundle.ConfigParser()
    parser.read_config(str(cfg_path))
    raw = parser.get()
    if "network_def" not in raw:
        raise ModelError(f"{cfg_path}: no 'network_def' entry describing the network")
    try:
        network = parser.get_parsed_content("network_def")
    except Exception as exc:  # noqa: BLE001 - config evaluation can fail in many ways
        raise ModelError(f"{cfg_path}: cannot build 'network_def': {exc}") from exc
    if not isinstance(network, torch.nn.Module):
        raise ModelError(f"{cfg_path}: 'network_def' did not build a torch module")
    models = folder / "models"
    if (models / "model.safetensors").is_file():
        load_weights(network, models / "model.safetensors")
    elif (models / "model.pt").is_file():
        try:
            state = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - UnpicklingError and friends
            raise ModelError(f"{models / 'model.pt'}: refused, it holds more than tensors "
                             f"(weights_only load failed: {exc})") from exc
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        try:
            network.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError) as exc:
            raise ModelError(f"{models / 'model.pt'} does not fit 'network_def': {exc}") from exc
    else:
        raise ModelError(f"{models}: no model.safetensors or model.pt (TorchScript model.ts "
                         "is code and is not supported)")
    network.eval()
    spatial_dims = int(getattr(network, "dimensions", _find(raw.get("network_def"), "spatial_dims") or 3))
    n_out = int(_find(raw.get("network_def"), "out_channels") or 2)
    pixdim = _find(raw, "pixdim") or (1.5, 1.5, 2.0)
    pixdim = [float(x) for x in (pixdim if isinstance(pixdim, list | tuple) else [pixdim] * 3)]
    a_min, a_max = _find(raw, "a_min", "ScaleIntensityRange"), _find(raw, "a_max", "ScaleIntensityRange")
    b_min, b_max = _find(raw, "b_min", "ScaleIntensityRange"), _find(raw, "b_max", "ScaleIntensityRange")
    axcodes = _find(raw, "axcodes") or "RAS"
    roi = _find(raw, "roi_size") or (96, 96, 96)
    labels = _labels(folder, n_out)
    card = ModelCard(
        net={"arch": "bundle", "spatial_dims": spatial_dims, "config": str(cfg_path)},
        labels=labels,
        channel_ids=(0, *labels),
        spacing_mm=tuple(pixdim[:3]),
        orientation=str(axcodes),
        window=(float(a_min if a_min is not None else -1000.0), float(a_max if a_max is not None else 1000.0)),
        value_range=(float(b_min if b_min is not None else 0.0), float(b_max if b_max is not None else 1.0)),
        context=1,
        roi_mm=tuple(float(r) * s for r, s in zip(roi, pixdim, strict=False)),
        training={"source": "MONAI bundle", "folder": str(folder)},
    )
    return SegModel(network=network, card=card, source=str(folder))
