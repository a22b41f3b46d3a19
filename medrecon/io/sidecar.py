"""Label-name sidecars: ``labels.nii.gz`` -> ``labels.json``, a flat id -> name map."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from medrecon.atomic import write_text
from medrecon.errors import InputError
from medrecon.io.formats import format_by_name, strip_suffix


def sidecar_path(path: str | os.PathLike) -> Path:
    """Return the JSON sidecar path of a label file: same folder, same stem, ``.json``."""
    p = Path(path)
    return p.with_name((strip_suffix(p.name) if format_by_name(p.name) else p.stem) + ".json")


def has_sidecar(path: str | os.PathLike) -> bool:
    """Tell whether a names sidecar marks ``path`` as a label map."""
    return sidecar_path(path).is_file()


def read_names(path: str | os.PathLike) -> dict[int, str]:
    """Read a flat JSON id -> name map (keys may be strings of ints).

    Raises
    ------
    InputError
        If the file is not a JSON object of integer ids to strings.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read label names from {p}: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{p} must hold a JSON object mapping label ids to names, e.g. {{\"5\": \"liver\"}}")
    names: dict[int, str] = {}
    for key, value in data.items():
        try:
            label = int(key)
        except (TypeError, ValueError):
            raise InputError(f"{p}: label id {key!r} is not an integer") from None
        if not isinstance(value, str):
            raise InputError(f"{p}: the name of label {key} must be a string, got {value!r}")
        names[label] = value
    return names


def names_for(label_file: str | os.PathLike) -> dict[int, str]:
    """Names from the sidecar of ``label_file`` if it exists, else an empty map."""
    side = sidecar_path(label_file)
    return read_names(side) if side.is_file() else {}


def write_names(path: str | os.PathLike, names: Mapping[int, str]) -> Path:
    """Write ``names`` as a flat JSON map with string keys, sorted by id, atomically."""
    data = {str(k): str(v) for k, v in sorted(names.items())}
    return write_text(path, json.dumps(data, indent=1) + "\n")
