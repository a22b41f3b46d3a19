"""Benchmark: the plausibility checks on a 512 x 512 x 300 label map, beside a plain per-label loop.

Study: a 512 x 512 x 300 synthetic contrast CT (0.8 x 0.8 x 1 mm, seed 0, made
here, not timed) and its exact labels, reduced to the default model's 10
organs, in two variants:

* ``organs``: the 10 organs as they are (compact boxes);
* ``scattered``: the same with 300 false 3 x 3 x 3 blobs of every organ spread
  over the field of view, as a model's false positives in the arms are (each
  organ's box is then the whole grid);
* ``organs_F``: ``organs`` with the labels and the CT in Fortran (column-major) order, as
  NIfTI files load.

Timed, one thread, best of ``--repeat`` runs after one untimed warm-up:

* ``medrecon``: :func:`medrecon.sources.plausibility.check_organs` (volume, mean
  HU, edge contact, centre, inside the trunk, side, pieces, order, confidence);
* ``anchor``: the same per-organ statistics (voxel count, mean HU, centroid, edge
  contact, 26-connected pieces) from a plain loop over the labels, one
  full-volume boolean mask per label, numpy and scipy.ndimage, at full resolution.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_plausibility.py``
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ORGANS = (1, 2, 3, 4, 5, 6, 7, 51, 52, 63)  # the default model's organs, TotalSegmentator ids


def _study(slices: int):
    from medrecon.phantom import PhantomConfig, make_phantom

    volume, labels = make_phantom(0, config=PhantomConfig(
        matrix=512, slices=slices, spacing_xy=(0.8, 0.8), slice_thickness=(1.0, 1.0),
        orientation="LPS", contrast=True))
    array = np.asarray(labels.array)
    organs = labels.replace(array=np.where(np.isin(array, ORGANS), array, 0).astype(array.dtype))
    scattered = np.array(organs.array)
    rng = np.random.default_rng(0)
    for label in ORGANS:
        for i, j, k in rng.integers(0, np.array(scattered.shape) - 3, size=(300, 3)):
            scattered[i:i + 3, j:j + 3, k:k + 3] = label
    # the array order nibabel loads NIfTI files in, for the CT and the labels alike
    fortran = (organs.replace(array=np.asfortranarray(organs.array)),
               volume.replace(array=np.asfortranarray(volume.array)))
    return volume, {"organs": (organs, volume), "scattered": (organs.replace(array=scattered), volume),
                    "organs_F": fortran}


def anchor(labels, volume) -> dict[int, dict]:
    """Per-label statistics the plain way: a full-volume mask per label."""
    from scipy import ndimage

    lab = np.asarray(labels.array)
    hu = np.asarray(volume.array)
    out = {}
    for label in np.unique(lab):
        if label == 0:
            continue
        mask = lab == label
        idx = np.argwhere(mask)
        edge = any(mask[(slice(None),) * a + (end,)].any() for a in range(3) for end in (0, -1))
        _, pieces = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
        out[int(label)] = {"voxels": len(idx), "mean_hu": float(hu[mask].mean()), "centroid": idx.mean(0),
                           "edge": edge, "pieces": pieces}
    return out


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    """Make the study, time both on each variant, print one row each."""
    from medrecon.sources.plausibility import check_organs

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slices", type=int, default=300)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"load average {tuple(round(x, 1) for x in os.getloadavg())}")
    t0 = time.perf_counter()
    volume, variants = _study(args.slices)
    print(f"study {'x'.join(map(str, volume.shape))} ready in {time.perf_counter() - t0:.1f} s (not timed)")
    print(f"{'labels':<10} {'medrecon s':>10} {'anchor s':>9} {'anchor/medrecon':>16}  verdicts")
    for name, (labels, volume) in variants.items():
        confidence = {label: 0.95 for label in ORGANS}
        checks = check_organs(labels, volume, confidence=confidence)  # warm-up: imports, the anatomy table
        ours = _best(lambda labels=labels, volume=volume, confidence=confidence:
                     check_organs(labels, volume, confidence=confidence),
                     args.repeat)
        plain = anchor(labels, volume)
        theirs = _best(lambda labels=labels, volume=volume: anchor(labels, volume), args.repeat)
        for label, c in checks.items():  # the two agree on what both measure
            assert round(plain[label]["voxels"] * labels.voxel_volume_mm3 / 1000, 2) == c.measured["label_volume_ml"]
            assert abs(plain[label]["mean_hu"] - c.measured["mean_hu"]) < 1e-2
            assert plain[label]["edge"] == c.cut_at_edge
        passed = sum(c.plausible for c in checks.values())
        print(f"{name:<10} {ours:10.2f} {theirs:9.2f} {theirs / ours:16.1f}  {passed}/{len(checks)} plausible")
    print(f"load average after: {tuple(round(x, 1) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
