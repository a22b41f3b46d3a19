"""Time .nii.gz loading: medrecon.io.nifti vs SimpleITK vs nibabel vs MONAI.

A synthetic 512x512x300 int16 CT (body ellipse, organs, noise; written by
SimpleITK, so by a tool other than ours) is created in a temporary folder and
read by each loader in turn; each loader's best of ``--repeat`` runs is kept.
The last lines print the ratios (ours / theirs; below 1 means we are faster).

Usage::

    OMP_NUM_THREADS=1 python bench/bench_nifti.py [--shape 512 512 300] [--repeat 3] [--no-monai]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def synthetic_ct(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """(I, J, K) int16 HU: air, an elliptic body of fat/muscle, a liver and noise."""
    rng = np.random.default_rng(seed)
    i, j = np.mgrid[: shape[0], : shape[1]]
    ci, cj = shape[0] / 2, shape[1] / 2
    body = ((i - ci) / (0.45 * shape[0])) ** 2 + ((j - cj) / (0.33 * shape[1])) ** 2
    plane = np.full(shape[:2], -1000.0)
    plane[body < 1.0] = -90.0
    plane[body < 0.8] = 45.0
    plane[((i - ci * 0.8) / (0.15 * shape[0])) ** 2 + ((j - cj) / (0.12 * shape[1])) ** 2 < 1] = 60.0
    ct = np.empty(shape, dtype=np.int16)
    for k in range(shape[2]):
        ct[:, :, k] = plane + rng.normal(0.0, 12.0, size=shape[:2])
    return ct


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-monai", action="store_true", help="skip MONAI (imports torch)")
    args = parser.parse_args()

    import nibabel as nib
    import SimpleITK as sitk

    from medrecon.io.nifti import read_nifti

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ct.nii.gz"
        ct = synthetic_ct(tuple(args.shape))
        image = sitk.GetImageFromArray(ct.T)
        image.SetSpacing((0.8, 0.8, 1.5))
        sitk.WriteImage(image, str(path), True)
        size_mb = path.stat().st_size / 1e6

        ours_array = read_nifti(path)[0]
        assert np.array_equal(ours_array, ct), "our reader disagrees with the data written"
        del ours_array

        timings = {
            "medrecon read_nifti": best(lambda: read_nifti(path), args.repeat),
            "SimpleITK ReadImage+array view": best(
                lambda: sitk.GetArrayViewFromImage(sitk.ReadImage(str(path))), args.repeat
            ),
            "nibabel dataobj (int16)": best(lambda: np.asanyarray(nib.load(path).dataobj), args.repeat),
            "nibabel get_fdata (float64)": best(lambda: nib.load(path).get_fdata(), args.repeat),
        }
        if not args.no_monai:
            from monai.transforms import LoadImage

            loader = LoadImage(image_only=True)
            timings["MONAI LoadImage"] = best(lambda: loader(str(path)), args.repeat)

    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"file: {'x'.join(map(str, args.shape))} int16 .nii.gz written by SimpleITK, {size_mb:.1f} MB; "
          f"best of {args.repeat}")
    for name, seconds in timings.items():
        print(f"{name:34s} {seconds:7.3f} s")
    ours = timings["medrecon read_nifti"]
    for name, seconds in timings.items():
        if name != "medrecon read_nifti":
            print(f"ratio ours / {name}: {ours / seconds:.2f}")


if __name__ == "__main__":
    main()
