"""Benchmark: every HU preset through ``reconstruct`` (threshold, clean-up, meshes), timed
against the bone preset on the same study.

Studies:

* ``real``: the real 20-slice contrast CT in ``tests/data/totalseg/example_ct_dicom``
  (512 x 512 x 20, 0.98 x 0.98 x 2 mm);
* ``phantom``: a 512 x 512 x 300 synthetic contrast CT (0.8 x 0.8 x 1 mm, seed 0),
  made here (not timed).

Each preset runs in memory (no files, no preview) in this process, after one
untimed warm-up run of the bone preset per study. Printed per preset: wall time,
ratio to the bone preset, the threshold + clean-up and mesh stages, the mask
volume, the number of shells and faces. Issue 13 target: no preset takes more
than a few times the bone preset's time (debris never reaches marching cubes).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_presets.py [--study real|phantom|both]``
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

REAL_CT = Path(__file__).resolve().parent.parent / "tests" / "data" / "totalseg" / "example_ct_dicom"


def _study(name: str, slices: int):
    if name == "real":
        from medrecon.io import load

        return load(REAL_CT)
    from medrecon.phantom import PhantomConfig, make_phantom

    vol, _ = make_phantom(0, config=PhantomConfig(
        matrix=512, slices=slices, spacing_xy=(0.8, 0.8), slice_thickness=(1.0, 1.0),
        orientation="LPS", contrast=True))
    return vol


def _run(volume, preset: str) -> dict:
    from medrecon.errors import EmptySegmentationError
    from medrecon.pipeline import ReconstructConfig, reconstruct

    t0 = time.perf_counter()
    try:
        result = reconstruct(volume, None, config=ReconstructConfig.for_preset(preset, preview=False))
    except EmptySegmentationError:
        return {"wall": time.perf_counter() - t0, "empty": True}
    wall = time.perf_counter() - t0
    organ = result.report["organs"][0]
    stages = result.report["timings_s"]
    return {"wall": wall, "empty": False, "preset": stages.get("preset", 0.0), "meshes": stages.get("meshes", 0.0),
            "mask_ml": float((result.labels.array > 0).sum()) * volume.voxel_volume_mm3 / 1000,
            "shells": organ.get("shells"), "faces": organ.get("faces")}


def bench(name: str, volume, presets: list[str]) -> None:
    """Time every preset on ``volume`` and print one row each, with the ratio to bone."""
    print(f"\n== {name}: {'x'.join(map(str, volume.shape))} voxels, spacing "
          f"{', '.join(f'{s:.2f}' for s in volume.spacing)} mm")
    _run(volume, "bone")  # warm-up: imports, first-call caches
    rows = {p: _run(volume, p) for p in presets}
    bone = rows["bone"]["wall"] if "bone" in rows else _run(volume, "bone")["wall"]
    print(f"{'preset':<17} {'time s':>7} {'x bone':>7} {'mask s':>7} {'mesh s':>7} {'mask mL':>8} "
          f"{'shells':>6} {'faces':>8}")
    for p, r in rows.items():
        if r["empty"]:
            print(f"{p:<17} {r['wall']:7.2f} {r['wall'] / bone:7.2f}   (no voxels in this study)")
            continue
        print(f"{p:<17} {r['wall']:7.2f} {r['wall'] / bone:7.2f} {r['preset']:7.2f} {r['meshes']:7.2f} "
              f"{r['mask_ml']:8.1f} {r['shells']!s:>6} {r['faces']!s:>8}")
    worst = max((p for p in rows if not rows[p]["empty"]), key=lambda p: rows[p]["wall"])
    print(f"slowest: {worst}, {rows[worst]['wall'] / bone:.1f}x the bone preset ({bone:.2f} s)")


def main() -> None:
    """Parse the options and run the chosen studies."""
    from medrecon.sources.presets import load_presets

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--study", choices=("real", "phantom", "both"), default="both")
    p.add_argument("--slices", type=int, default=300, help="slices of the phantom study (default 300)")
    p.add_argument("--presets", default=",".join(load_presets()), help="comma-separated presets (default all)")
    args = p.parse_args()
    presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"load average {tuple(round(x, 1) for x in os.getloadavg())}")
    for name in (("real", "phantom") if args.study == "both" else (args.study,)):
        t0 = time.perf_counter()
        volume = _study(name, args.slices)
        print(f"{name} study ready in {time.perf_counter() - t0:.1f} s (not timed)")
        bench(name, volume, presets)


if __name__ == "__main__":
    main()
