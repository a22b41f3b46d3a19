"""Shape completion benchmark: image-to-shape network vs signed-distance interpolation.

Held-out phantoms (seeds 0-19, default phantom preset; the shape model was
trained on seeds >= 2000), organs restricted to the evaluated ones (a user draws
organs, not ribs). Two sparse settings:

* ``every4`` - every 4th slice kept (offset = seed % 4);
* ``per5``  - 5 slices per organ, at the centres of 5 equal parts of its extent.

For each organ: Dice and symmetric mean surface distance (Chamfer, mm) of the
completion against the phantom's exact labels, averaged over the phantoms, for
``sdf`` (baseline), ``network`` (with the CT) and ``network-noimg`` (labels
only), plus ``nearest`` (each slice copies the nearest drawn one: the staircase).

    python bench/bench_completion.py [--seeds 0-19] [--model default] [--json out.json]
    python bench/bench_completion.py --merge a.json b.json   # summarise runs made in parallel
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from medrecon.completion import complete, every_nth, per_label  # noqa: E402
from medrecon.completion.metrics import dice, mean_surface_distance  # noqa: E402
from medrecon.phantom import make_phantom  # noqa: E402
from medrecon.train.shape import ORGANS  # noqa: E402

METHODS = ("sdf", "network", "network-noimg", "nearest")
SETTINGS = ("every4", "per5")


def nearest_fill(sparse: np.ndarray) -> np.ndarray:
    """Each slice (axis 2) copies the nearest drawn slice of each label, within its drawn range."""
    out = np.zeros_like(sparse)
    for label in np.unique(sparse[sparse != 0]):
        ks = np.flatnonzero((sparse == label).any(axis=(0, 1)))
        for k in range(ks[0], ks[-1] + 1):
            src = ks[np.argmin(np.abs(ks - k))]
            sl = out[:, :, k]
            sl[(sparse[:, :, src] == label) & (sl == 0)] = label
    return out


def run_case(seed: int, model: str) -> dict:
    image, labels = make_phantom(seed)
    truth = np.asarray(labels.array)
    organs = [o for o in ORGANS if o in labels.labels]
    kept = labels.replace(array=np.where(np.isin(truth, organs), truth, 0).astype(truth.dtype))
    result: dict = {}
    for setting in SETTINGS:
        sparse = every_nth(kept, 4, offset=seed % 4) if setting == "every4" else per_label(kept, 5, ids=organs)
        outs, secs = {}, {}
        for method in METHODS:
            t = time.perf_counter()
            if method == "nearest":
                outs[method] = nearest_fill(np.asarray(sparse.array))
            else:
                outs[method] = np.asarray(complete(
                    sparse, image=None if method == "network-noimg" else image,
                    method="sdf" if method == "sdf" else "network", model=model).array)
            secs[method] = time.perf_counter() - t
        result[setting] = {"seconds": secs, "organs": {}}
        for o in organs:
            gt = truth == o
            result[setting]["organs"][ORGANS[o]] = {
                m: {"dice": dice(outs[m] == o, gt),
                    "msd_mm": mean_surface_distance(outs[m] == o, gt, labels.spacing)}
                for m in METHODS
            }
    return result


def summarise(cases: list[dict]) -> dict:
    """Average per setting, organ and method (and count the network's wins over the SDF)."""
    summary: dict = {}
    for setting in SETTINGS:
        summary[setting] = {}
        for name in ORGANS.values():
            rows = [c[setting]["organs"][name] for c in cases if name in c[setting]["organs"]]
            if not rows:
                continue
            summary[setting][name] = {
                m: {k: float(np.mean([r[m][k] for r in rows])) for k in ("dice", "msd_mm")} for m in METHODS
            }
            summary[setting][name]["n"] = len(rows)
        summary[setting]["seconds"] = {m: float(np.mean([c[setting]["seconds"][m] for c in cases]))
                                       for m in METHODS}
    return summary


def markdown(summary: dict) -> str:
    lines = []
    for setting in SETTINGS:
        title = {"every4": "every 4th slice kept", "per5": "5 slices per organ"}[setting]
        lines += [f"**{title}** (mean over phantoms; MSD = symmetric mean surface distance)", "",
                  "| organ | Dice SDF | Dice network | Dice net (no image) | Dice nearest "
                  "| MSD SDF mm | MSD network mm | MSD net (no image) mm | network beats SDF |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, s in summary[setting].items():
            if name == "seconds":
                continue
            win = s["network"]["dice"] > s["sdf"]["dice"] and s["network"]["msd_mm"] < s["sdf"]["msd_mm"]
            lines.append(
                f"| {name} | {s['sdf']['dice']:.3f} | {s['network']['dice']:.3f} "
                f"| {s['network-noimg']['dice']:.3f} | {s['nearest']['dice']:.3f} "
                f"| {s['sdf']['msd_mm']:.2f} | {s['network']['msd_mm']:.2f} "
                f"| {s['network-noimg']['msd_mm']:.2f} | {'yes' if win else '**no**'} |")
        sec = summary[setting]["seconds"]
        lines += ["", "seconds per study: " + ", ".join(f"{m} {v:.2f}" for m, v in sec.items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0-19")
    p.add_argument("--model", default="default")
    p.add_argument("--json", help="write all per-case numbers here")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="only summarise the cases of earlier --json runs (e.g. seeds run in parallel)")
    args = p.parse_args(argv)
    if args.merge:
        runs = [json.load(open(f, encoding="utf-8")) for f in args.merge]
        print(f"seeds: {sorted(s for r in runs for s in r['seeds'])}")
        print(markdown(summarise([c for r in runs for c in r["cases"]])))
        return 0
    import torch

    torch.set_num_threads(1)
    lo, _, hi = args.seeds.partition("-")
    seeds = list(range(int(lo), int(hi or lo) + 1))
    cases = []
    for seed in seeds:
        t = time.perf_counter()
        cases.append(run_case(seed, args.model))
        print(f"seed {seed}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    summary = summarise(cases)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"seeds": seeds, "summary": summary, "cases": cases}, fh, indent=1)
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
