"""``medrecon evaluate``: per-organ Dice, HD95 and surface Dice of two label maps."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add the ``evaluate`` sub-command."""
    p = subparsers.add_parser(
        "evaluate", help="compare a label map with ground truth (Dice, HD95, NSD)",
        description="Per-organ Dice, 95%% Hausdorff distance (mm) and normalised surface Dice "
                    "(2 mm) of PRED against GT. Organs are matched by name where both maps name their "
                    "labels (sidecars or the files' own tables), else by id; --names gives one id -> name "
                    "table for both (then ids match).")
    p.add_argument("pred", help="predicted label map")
    p.add_argument("gt", help="ground-truth label map")
    p.add_argument("--names", default=None, help="JSON file of label id -> name")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--labels", default=None,
                   help="GT label ids to score, comma separated, or 'predicted' (the labels the "
                        "prediction's names table or array holds); default: every id in GT")
    p.add_argument("--resample", action="store_true",
                   help="resample PRED onto GT's grid (nearest) when the grids differ")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load both maps, evaluate, print."""
    import json

    from medrecon.errors import InputError
    from medrecon.evaluate import evaluate, format_table
    from medrecon.io import load_labels
    from medrecon.io.sidecar import read_names

    names = read_names(args.names) if args.names else None
    pred = load_labels(args.pred)
    gt = load_labels(args.gt)
    if args.resample and not pred.same_grid(gt):
        pred = pred.resample_like(gt)
    labels = None
    if args.labels == "predicted":
        labels = "predicted"
    elif args.labels:
        try:
            labels = [int(v) for v in args.labels.split(",")]
        except ValueError:
            raise InputError(f"--labels must be ids like 1,2,5 or 'predicted', got {args.labels!r}") from None
    result = evaluate(pred, gt, names=names, labels=labels)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0
