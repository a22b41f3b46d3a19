"""Per-case robustness of the default model on unseen phantoms: mean, 5th percentile, worst.

    OMP_NUM_THREADS=1 python bench/bench_phantom_robustness.py [--seeds 700000-700049,700101,...]
        [--out .bench/robustness.jsonl] [--threads 1]
    python bench/bench_phantom_robustness.py --summary [--out .bench/robustness.jsonl]

Each seed is a phantom the model never saw (training used seeds 1000-1977, validation
500-501, the model card's held-out evaluation 0-19): it is segmented on its own grid by
``medrecon.models.segment_scored`` with the default options (``planes="auto"``, linear
label upsampling, largest component per organ) and every model organ is scored by Dice
(2|A and B| / (|A| + |B|), the formula of ``medrecon.evaluate``) against the phantom's
exact labels. The model's own confidence per organ (mean top-class probability) and the
planes ``auto`` chose are recorded beside it.

One JSON line per seed goes to ``--out`` as soon as it is done; seeds already there are
skipped, so an interrupted run resumes. ``--summary`` prints, per organ, the mean, the
5th percentile and the worst Dice with its seed, and whether the plausibility checks'
confidence floor (``medrecon/data/anatomy.json``) flags the cases below
``--bad`` Dice (default 0.93, the issue's line).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

DEFAULT_SEEDS = "700000-700049,700101,700250,700444,700777"


def parse_seeds(text: str) -> list[int]:
    """``"1-3,7"`` -> [1, 2, 3, 7] (sorted, unique)."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-")
            out.update(range(int(lo), int(hi) + 1))
        elif part:
            out.add(int(part))
    return sorted(out)


def dice(a, b) -> float:
    """Dice of two boolean masks; 1 when both are empty."""
    import numpy as np

    na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if na + nb == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / (na + nb)


def run_seed(seed: int) -> dict:
    """Segment one phantom and score it."""
    import numpy as np

    from medrecon.models import load_model, segment_scored
    from medrecon.phantom import make_phantom

    volume, truth = make_phantom(seed)
    t0 = time.perf_counter()
    scored = segment_scored(volume)
    seconds = time.perf_counter() - t0
    pred, gt = np.asarray(scored.labels.array), np.asarray(truth.array)
    organs = {}
    for label, name in load_model("default").names.items():
        if not (gt == label).any():
            continue
        organs[name] = {"dice": round(dice(pred == label, gt == label), 4),
                        "confidence": scored.confidence.get(label)}
    return {"seed": seed, "shape": list(volume.shape), "seconds": round(seconds, 1),
            "planes": list(scored.planes),
            "plane_confidence": {k: round(v, 4) for k, v in scored.plane_confidence.items()},
            "organs": organs}


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method)."""
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


def summary(rows: list[dict], *, bad: float) -> None:
    """Print the per-organ table and the confidence check's hits and misses."""
    from medrecon.anatomy import load_anatomy

    anatomy = load_anatomy()
    names: list[str] = []
    for r in rows:
        names += [n for n in r["organs"] if n not in names]
    print(f"{len(rows)} phantoms (seeds {min(r['seed'] for r in rows)}-{max(r['seed'] for r in rows)}); "
          f"planes chosen by auto: "
          + ", ".join(f"{p}: {sum(1 for r in rows if '+'.join(r['planes']) == p)}"
                      for p in sorted({'+'.join(r['planes']) for r in rows})))
    print(f"| organ | n | mean Dice | 5th percentile | worst (seed) | cases < {bad:.2f} | flagged by confidence |")
    print("|---|---|---|---|---|---|---|")
    all_bad = flagged_bad = false_flags = n_cases = 0
    for name in names:
        cases = [(r["organs"][name]["dice"], r["seed"], r["organs"][name]["confidence"])
                 for r in rows if name in r["organs"]]
        d = [c[0] for c in cases]
        worst = min(cases)
        low = [c for c in cases if c[0] < bad]
        limit = anatomy.confidence_floor(name)
        hit = [c for c in low if limit is not None and (c[2] is None or c[2] < limit)]
        false = [c for c in cases if c[0] >= bad and limit is not None and c[2] is not None and c[2] < limit]
        all_bad += len(low)
        flagged_bad += len(hit)
        false_flags += len(false)
        n_cases += len(cases)
        print(f"| {name} | {len(d)} | {sum(d) / len(d):.3f} | {percentile(d, 5):.3f} | "
              f"{worst[0]:.3f} ({worst[1]}) | {len(low)} | {len(hit)} |")
    print(f"\ncases below Dice {bad}: {all_bad}, flagged by the confidence floor: {flagged_bad}; "
          f"good cases flagged: {false_flags} of {n_cases - all_bad}")
    for r in rows:
        low = {n: o for n, o in r["organs"].items() if o["dice"] < bad}
        if low:
            print(f"  seed {r['seed']}: " + ", ".join(
                f"{n} Dice {o['dice']:.3f} confidence {o['confidence']} (floor {anatomy.confidence_floor(n)})"
                for n, o in low.items()))
    seconds = [r["seconds"] for r in rows]
    print(f"segmentation time per phantom: median {sorted(seconds)[len(seconds) // 2]:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=DEFAULT_SEEDS, help="seeds, e.g. 700000-700049,700444 (default %(default)s)")
    ap.add_argument("--out", default=".bench/robustness.jsonl", help="one JSON line per seed (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--summary", action="store_true", help="only summarise the lines in --out")
    ap.add_argument("--bad", type=float, default=0.93, help="Dice below this is a bad case (default %(default)s)")
    args = ap.parse_args()
    out = Path(args.out)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    if not args.summary:
        import torch

        torch.set_num_threads(args.threads)
        print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}", flush=True)
        done = {r["seed"] for r in rows}
        out.parent.mkdir(parents=True, exist_ok=True)
        for seed in parse_seeds(args.seeds):
            if seed in done:
                continue
            row = run_seed(seed)
            with out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
            worst = min(row["organs"].items(), key=lambda kv: kv[1]["dice"])
            print(f"seed {seed}: {row['seconds']:.0f} s, planes {'+'.join(row['planes'])}, worst "
                  f"{worst[0]} {worst[1]['dice']:.3f} (confidence {worst[1]['confidence']})", flush=True)
    wanted = set(parse_seeds(args.seeds))
    rows = [r for r in rows if r["seed"] in wanted and not math.isnan(r["seconds"])]
    if not rows:
        print("no results yet", file=sys.stderr)
        return 1
    summary(rows, bad=args.bad)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
