"""What an adult organ looks like on CT: the reference table the plausibility checks use.

The table is data, ``medrecon/data/anatomy.json``, with the source of every
number beside it (literature for volumes, attenuation and position; phantoms
for the model's confidence). Organs are keyed by the label vocabulary's name
rule (:func:`medrecon.labels.name_key`), so ``"Kidney Left"`` finds
``kidney_left``. Positions are in the LPS frame: the lateral position of an
organ is the offset of its centre from the trunk's midline as a fraction of
the trunk's half width, negative on the patient's right, positive on the left.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

from medrecon.labels import name_key


@dataclass(frozen=True)
class OrganNorm:
    """Plausible ranges of one organ.

    Attributes
    ----------
    name : str
        Vocabulary name (``"liver"``).
    volume_ml : (float, float)
        Plausible adult volume, mL; an organ cut by the field of view only gets the upper end.
    hu : (float, float)
        Plausible mean attenuation over the label, HU, in any contrast phase.
    side : (float, float)
        Plausible lateral position of the organ's centre (fraction of the trunk's
        half width, - = patient's right).
    pieces : int
        Most separate pieces the organ may form.
    """

    name: str
    volume_ml: tuple[float, float]
    hu: tuple[float, float]
    side: tuple[float, float]
    pieces: int


@dataclass(frozen=True)
class Anatomy:
    """The whole reference table (see ``medrecon/data/anatomy.json`` for the sources).

    Attributes
    ----------
    organs : Mapping[str, OrganNorm]
        By :func:`~medrecon.labels.name_key` of the organ's name.
    body_hu : float
        Tissue threshold of the trunk mask, HU.
    min_inside : float
        Least fraction of an organ's voxels inside the trunk.
    piece_fraction : float
        Least fraction of an organ's voxels that makes a piece count.
    order : tuple of (str, str)
        ``(upper, lower)`` organ pairs in head-to-feet order.
    order_tolerance_mm : float
        How far the upper organ's centre may lie below the lower one's.
    default_floor : float
        Least mean top-class probability of a model's organ.
    floors : Mapping[str, float]
        Per-organ exceptions to ``default_floor``, by name key.
    """

    organs: Mapping[str, OrganNorm]
    body_hu: float
    min_inside: float
    piece_fraction: float
    order: tuple[tuple[str, str], ...]
    order_tolerance_mm: float
    default_floor: float
    floors: Mapping[str, float]

    def organ(self, name: str) -> OrganNorm | None:
        """Return the ranges of the organ called ``name``, or None if the table has none."""
        return self.organs.get(name_key(name))

    def confidence_floor(self, name: str) -> float:
        """Least mean top-class probability a model's ``name`` label needs."""
        return self.floors.get(name_key(name), self.default_floor)


def _pair(value: Any, what: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not lo <= hi:
        raise ValueError(f"anatomy table: {what} must be [low, high], got {value}")
    return lo, hi


@functools.cache
def load_anatomy() -> Anatomy:
    """Return the bundled reference table (read once)."""
    text = resources.files("medrecon").joinpath("data", "anatomy.json").read_text(encoding="utf-8")
    data = json.loads(text)
    organs = {}
    for name, entry in data["organs"].items():
        organs[name_key(name)] = OrganNorm(
            name=name, volume_ml=_pair(entry["volume_ml"], f"{name} volume_ml"),
            hu=_pair(entry["hu"], f"{name} hu"), side=_pair(entry["side"], f"{name} side"),
            pieces=int(entry["pieces"]),
        )
    conf = data["confidence"]
    return Anatomy(
        organs=MappingProxyType(organs),
        body_hu=float(data["body"]["threshold_hu"]),
        min_inside=float(data["body"]["min_inside"]),
        piece_fraction=float(data["pieces"]["min_fraction"]),
        order=tuple((str(a), str(b)) for a, b in data["order"]["pairs"]),
        order_tolerance_mm=float(data["order"]["tolerance_mm"]),
        default_floor=float(conf["floor"]),
        floors=MappingProxyType({name_key(k): float(v) for k, v in conf["organs"].items()}),
    )


__all__ = ["Anatomy", "OrganNorm", "load_anatomy"]
