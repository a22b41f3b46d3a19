"""Grow from seeds: medrecon's seeded growing against scikit-image's random walker.

Input: the real contrast CT of ``tests/data/totalseg/example_ct_dicom`` (512 x 512
x 20, 0.98 mm, 2 mm slices), cropped to 256 x 256 around the liver and resampled
to 0.4 mm slices (linear for the CT, nearest for TotalSegmentator's labels), a
256 x 256 x 100 region. Strokes on three slices (15, 50, 80): the skeleton of
each organ shrunk by 5 mm, and of the other body tissue kept 5 mm away from the
organs, as background. Both methods get the same crop and strokes, on one
thread: ``medrecon.edit.grow_from_seeds`` (growing box = the whole crop) and
``skimage.segmentation.random_walker`` with its default settings. Dice of each
against TotalSegmentator's labels.

    OMP_NUM_THREADS=1 python bench/bench_edit.py [--organs liver,spleen] [--no-anchor]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from medrecon.edit import grow_from_seeds  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _builders import seed_strokes  # noqa: E402  (the same strokes as tests/test_edit.py)

from medrecon.io import load, load_labels  # noqa: E402
from medrecon.volume import LabelMap, Volume  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "totalseg"
BACKGROUND = 200
STROKE_SLICES = (15, 50, 80)


def region(size: int = 256, slices: int = 100) -> tuple[Volume, LabelMap]:
    """The CT and its labels, ``size`` x ``size`` around the liver, resampled to ``slices`` slices."""
    ct = load(DATA / "example_ct_dicom")
    truth = load_labels(DATA / "example_seg_dicom.nii.gz").resample_like(ct)
    liver = np.asarray(truth.array) == truth.label_of("liver")
    lo = [int(np.mean(np.flatnonzero(liver.any(axis=tuple(b for b in range(3) if b != a))))) - size // 2
          for a in range(2)]
    lo = [min(max(v, 0), ct.shape[a] - size) for a, v in enumerate(lo)]
    affine = ct.affine.copy()
    affine[:3, 3] = ct.voxel_to_world([[lo[0], lo[1], 0]])[0]
    affine[:3, 2] *= (ct.shape[2] - 1) / (slices - 1)
    shape = (size, size, slices)
    return ct.resample_to(affine, shape), truth.resample_to(affine, shape)


def strokes(ct: Volume, truth: LabelMap, organs: list[int]) -> LabelMap:
    """Skeletons of each organ and of the other body tissue, 5 mm in, on three slices."""
    return seed_strokes(ct, truth, organs, slices=STROKE_SLICES, background=BACKGROUND)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organs", default="liver", help="comma-separated organ names")
    parser.add_argument("--no-anchor", action="store_true", help="skip the random walker")
    parser.add_argument("--anchor-input", choices=("raw", "scaled"), default="raw",
                        help="the random walker's image: the CT as it is (default), or scaled as "
                             "grow_from_seeds scales it (minus the strokes' median, over their 5-95 %% spread)")
    args = parser.parse_args()
    ct, truth = region()
    organs = [truth.label_of(n) for n in args.organs.split(",")]
    seeds = strokes(ct, truth, organs)
    true = np.asarray(truth.array)
    print(f"region {ct.shape} at {np.round(ct.spacing, 3).tolist()} mm, strokes on slices "
          f"{STROKE_SLICES}: {int((seeds.array != 0).sum())} voxels; load {os.getloadavg()[0]:.2f}")
    t0, c0 = time.perf_counter(), time.process_time()
    ours = np.asarray(grow_from_seeds(ct, seeds, background=BACKGROUND, margin_mm=1e3).array)
    rows = [("medrecon grow_from_seeds", time.perf_counter() - t0, time.process_time() - c0, ours)]
    if not args.no_anchor:
        from skimage.segmentation import random_walker

        data = np.asarray(ct.array, dtype=np.float32)
        if args.anchor_input == "scaled":
            painted = data[np.asarray(seeds.array) != 0]
            data = (data - np.median(painted)) / np.subtract(*np.percentile(painted, [95, 5]))
        t0, c0 = time.perf_counter(), time.process_time()
        walker = random_walker(data, np.asarray(seeds.array).astype(np.int32))
        walker = np.asarray(seeds.labels)[walker - 1]  # it numbers the labels 1..N in sorted order
        rows.append((f"skimage random_walker (defaults, {args.anchor_input} input)",
                     time.perf_counter() - t0, time.process_time() - c0, walker))
    # on a shared machine the CPU time is the fairer figure: wall time counts other jobs' turns
    print(f"| method | wall (s) | CPU (s) | {' | '.join(f'Dice {truth.name_of(o)}' for o in organs)} |")
    print("|---|---|---|" + "---|" * len(organs))
    for name, wall, cpu, out in rows:
        scores = " | ".join(f"{dice(out == o, true == o):.3f}" for o in organs)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {scores} |")
    if len(rows) == 2:
        print(f"random walker / ours, CPU time: {rows[1][2] / rows[0][2]:.1f}x; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
