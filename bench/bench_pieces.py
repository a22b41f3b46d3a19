"""A label map broken into thousands of pieces: ``medrecon mesh`` must follow the faces.

A 240 x 240 x 160 label map (1 mm voxels) holds one large organ (label 1, an
ellipsoid with an ellipsoidal cavity) and 5,000 small pieces of the same label
(2 x 2 x 2 voxel cubes): ``--nested`` of them inside the cavity (each one a
solid nested in two shells), the rest scattered outside the organ but inside its
bounding box, as a fragmented network prediction leaves them. A second label
(a small sphere) stands beside it. The label file goes through
``python -m medrecon mesh`` with the default options and checks, as a fresh
process; the wall and CPU time (user + system: less sensitive to a busy
machine) of the best run, the peak memory of the runs, the report's shell
counts and printability are printed.

Run: ``OMP_NUM_THREADS=1 python bench/bench_pieces.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

SHAPE = (240, 240, 160)
CENTRE = np.array([120.0, 120.0, 80.0])
OUTER = np.array([100.0, 100.0, 70.0])  # semi-axes of the organ, voxels (= mm)
INNER = np.array([60.0, 60.0, 40.0])  # semi-axes of its cavity
SPHERE = np.array([20.0, 20.0, 20.0])  # the second organ's centre
SPHERE_RADIUS = 12.0


def make_labels(pieces: int, nested: int, seed: int = 0) -> np.ndarray:
    """(240, 240, 160) uint8 label map: the hollow organ, ``pieces`` cubes, a second label."""
    grid = np.ogrid[tuple(slice(0, n) for n in SHAPE)]

    def inside(semi: np.ndarray, grow: float = 0.0) -> np.ndarray:
        return sum(((g - c) / (r + grow)) ** 2 for g, c, r in zip(grid, CENTRE, semi, strict=True)) <= 1.0

    array = np.zeros(SHAPE, np.uint8)
    array[inside(OUTER) & ~inside(INNER)] = 1
    # candidate corners on a 5-voxel lattice, kept two voxels clear of the organ's walls
    corners = np.stack(np.meshgrid(*(np.arange(3, n - 5, 5) for n in SHAPE), indexing="ij"), -1).reshape(-1, 3)
    centre = corners + 1.0
    r_out = np.sqrt((((centre - CENTRE) / (OUTER + 4.0)) ** 2).sum(axis=1))
    r_in = np.sqrt((((centre - CENTRE) / (INNER - 4.0)) ** 2).sum(axis=1))
    clear_of_sphere = np.linalg.norm(centre - SPHERE, axis=1) > SPHERE_RADIUS + 4.0
    rng = np.random.default_rng(seed)
    in_cavity = corners[r_in <= 1.0]
    outside = corners[(r_out > 1.0) & clear_of_sphere]
    if nested > len(in_cavity) or pieces - nested > len(outside):
        raise SystemExit(f"at most {len(in_cavity)} nested and {len(outside)} outer pieces fit")
    chosen = np.vstack([
        in_cavity[rng.choice(len(in_cavity), nested, replace=False)],
        outside[rng.choice(len(outside), pieces - nested, replace=False)],
    ])
    for i, j, k in chosen:
        array[i:i + 2, j:j + 2, k:k + 2] = 1
    # a second organ beside the first, in a corner of the field
    array[sum((g - c) ** 2 for g, c in zip(grid, SPHERE, strict=True)) <= SPHERE_RADIUS**2] = 2
    return array


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=5000)
    parser.add_argument("--nested", type=int, default=1000, help="pieces inside the organ's cavity")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    from medrecon.io import save
    from medrecon.volume import LabelMap

    array = make_labels(args.pieces, args.nested)
    with tempfile.TemporaryDirectory() as tmp:
        labels_file = Path(tmp) / "pieces.nii.gz"
        save(LabelMap(array, np.eye(4), names={1: "organ", 2: "sphere"}), labels_file)
        out = Path(tmp) / "out"
        times, cpu = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            done = subprocess.run(
                [sys.executable, "-m", "medrecon", "mesh", str(labels_file), "-o", str(out)],
                capture_output=True, text=True,
            )
            times.append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            if done.returncode:
                raise SystemExit(f"medrecon mesh failed:\n{done.stdout}{done.stderr}")
        report = json.loads((out / "report.json").read_text())
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0  # kB on Linux
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"label map {SHAPE}, {args.pieces} pieces ({args.nested} nested in the organ's cavity)")
    for organ in report["organs"]:
        print(f"  {organ['name']}: {organ['faces']} faces, {organ['shells']} shells, "
              f"watertight {organ['watertight']}, outward {organ.get('outward')}")
    best = int(np.argmin(times))
    print(f"medrecon mesh, whole process: {times[best]:.1f} s wall, {cpu[best]:.1f} s CPU "
          f"(user + system; best of {len(times)}), peak memory {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
