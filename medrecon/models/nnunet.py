"""nnU-Net v2 trained-model folders, loaded without unpickling code.

A trained-model folder (``nnUNet_results/DatasetXXX_Name/Trainer__Plans__Config``)
holds ``plans.json`` (preprocessing, network architecture, patch size),
``dataset.json`` (channel and label names) and one ``fold_N/checkpoint_final.pth``
per trained fold. TotalSegmentator's weights are such folders.

The checkpoints are torch pickles. They are read with
``torch.load(..., weights_only=True)`` and an explicit allow-list of the plain
types nnU-Net's trainer writes into them (:data:`SAFE_GLOBALS`: numpy scalars
and dtypes in the training log); anything else is refused with a
:class:`~medrecon.errors.ModelError`, and nothing is ever loaded with
``weights_only=False``. The classes that ``plans.json`` names are resolved
only inside ``dynamic_network_architectures.architectures`` (the network) and
``torch.nn`` (its layers).

nnunetv2 is an optional dependency (the ``nnunet`` extra); it is imported on
first use. The inference itself is in :mod:`.nnunet_predict`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from medrecon.errors import MissingDependencyError, ModelError

#: File name of the weights nnU-Net's trainer writes at the end of training.
CHECKPOINT_NAME = "checkpoint_final.pth"
#: Readers whose arrays nnU-Net reorients to RAS before the network sees them.
REORIENTING_READERS = ("NibabelIOWithReorient",)
_NETWORK_PREFIX = "dynamic_network_architectures.architectures."
_LAYER_PREFIX = "torch.nn."


def install_hint() -> str:
    """Return the pip command that adds nnunetv2 without replacing the installed torch build."""
    try:
        from importlib.metadata import version

        torch_pin = f"'torch=={version('torch').split('+')[0]}' "
    except Exception:  # noqa: BLE001 - no torch yet: the plain command
        torch_pin = ""
    # nnunetv2 pulls torchvision through timm; with torch pinned in the same command pip
    # keeps the installed torch instead of fetching a newer (CUDA) build
    return f"pip install {torch_pin}'medrecon[nnunet]'"


def require_nnunet(feature: str, *, load: bool = True):
    """Import nnunetv2 (or, with ``load=False``, only check that it is installed).

    Parameters
    ----------
    feature : str
        What the user asked for, named in the message.
    load : bool
        Import it; otherwise only look for it (fast).

    Raises
    ------
    MissingDependencyError
        nnunetv2 is not installed; the message gives the install command.
    """
    import importlib.util

    try:
        if importlib.util.find_spec("nnunetv2") is None:
            raise ImportError("nnunetv2")
        if not load:
            return None
        import nnunetv2
    except ImportError as exc:
        err = MissingDependencyError("nnunetv2", "nnunet", feature)
        # the install line pins the installed torch (see install_hint); ImportError prints .msg
        err.msg = f"{feature} needs nnU-Net v2 (nnunetv2), which is not installed: run  {install_hint()}"
        err.args = (err.msg,)
        raise err from exc
    return nnunetv2


def safe_globals() -> list:
    """List the plain types, besides tensors and containers, allowed in an nnU-Net checkpoint.

    nnU-Net's trainer stores its training log (numpy scalars, possibly numpy
    arrays) and ``_best_ema`` beside the weights; numpy 1.x writes their
    reconstructors under ``numpy.core``, numpy 2 under ``numpy._core``. None of
    these can run code when unpickled: they rebuild numbers and arrays of numbers.
    """
    import numpy as np

    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed: list = [np.dtype, np.ndarray]
    for name in ("scalar", "_reconstruct"):
        fn = getattr(core, name)
        allowed += [fn, (fn, f"numpy.core.multiarray.{name}"), (fn, f"numpy._core.multiarray.{name}")]
    numeric = ("Bool", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
               "Float16", "Float32", "Float64")
    allowed += [getattr(np.dtypes, f"{n}DType") for n in numeric]
    return allowed


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an nnU-Net checkpoint: tensors, containers and :func:`safe_globals` only.

    Raises
    ------
    ModelError
        If the file holds any other object (it is never unpickled) or is not a
        checkpoint dictionary with ``network_weights``.
    """
    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals(safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, zip errors
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f"the object {found.group(1)}" if found else "something other than tensors and plain values"
        raise ModelError(f"{path}: refused: the checkpoint holds {what}, which could run code when loaded "
                         "(torch.load with weights_only=True and nnU-Net's plain types only)") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("network_weights"), dict):
        raise ModelError(f"{path}: not an nnU-Net checkpoint (no 'network_weights' dictionary)")
    return checkpoint


def weights_digest(files: list[Path], *, root: Path | None = None) -> str:
    """SHA-256 over checkpoint files: of the lines ``<name> <sha256 of file>``, sorted by name."""
    lines = []
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        name = f.relative_to(root).as_posix() if root is not None else f.name
        lines.append(f"{name} {h.hexdigest()}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class NnunetModel:
    """A loaded nnU-Net v2 trained-model folder.

    Attributes
    ----------
    folder : Path
        The trained-model folder.
    plans : PlansManager
        nnunetv2's view of ``plans.json``.
    configuration : ConfigurationManager
        The configuration the checkpoints were trained with (``3d_fullres``, ...).
    labels : LabelManager
        nnunetv2's label handling for ``dataset.json``.
    dataset_json : dict
        ``dataset.json``.
    networks : list of torch.nn.Module
        One network per fold, in eval mode on the CPU. Where the network ends in
        a 1 x 1 x 1 segmentation convolution (dynamic_network_architectures'
        U-Nets), that layer is taken out into :attr:`heads` and the network
        returns the features it maps to logits.
    heads : list of torch.nn.Conv3d or None
        Each fold's segmentation layer, or ``None`` where the network returns logits.
    mirror_axes : tuple of int or None
        Axes the trainer allows mirroring along at inference (test-time augmentation).
    trainer : str
        Trainer class name from the checkpoint.
    folds : tuple of str
        The folds used.
    weights_sha256 : str
        :func:`weights_digest` of the checkpoints used.
    """

    folder: Path
    plans: Any
    configuration: Any
    labels: Any
    dataset_json: dict
    networks: list
    heads: list
    mirror_axes: tuple[int, ...] | None
    trainer: str
    folds: tuple[str, ...]
    weights_sha256: str
    label_names: dict[int, str] = field(default_factory=dict)

    @property
    def reorient_to_ras(self) -> bool:
        """Whether nnU-Net's reader for this model reorients images to RAS before predicting."""
        return self.plans.plans.get("image_reader_writer") in REORIENTING_READERS


def find_folds(folder: Path, checkpoint: str = CHECKPOINT_NAME) -> list[str]:
    """Folds of a trained-model folder that hold ``checkpoint`` (``"0"``, ..., ``"all"``)."""
    return sorted(p.parent.name[len("fold_"):] for p in folder.glob(f"fold_*/{checkpoint}"))


def _label_names(dataset_json: dict, label_manager) -> dict[int, str]:
    """Output value -> structure name from ``dataset.json`` (regions: by ``regions_class_order``)."""
    table = {k: v for k, v in dict(dataset_json.get("labels", {})).items() if k not in ("background", "ignore")}
    if label_manager.has_regions:
        order = list(label_manager.regions_class_order or [])
        return {int(value): str(name) for name, value in zip(table, order, strict=False)}
    return {int(value): str(name) for name, value in table.items() if int(value) != 0}


def _check_architecture(configuration, where: Path) -> None:
    name = str(configuration.network_arch_class_name)
    if not name.startswith(_NETWORK_PREFIX):
        raise ModelError(f"{where}/plans.json: network class {name!r} is not one of "
                         "dynamic_network_architectures' architectures; refusing to import it")
    kwargs = configuration.network_arch_init_kwargs
    for key in configuration.network_arch_init_kwargs_req_import:
        value = kwargs.get(key)
        if value is not None and not str(value).startswith(_LAYER_PREFIX):
            raise ModelError(f"{where}/plans.json: layer {key}={value!r} is not a torch.nn class; "
                             "refusing to import it")


def _split_head(network):
    """Take the final 1 x 1 x 1 segmentation convolution out of ``network``; return it (or ``None``).

    The layer is linear, so the Gaussian-weighted mean of the tiles' logits is
    the layer applied to the mean of their features: the sliding window can
    average the decoder's few feature channels instead of every class's logits.
    """
    import torch

    decoder = getattr(network, "decoder", None)
    layers = getattr(decoder, "seg_layers", None)
    if layers is None or getattr(decoder, "deep_supervision", True) or not len(layers):
        return None
    head = layers[-1]
    if not (isinstance(head, torch.nn.Conv3d) and head.kernel_size == (1, 1, 1) and head.stride == (1, 1, 1)
            and head.padding == (0, 0, 0) and head.dilation == (1, 1, 1) and head.groups == 1):
        return None
    layers[-1] = torch.nn.Identity()
    return head.eval()


def load_nnunet_folder(folder: str | Path, *, folds: tuple[str, ...] | None = None,
                       checkpoint: str = CHECKPOINT_NAME) -> NnunetModel:
    """Load an nnU-Net v2 trained-model folder (cached by path and modification times).

    Parameters
    ----------
    folder : path-like
        ``.../DatasetXXX_Name/Trainer__Plans__Configuration`` with ``plans.json``,
        ``dataset.json`` and ``fold_N/checkpoint_final.pth``.
    folds : tuple of str, optional
        Folds to ensemble (default: every fold with a checkpoint).
    checkpoint : str
        Checkpoint file name in each fold folder.

    Raises
    ------
    ModelError
        Missing files, a refused checkpoint, an architecture outside the
        allow-list, or weights that do not fit the plans.
    MissingDependencyError
        nnunetv2 is not installed.
    """
    folder = Path(folder).expanduser().resolve()
    for name in ("plans.json", "dataset.json"):
        if not (folder / name).is_file():
            raise ModelError(f"{folder} is not an nnU-Net trained-model folder: {name} is missing")
    chosen = tuple(str(f) for f in folds) if folds else tuple(find_folds(folder, checkpoint))
    if not chosen:
        raise ModelError(f"{folder}: no fold_*/{checkpoint}; is the training finished?")
    files = [folder / f"fold_{f}" / checkpoint for f in chosen]
    for f in files:
        if not f.is_file():
            raise ModelError(f"{f} is missing")
    stamp = tuple(f.stat().st_mtime_ns for f in [folder / "plans.json", folder / "dataset.json", *files])
    return _load_cached(str(folder), chosen, checkpoint, stamp)


@lru_cache(maxsize=8)
def _load_cached(folder: str, folds: tuple[str, ...], checkpoint: str, stamp: tuple) -> NnunetModel:
    require_nnunet("an nnU-Net model")
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    root = Path(folder)
    try:
        plans_json = json.loads((root / "plans.json").read_text(encoding="utf-8"))
        dataset_json = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{root}: cannot read plans.json/dataset.json: {exc}") from exc
    files = [root / f"fold_{f}" / checkpoint for f in folds]
    checkpoints = [load_checkpoint(f) for f in files]
    first = checkpoints[0]
    try:
        config_name = str(first["init_args"]["configuration"])
        plans = PlansManager(plans_json)
        configuration = plans.get_configuration(config_name)
        labels = plans.get_label_manager(dataset_json)
    except (KeyError, TypeError, ValueError, AssertionError) as exc:
        raise ModelError(f"{root}: plans.json, dataset.json and the checkpoint do not fit together: {exc}") from exc
    if len(configuration.patch_size) != 3:
        raise ModelError(f"{root}: configuration {config_name!r} is 2D; medrecon runs 3D nnU-Net models "
                         "(3d_fullres or 3d_lowres)")
    _check_architecture(configuration, root)
    n_in = determine_num_input_channels(plans, configuration, dataset_json)
    if n_in != 1:
        raise ModelError(f"{root}: the model takes {n_in} input channels; medrecon gives it one image")
    networks = []
    for f, ckpt in zip(files, checkpoints, strict=True):
        try:
            net = get_network_from_plans(configuration.network_arch_class_name,
                                         configuration.network_arch_init_kwargs,
                                         configuration.network_arch_init_kwargs_req_import,
                                         n_in, labels.num_segmentation_heads, allow_init=False,
                                         deep_supervision=False)
        except Exception as exc:  # noqa: BLE001 - pydoc's import errors, a missing optional package
            raise ModelError(f"{root}/plans.json: cannot build {configuration.network_arch_class_name}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        try:
            net.load_state_dict(ckpt["network_weights"])
        except (RuntimeError, KeyError) as exc:
            raise ModelError(f"{f}: the weights do not fit the network in plans.json (trainer "
                             f"{first.get('trainer_name')!r} may build its own): {str(exc).splitlines()[0]}") from None
        networks.append(net.eval())
    heads = [_split_head(net) for net in networks]
    axes = first.get("inference_allowed_mirroring_axes")
    return NnunetModel(
        folder=root, plans=plans, configuration=configuration, labels=labels, dataset_json=dataset_json,
        networks=networks, heads=heads, mirror_axes=tuple(int(a) for a in axes) if axes is not None else None,
        trainer=str(first.get("trainer_name", "")), folds=folds,
        weights_sha256=weights_digest(files, root=root), label_names=_label_names(dataset_json, labels),
    )
