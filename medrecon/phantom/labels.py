"""TotalSegmentator ``total`` label ids and names (bundled in ``medrecon/data``)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType


@functools.cache
def total_class_map() -> Mapping[int, str]:
    """Label id -> structure name of TotalSegmentator's ``total`` task (117 classes)."""
    text = resources.files("medrecon").joinpath("data", "class_map_total.json").read_text(encoding="utf-8")
    return MappingProxyType({int(k): str(v) for k, v in json.loads(text).items()})


@functools.cache
def _ids() -> Mapping[str, int]:
    return MappingProxyType({v: k for k, v in total_class_map().items()})


def total_id(name: str) -> int:
    """Look up the ``total`` label id of a structure name, e.g. ``total_id("liver") == 5``.

    Raises
    ------
    KeyError
        If the name is not one of TotalSegmentator's ``total`` classes.
    """
    try:
        return _ids()[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a TotalSegmentator 'total' class") from None
