"""``medrecon info PATH [--json] [--series S]``: what an image holds and where it lies.

One entry per DICOM series (and per part of a series split by size or
orientation): modality, shape, spacing, LPS affine, orientation codes and the
value range (Hounsfield units for CT). Other formats give one entry. Never
imports torch or napari.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from medrecon.io.formats import image_suffixes


def register(subparsers: Any) -> None:
    """Add the ``info`` sub-command."""
    p = subparsers.add_parser(
        "info",
        help="show series, shape, spacing, affine, orientation and HU range of an image",
        description="Describe a DICOM folder/file/DICOMDIR, NIfTI, NRRD or MetaImage. "
        "Geometry is in LPS millimetres.",
    )
    p.add_argument("path", help=f"DICOM folder, file or DICOMDIR; {', '.join(image_suffixes(dicom=False))}")
    p.add_argument("--json", action="store_true", help="print one JSON object {\"series\": [...]}")
    p.add_argument("--series", help="only this series (UID, number, UID:part or 'auto')")
    p.add_argument("--headers-only", action="store_true",
                   help="DICOM: skip reading pixels (no HU range); fastest")
    p.set_defaults(func=run)


def _geometry(affine: np.ndarray, shape: tuple[int, ...]) -> dict[str, Any]:
    from medrecon.volume import axis_codes

    return {
        "shape": [int(s) for s in shape],
        "spacing": [round(float(s), 6) for s in np.linalg.norm(affine[:3, :3], axis=0)],
        "affine": [[round(float(v), 6) for v in row] for row in affine],
        "orientation": axis_codes(affine),
    }


def _range(array: np.ndarray) -> list[float] | None:
    if array.size == 0:
        return None
    return [round(float(array.min()), 3), round(float(array.max()), 3)]


def _dicom_entries(path: Path, series: str | None, headers_only: bool) -> list[dict[str, Any]]:
    from medrecon.errors import DicomError
    from medrecon.io.dicom import list_series, plan_series
    from medrecon.io.dicom_pixels import read_frames
    from medrecon.io.dicom_series import select_series

    infos = list_series(path)
    if series:
        infos = [select_series(infos, series, source=str(path))[0]]
    entries = []
    for info in infos:
        entry = info.to_dict()
        entry.update(shape=None, spacing=None, affine=None, orientation=None, units="",
                     hu_range=None, value_range=None)
        if info.volume_like or info.reason.startswith("only "):
            try:
                plan = plan_series(info)
            except DicomError as exc:  # one broken series must not hide the others
                entry["error"] = str(exc)
                entries.append(entry)
                continue
            entry.update(_geometry(plan.affine, plan.shape))
            entry["units"] = "HU" if info.modality == "CT" else ""
            entry["geometry_warnings"] = list(plan.warnings)
            if not headers_only:
                values = read_frames(plan.frames, what=f"DICOM series {info.key}")
                entry["value_range"] = _range(values)
                if info.modality == "CT":
                    entry["hu_range"] = entry["value_range"]
        entries.append(entry)
    return entries


def _other_entry(path: Path) -> list[dict[str, Any]]:
    from medrecon.io import load

    vol = load(path)
    entry: dict[str, Any] = {
        "uid": vol.series_uid, "modality": vol.modality, "description": vol.description,
        "number": None, "n_slices": int(vol.shape[2]), "volume_like": True, "units": vol.units,
    }
    entry.update(_geometry(vol.affine, vol.shape))
    entry["value_range"] = _range(np.asarray(vol.array))
    entry["hu_range"] = entry["value_range"] if vol.units == "HU" or vol.modality == "CT" else None
    return [entry]


def _fmt(values: list[float] | None, unit: str = "") -> str:
    if values is None:
        return "-"
    return " x ".join(f"{v:g}" for v in values) + unit


def _range_text(values: list[float] | None) -> str:
    return "-" if values is None else f"{values[0]:g} .. {values[1]:g}"


def _printable(text: str) -> str:
    # DICOM text is untrusted: control characters (terminal escapes) are shown escaped
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(text))


def _print_text(path: Path, entries: list[dict[str, Any]]) -> None:
    print(f"{path}: {len(entries)} series")
    for e in entries:
        number = "-" if e.get("number") is None else e["number"]
        print(f"\nseries #{number} {_printable(e.get('modality') or '?')} "
              f"'{_printable(e.get('description') or '')}'  uid={_printable(e.get('uid') or '-')}")
        if e.get("key") and e["key"] != e.get("uid"):
            print(f"  select with: --series {_printable(e['key'])}")
        if e.get("error"):
            print(f"  {e.get('n_slices')} slices, cannot be loaded: {e['error']}")
            continue
        if not e.get("volume_like", True) and e.get("shape") is None:
            print(f"  {e.get('n_slices')} slices, not a volume: {e.get('reason')}")
            continue
        rng = e.get("hu_range") or e.get("value_range")
        label = "HU range" if e.get("hu_range") else "value range"
        print(f"  shape {_fmt(e['shape'])}  spacing {_fmt(e['spacing'], ' mm')}  "
              f"orientation {e['orientation']}  {label} {_range_text(rng)}")
        print("  affine (voxel -> LPS mm):")
        for row in e["affine"][:3]:
            print("    " + "  ".join(f"{v:11.4f}" for v in row))
        for note in e.get("geometry_warnings") or ():
            print(f"  note: {note}")


def run(args: argparse.Namespace) -> int:
    """Print the description of ``args.path``."""
    from medrecon.io import detect_format

    path = Path(args.path)
    if detect_format(path) == "dicom":
        entries = _dicom_entries(path, args.series, args.headers_only)
    else:
        entries = _other_entry(path)
    if args.json:
        print(json.dumps({"path": str(path), "series": entries}, indent=1))
    else:
        _print_text(path, entries)
    return 0
