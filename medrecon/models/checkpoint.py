"""Checkpoints: weights in safetensors plus a JSON card; pickles are refused.

A medrecon checkpoint is a folder (or a pair of files with one stem) holding

* ``model.safetensors`` - the state dict, tensors only;
* ``model.json`` - the :class:`~medrecon.models.card.ModelCard`: architecture and its arguments, the
  label table (output channel -> TotalSegmentator id and name), the model grid
  (voxel size in mm, LPS orientation codes), intensity normalisation, the
  training data and its metrics.

The shape-completion network (:mod:`medrecon.completion.shape_net`) is stored the
same way, through the same :func:`save_checkpoint` and :func:`checkpoint_files`;
only its card's content differs (architecture arguments and training record).

Loading never unpickles: ``.pt``/``.pth``/``.ckpt``/``.pkl``/``.bin`` files are
refused outright. A MONAI bundle folder (``configs/``, ``models/``) is code (its
configs hold ``$`` expressions), so it loads only with ``trust_bundle=True``;
even then its ``models/model.pt`` is read with ``torch.load(weights_only=True)``,
which cannot run code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medrecon.atomic import atomic_path, write_text
from medrecon.errors import ModelError, require
from medrecon.models.card import CARD_VERSION, ModelCard, SegModel, load_weights
from medrecon.models.nets import NetSpec, build_network

#: Folder of the model shipped with medrecon (``model="default"``).
DEFAULT_MODEL_DIR = Path(__file__).parent / "default"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".ts", ".tar", ".zip")


def save_model(network, card: ModelCard, folder: str | os.PathLike) -> Path:
    """Write a segmentation checkpoint (see :func:`save_checkpoint`)."""
    return save_checkpoint(network, card.to_dict(), folder)


def save_checkpoint(network, card: Mapping[str, Any], folder: str | os.PathLike) -> Path:
    """Write ``folder/model.safetensors`` (the state dict) and ``folder/model.json`` (``card``) atomically.

    Parameters
    ----------
    network : torch.nn.Module
        The network (a DDP or ``torch.compile`` wrapper is unwrapped).
    card : Mapping
        JSON-ready description of the network.

    Returns
    -------
    Path
        The folder.
    """
    st = require("safetensors.torch", extra="ml", feature="saving models", package="safetensors")
    out = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(network).state_dict().items()}
    with atomic_path(out / "model.safetensors") as tmp:
        st.save_file(state, str(tmp), metadata={"format": "pt", "medrecon_card_version": str(CARD_VERSION)})
    write_text(out / "model.json", json.dumps(dict(card), indent=1) + "\n")
    return out


def _unwrap(network):
    # DDP and torch.compile wrap the module; checkpoints hold the bare one
    inner = getattr(network, "module", network)
    return getattr(inner, "_orig_mod", inner)


def _refuse_pickle(path: Path) -> None:
    raise ModelError(
        f"{path}: refusing to load a pickled checkpoint ('{path.suffix}'): unpickling can run "
        "arbitrary code. Use a medrecon checkpoint (model.safetensors + model.json, written by "
        "'medrecon train'), or a MONAI bundle folder with --trust-bundle."
    )


def resolve_model_path(model: str | os.PathLike) -> Path:
    """Turn ``"default"``, a folder, a ``.json`` or a ``.safetensors`` path into a path."""
    if str(model) == "default":
        return DEFAULT_MODEL_DIR
    p = Path(model)
    if not p.exists():
        raise ModelError(f"model {str(model)!r} not found: give 'default', a checkpoint folder "
                         "(model.json + model.safetensors) or a MONAI bundle folder")
    return p


def load_model(model: str | os.PathLike = "default", *, trust_bundle: bool = False) -> SegModel:
    """Load a checkpoint or (trusted) MONAI bundle without unpickling anything.

    Parameters
    ----------
    model : str or path-like
        ``"default"``, a checkpoint folder, its ``.json`` or ``.safetensors`` file, or a
        MONAI bundle folder (``configs/`` and ``models/``).
    trust_bundle : bool
        Allow a MONAI bundle: its config holds code expressions.

    Raises
    ------
    ModelError
        For pickles, untrusted bundles, missing or inconsistent files.
    """
    p = resolve_model_path(model)
    if p.is_dir() and (p / "configs").is_dir():
        from medrecon.models.bundle import load_bundle

        if not trust_bundle:
            raise ModelError(
                f"{p} is a MONAI bundle: its configs contain code expressions, so it runs only "
                "if you trust its source; pass --trust-bundle (trust_bundle=True) to load it"
            )
        return load_bundle(p)
    card_path, weights = checkpoint_files(p)
    card = ModelCard.from_dict(read_card(card_path))
    network = build_network(NetSpec.from_dict(card.net))
    load_weights(network, weights)
    network.eval()
    return SegModel(network=network, card=card, source=str(p))


def checkpoint_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """Find the card and weights of a checkpoint: a folder, or its ``.json`` or ``.safetensors`` file.

    Returns
    -------
    card, weights : Path
        ``model.json`` and ``model.safetensors`` (or the pair with the given stem).

    Raises
    ------
    ModelError
        For a pickle, another kind of file, or a missing half of the pair.
    """
    p = Path(path)
    if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES:
        _refuse_pickle(p)
    if p.is_dir():
        card_path, weights = p / "model.json", p / "model.safetensors"
    elif p.suffix == ".json":
        card_path, weights = p, p.with_suffix(".safetensors")
    elif p.suffix == ".safetensors":
        card_path, weights = p.with_suffix(".json"), p
    else:
        raise ModelError(f"{p}: not a checkpoint; expected a folder with model.json and "
                         "model.safetensors, or one of those files")
    for f in (card_path, weights):
        if not f.is_file():
            raise ModelError(f"checkpoint file {f} is missing; a checkpoint needs both "
                             f"{card_path.name} and {weights.name}")
    return card_path, weights


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint's JSON card.

    Raises
    ------
    ModelError
        If the file cannot be read or is not a JSON object.
    """
    try:
        card = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read model card {path}: {exc}") from exc
    if not isinstance(card, dict):
        raise ModelError(f"model card {path} is not a JSON object")
    return card

