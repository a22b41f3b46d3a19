"""Network architectures, all built from MONAI parts.

* ``unet2d`` - the 2.5D slice network: a MONAI residual :class:`~monai.networks.nets.UNet`
  whose input channels are ``k`` neighbouring slices and whose output is the
  class logits of the centre slice.
* ``flexunet2d`` - the same idea with a ResNet encoder
  (:class:`~monai.networks.nets.FlexibleUNet`, ``resnet10`` by default).
* ``unet3d`` - the 3D UNet baseline every accuracy and speed claim of the 2.5D
  network is compared with.

Tensors are (N, C, H, W) for the 2D networks and (N, C, D, H, W) for the 3D one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from medrecon.errors import ModelError, require

#: Architectures :func:`build_network` knows, with their spatial dimensionality.
ARCHITECTURES: Mapping[str, int] = MappingProxyType({"unet2d": 2, "flexunet2d": 2, "unet3d": 3})

_DEFAULTS: Mapping[str, dict[str, Any]] = MappingProxyType({
    "unet2d": {"channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 1,
               "norm": "batch"},
    "flexunet2d": {"backbone": "resnet10", "decoder_channels": (128, 64, 32, 16, 8)},
    "unet3d": {"channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 1,
               "norm": "batch"},
})


@dataclass(frozen=True)
class NetSpec:
    """Everything needed to rebuild a network (stored in a checkpoint's JSON).

    Attributes
    ----------
    arch : str
        One of :data:`ARCHITECTURES`.
    in_channels : int
        Input channels: neighbouring slices for 2D networks, 1 for ``unet3d``.
    out_channels : int
        Classes including background.
    options : Mapping
        Extra keyword arguments of the MONAI constructor (e.g. ``channels``).
    """

    arch: str
    in_channels: int
    out_channels: int
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ModelError(
                f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}"
            )
        if self.in_channels < 1 or self.out_channels < 2:
            raise ModelError(
                f"need in_channels >= 1 and out_channels >= 2 (background + 1 class), "
                f"got {self.in_channels} and {self.out_channels}"
            )
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def spatial_dims(self) -> int:
        """2 for slice networks, 3 for volume networks."""
        return ARCHITECTURES[self.arch]

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this (the network's total stride)."""
        if self.arch == "flexunet2d":
            return 32
        strides = self.resolved_options()["strides"]
        d = 1
        for s in strides:
            d *= int(s)
        return d

    def resolved_options(self) -> dict[str, Any]:
        """Return the constructor options: the defaults of ``arch`` updated by :attr:`options`."""
        opts = dict(_DEFAULTS[self.arch])
        opts.update(self.options)
        return opts

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        opts = {k: list(v) if isinstance(v, tuple) else v for k, v in self.resolved_options().items()}
        return {"arch": self.arch, "in_channels": self.in_channels,
                "out_channels": self.out_channels, "options": opts}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NetSpec:
        """Inverse of :meth:`to_dict`; raises :class:`ModelError` on a malformed entry."""
        try:
            return cls(arch=str(data["arch"]), in_channels=int(data["in_channels"]),
                       out_channels=int(data["out_channels"]),
                       options=dict(data.get("options", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed network description {dict(data)!r}: {exc}") from exc


def build_network(spec: NetSpec):
    """Build the ``torch.nn.Module`` described by ``spec`` (random weights).

    Raises
    ------
    ModelError
        If MONAI rejects the options.
    """
    nets = require("monai.networks.nets", extra="ml", feature="segmentation networks",
                   package="monai")
    opts = spec.resolved_options()
    tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in opts.items()}
    try:
        if spec.arch in ("unet2d", "unet3d"):
            return nets.UNet(spatial_dims=spec.spatial_dims, in_channels=spec.in_channels,
                             out_channels=spec.out_channels, **tuples)
        return nets.FlexibleUNet(in_channels=spec.in_channels, out_channels=spec.out_channels,
                                 spatial_dims=2, pretrained=False, **tuples)
    except (TypeError, ValueError, KeyError, AssertionError) as exc:
        raise ModelError(f"cannot build {spec.arch} with options {opts}: {exc}") from exc


def count_parameters(model) -> int:
    """Count the trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
