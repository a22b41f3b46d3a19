"""``medrecon presets``: list the HU-threshold reconstruction presets."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``presets`` sub-command."""
    p = subparsers.add_parser(
        "presets", help="list HU-threshold presets for 'reconstruct --preset'",
        description="List the classical HU-threshold presets (name, HU range, label, clean-up "
                    "steps) that 'medrecon reconstruct --preset NAME' uses on CT without a model.")
    p.add_argument("--json", action="store_true", help="print the presets as JSON")
    p.set_defaults(func=run)


def _hu(value: float | None, open_end: str) -> str:
    return open_end if value is None else f"{value:g}"


def run(args: argparse.Namespace) -> int:
    """Print the presets."""
    from medrecon.sources.presets import load_presets

    presets = load_presets()
    if args.json:
        print(json.dumps([p.to_dict() for p in presets.values()], indent=1))
        return 0
    for p in presets.values():
        steps = ", ".join(
            s["op"] + ("(" + ", ".join(f"{k}={v}" for k, v in s.items() if k != "op") + ")"
                       if len(s) > 1 else "")
            for s in p.steps)
        print(f"{p.name:<17} {_hu(p.hu_min, '-inf'):>6} .. {_hu(p.hu_max, 'inf'):<5} HU  "
              f"label {p.label} {p.label_name!r}: {p.description}")
        detail = f"; surface from {p.detail_mm:g} mm voxel blocks" if p.detail_mm else ""
        print(f"{'':<17} steps: {steps}{detail}")
    print("custom ranges: --preset NAME:LOW..HIGH (e.g. bone:250), or --threshold LOW..HIGH "
          "alone or beside --preset NAME")
    return 0
