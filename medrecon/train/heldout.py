"""Scoring a model on held-out phantoms (seeds 0-19, never used for training).

Each phantom is segmented on its own grid with :func:`medrecon.models.segment`
(the full inference path, resampling included) and compared with its ground
truth by :func:`medrecon.evaluate.evaluate`; per-organ numbers are averaged
over the phantoms.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

import numpy as np

from medrecon.train.data import EVAL_SEEDS, phantom_pairs

#: Targets of the default model: Dice per organ, and the HD95 rule.
DICE_TARGETS = {"liver": 0.95, "spleen": 0.95, "kidney_left": 0.95, "kidney_right": 0.95,
                "aorta": 0.90}


def evaluate_phantoms(model, *, seeds: Sequence[int] = EVAL_SEEDS, planes: str = "axial",
                      device: str = "cpu", phantom_config=None, workers: int = 1,
                      progress=None) -> dict:
    """Average per-organ Dice, HD95 and NSD of ``model`` over held-out phantoms.

    Parameters
    ----------
    model : SegModel or str
        Model or anything :func:`medrecon.models.load_model` accepts.
    seeds : sequence of int
        Phantom seeds (default 0-19, the held-out set).
    planes : str
        ``"axial"`` or ``"all"``.
    device : str
        Inference device.
    phantom_config : PhantomConfig, optional
        Passed to ``make_phantom``.
    workers : int
        Processes making the phantoms.

    Returns
    -------
    dict
        ``{"seeds", "planes", "organs": {name: {"label", "dice", "hd95_mm", "nsd", "n"}},
        "slice_spacing_mm", "hd95_limit_mm", "targets": {name: {"target", "met"}},
        "seconds_per_case"}``.
    """
    from medrecon.evaluate import evaluate
    from medrecon.models import load_model, segment

    model = load_model(model)
    per: dict[str, dict[str, list]] = {}
    ids: dict[str, int] = {}
    spacings = []
    t0 = time.perf_counter()
    seeds = [int(s) for s in seeds]
    for n, (volume, truth) in enumerate(phantom_pairs(seeds, phantom_config, workers=workers)):
        pred = segment(volume, model=model, device=device, planes=planes)
        spacings.append(float(volume.spacing[2]))
        result = evaluate(pred, truth, labels=[i for i in model.card.channel_ids[1:]
                                               if i in truth.labels])
        for o in result["organs"]:
            d = per.setdefault(o["name"], {"dice": [], "hd95_mm": [], "nsd": []})
            ids[o["name"]] = o["label"]
            for k in d:
                if o[k] is not None:
                    d[k].append(o[k])
        if progress is not None:
            progress("evaluating held-out phantoms", (n + 1) / len(seeds))
    organs = {name: {"label": ids[name], "n": len(v["dice"]),
                     **{k: round(float(np.mean(x)), 4) if x else None for k, x in v.items()}}
              for name, v in sorted(per.items(), key=lambda kv: ids[kv[0]])}
    slice_mm = float(np.mean(spacings)) if spacings else 0.0
    hd_limit = max(3.0, 1.5 * slice_mm)
    targets = {}
    for name, target in DICE_TARGETS.items():
        if name in organs:
            o = organs[name]
            targets[name] = {"dice_target": target, "dice": o["dice"],
                             "met": bool(o["dice"] is not None and o["dice"] >= target)}
    hds = [o["hd95_mm"] for name, o in organs.items() if name in DICE_TARGETS and o["hd95_mm"] is not None]
    mean_hd = round(float(np.mean(hds)), 3) if hds else None
    return {"seeds": [int(s) for s in seeds], "planes": planes, "organs": organs,
            "slice_spacing_mm": round(slice_mm, 3), "hd95_limit_mm": round(hd_limit, 3),
            "mean_hd95_mm_target_organs": mean_hd,
            "hd95_met": bool(mean_hd is not None and mean_hd <= hd_limit),
            "targets": targets,
            "seconds_per_case": round((time.perf_counter() - t0) / max(1, len(seeds)), 2)}


def write_metrics(folder: str | os.PathLike, metrics: dict) -> None:
    """Write ``metrics.json`` beside a checkpoint and copy the numbers into its card."""
    from pathlib import Path

    from medrecon.atomic import write_text

    folder = Path(folder)
    write_text(folder / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    card_path = folder / "model.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["metrics"] = metrics
    write_text(card_path, json.dumps(card, indent=1) + "\n")


def format_metrics(metrics: dict) -> str:
    """Plain-text table of :func:`evaluate_phantoms` output."""
    lines = [f"held-out phantoms {metrics['seeds'][0]}-{metrics['seeds'][-1]} "
             f"({len(metrics['seeds'])}), planes {metrics['planes']}",
             f"{'organ':<22} {'Dice':>7} {'HD95 mm':>8} {'NSD':>6}  target"]
    for name, o in metrics["organs"].items():
        t = metrics["targets"].get(name)
        mark = "" if t is None else f">= {t['dice_target']:.2f} {'met' if t['met'] else 'MISSED'}"
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        lines.append(f"{name[:22]:<22} {fmt(o['dice'], '.4f'):>7} {fmt(o['hd95_mm'], '.2f'):>8} "
                     f"{fmt(o['nsd'], '.3f'):>6}  {mark}")
    lines.append(f"mean HD95 of target organs {metrics['mean_hd95_mm_target_organs']} mm "
                 f"(limit {metrics['hd95_limit_mm']} mm: {'met' if metrics['hd95_met'] else 'MISSED'})")
    return "\n".join(lines)
