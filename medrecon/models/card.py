"""What a segmentation model is: its card and its network; weights load as tensors only.

The :class:`ModelCard` is the JSON half of a checkpoint (architecture, label
table, model grid, intensity normalisation, training record); a
:class:`SegModel` is a loaded network with its card, whatever it was loaded
from (a medrecon checkpoint, :mod:`medrecon.models.checkpoint`, or a MONAI
bundle, :mod:`medrecon.models.bundle`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from medrecon.errors import ModelError, require
from medrecon.report import jsonable

CARD_VERSION = 1


@dataclass(frozen=True)
class ModelCard:
    """What inference needs besides the weights (the JSON half of a checkpoint).

    Attributes
    ----------
    net : Mapping
        :meth:`NetSpec.to_dict` of the network, or for bundles ``{"arch": "bundle", ...}``.
    labels : Mapping[int, str]
        TotalSegmentator label id -> name, for output channels 1, 2, ... in order of
        :attr:`channel_ids`.
    channel_ids : tuple of int
        Label id of each output channel (channel 0 is background, id 0).
    spacing_mm : tuple of 3 float
        Model-grid voxel size along the model's i, j, k.
    orientation : str
        Model-grid axis codes in the LPS frame (``"LPS"``: k runs inferior -> superior).
    window : tuple of 2 float
        Intensity window (HU for CT): values are clipped to it and scaled linearly
        onto :attr:`value_range`.
    value_range : tuple of 2 float
        What the window's ends become, (-1, 1) for medrecon's networks.
    context : int
        Neighbouring slices fed as channels (2D networks; odd), 1 for 3D networks.
    planes : tuple of str
        Slice planes the network was trained on (``"axial"``, ``"coronal"``, ``"sagittal"``).
    roi_mm : tuple of 3 float
        Sliding-window size in mm for 3D networks (unused by 2D ones).
    training : Mapping
        Free-form description of the training run (data, seeds, steps, command).
    metrics : Mapping
        Held-out metrics measured after training.
    """

    net: Mapping[str, Any]
    labels: Mapping[int, str]
    channel_ids: tuple[int, ...]
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)
    orientation: str = "LPS"
    window: tuple[float, float] = (-300.0, 400.0)
    value_range: tuple[float, float] = (-1.0, 1.0)
    context: int = 5
    planes: tuple[str, ...] = ("axial",)
    roi_mm: tuple[float, float, float] = (192.0, 192.0, 192.0)
    training: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = tuple(int(i) for i in self.channel_ids)
        if not ids or ids[0] != 0 or len(set(ids)) != len(ids):
            raise ModelError(f"channel_ids must start with background 0 and be unique, got {ids}")
        object.__setattr__(self, "channel_ids", ids)
        object.__setattr__(self, "labels", MappingProxyType({int(k): str(v) for k, v in self.labels.items()}))
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))
        object.__setattr__(self, "window", tuple(float(s) for s in self.window))
        object.__setattr__(self, "value_range", tuple(float(s) for s in self.value_range))
        object.__setattr__(self, "roi_mm", tuple(float(s) for s in self.roi_mm))
        object.__setattr__(self, "planes", tuple(self.planes))
        object.__setattr__(self, "net", MappingProxyType(dict(self.net)))
        object.__setattr__(self, "training", MappingProxyType(dict(self.training)))
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))
        if len(self.spacing_mm) != 3 or min(self.spacing_mm) <= 0:
            raise ModelError(f"spacing_mm must be 3 positive numbers, got {self.spacing_mm}")
        if self.window[1] <= self.window[0]:
            raise ModelError(f"window must be (low, high) with low < high, got {self.window}")

    @property
    def spatial_dims(self) -> int:
        """2 for slice networks, 3 for volume networks."""
        return int(self.net.get("spatial_dims", 2 if str(self.net.get("arch", "")).endswith("2d") else 3))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d = jsonable(d)
        d["labels"] = {str(k): v for k, v in sorted(self.labels.items())}
        return {"card_version": CARD_VERSION, **d}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """Inverse of :meth:`to_dict`; raises :class:`ModelError` on a malformed card."""
        try:
            known = {f for f in cls.__dataclass_fields__}
            kwargs = {k: v for k, v in data.items() if k in known}
            kwargs["labels"] = {int(k): str(v) for k, v in dict(data["labels"]).items()}
            kwargs["channel_ids"] = tuple(int(i) for i in data["channel_ids"])
            return cls(**kwargs)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed model card: {exc}; expected the JSON that "
                             "medrecon.models.checkpoint.save_model writes") from exc


@dataclass(frozen=True, eq=False)
class SegModel:
    """A loaded segmentation network with its card.

    Attributes
    ----------
    network : torch.nn.Module
        In eval mode, on the CPU unless moved.
    card : ModelCard
        Grid, intensity and label table the network expects.
    source : str
        Where it was loaded from.
    """

    network: Any
    card: ModelCard
    source: str = ""

    @property
    def names(self) -> dict[int, str]:
        """Label id -> name of every non-background output."""
        return {i: self.card.labels.get(i, f"label_{i}") for i in self.card.channel_ids[1:]}


def load_weights(network, path: str | os.PathLike) -> None:
    """Load a safetensors state dict into ``network`` (strict: names and shapes must match)."""
    st = require("safetensors.torch", extra="ml", feature="loading models", package="safetensors")
    try:
        state = st.load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelError(f"{path} is not a valid safetensors file ({exc}); was it renamed "
                         "from a pickle? medrecon never unpickles weights") from exc
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"weights in {path} do not fit the network in its card: {exc}") from exc
