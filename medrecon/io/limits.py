"""Size guards applied to file headers before any array is allocated.

A header is untrusted input: a 350-byte NIfTI file may claim a 30000^3 volume.
Every reader calls :func:`check_alloc` with the shape and dtype the header
declares, *before* reading or allocating voxel data, so such a file fails with
:class:`~medrecon.errors.ResourceLimitError` instead of exhausting memory.

The limits are read from the environment at each call, so they can be raised for
one run without code changes:

``MEDRECON_MAX_VOXELS``
    Largest number of voxels in one array (default 2_000_000_000).
``MEDRECON_MAX_BYTES``
    Largest size in bytes of one array as stored (default 8 GiB).

Both accept plain integers, optionally with ``_`` separators, or a size with a
binary suffix for bytes (``"16G"``, ``"512M"``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medrecon.errors import InputError, ResourceLimitError

ENV_MAX_VOXELS = "MEDRECON_MAX_VOXELS"
ENV_MAX_BYTES = "MEDRECON_MAX_BYTES"

DEFAULT_MAX_VOXELS = 2_000_000_000
DEFAULT_MAX_BYTES = 8 * 1024**3

_SIZE = re.compile(r"^\s*([0-9][0-9_]*)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


@dataclass(frozen=True)
class Limits:
    """The allocation limits in force.

    Attributes
    ----------
    max_voxels : int
        Largest voxel count of one array.
    max_bytes : int
        Largest size of one array in bytes.
    """

    max_voxels: int
    max_bytes: int


def _parse_size(name: str, text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise InputError(
            f"environment variable {name}={text!r} is not a size; use an integer such as "
            "2000000000 or a size such as 16G"
        )
    value = int(match.group(1).replace("_", "")) * _UNITS[match.group(2).upper()]
    if value <= 0:
        raise InputError(f"environment variable {name} must be positive, got {text!r}")
    return value


def current_limits() -> Limits:
    """Return the limits from the environment (or the defaults).

    Raises
    ------
    InputError
        If an environment variable is set to something that is not a size.
    """
    env = os.environ
    voxels = env.get(ENV_MAX_VOXELS)
    nbytes = env.get(ENV_MAX_BYTES)
    return Limits(
        max_voxels=_parse_size(ENV_MAX_VOXELS, voxels) if voxels else DEFAULT_MAX_VOXELS,
        max_bytes=_parse_size(ENV_MAX_BYTES, nbytes) if nbytes else DEFAULT_MAX_BYTES,
    )


def check_alloc(shape: Sequence[Any], dtype: Any, what: str) -> int:
    """Check that an array of ``shape`` and ``dtype`` may be allocated.

    Call it with the sizes a header *declares*, before reading voxel data.
    Arithmetic uses Python integers, so absurd sizes cannot overflow.

    Parameters
    ----------
    shape : sequence of int
        Declared array shape (any number of dimensions).
    dtype : numpy dtype-like
        Declared element type.
    what : str
        What is being loaded (a file name, "DICOM series ..."), for the message.

    Returns
    -------
    int
        The number of bytes the array needs.

    Raises
    ------
    InputError
        If a dimension is not a positive integer.
    ResourceLimitError
        If the voxel count or byte size exceeds the limits in force.
    """
    dims: list[int] = []
    for n in shape:
        try:
            value = int(n)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"{what}: dimension {n!r} is not an integer; the header is corrupt") from None
        if value != n or value < 1:
            raise InputError(
                f"{what}: declared dimensions {tuple(shape)} must be positive integers; "
                "the header is corrupt"
            )
        dims.append(value)
    itemsize = np.dtype(dtype).itemsize
    voxels = 1
    for n in dims:
        voxels *= n
    nbytes = voxels * itemsize
    limits = current_limits()
    if voxels > limits.max_voxels or nbytes > limits.max_bytes:
        raise ResourceLimitError(
            f"{what}: the header declares a {'x'.join(map(str, dims))} array of "
            f"{np.dtype(dtype).name} ({voxels:,} voxels, {_human(nbytes)}), over the limit of "
            f"{limits.max_voxels:,} voxels / {_human(limits.max_bytes)}; if the file is genuine, "
            f"raise {ENV_MAX_VOXELS} / {ENV_MAX_BYTES} (e.g. {ENV_MAX_BYTES}=32G)"
        )
    return nbytes


def _human(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{nbytes} B"  # pragma: no cover
