"""CPU speed of ``medrecon segment`` on a 512 x 512 x 300 CT against the issue's anchors.

    python bench/bench_segment.py [--threads 2] [--baseline-slices 30] [--repeats 2]

* default model, whole path (resample to the model grid, 2.5D UNet over the
  slices, clean-up, labels back onto the input grid), axial and ``auto`` (the
  default: 3-plane fusion on a whole abdomen);
* the trained 3D UNet baseline (same data, grid and path; MONAI sliding windows),
  and both networks' passes alone on the model grid; its weights are not committed:
  the first run trains it into ``.bench/unet3d_baseline`` (see ``bench/_baseline3d.py``);
* the anchor 2D baseline: a MONAI 2D UNet (channels 16-256, 2 residual units)
  over 512 x 512 slices in fp32 (issue: 76 s for 300 slices on this machine kind);
  timed on ``--baseline-slices`` slices and scaled to 300;
* the anchor 3D baseline: a 3D UNet, 96^3 sliding windows, overlap 0.25, over
  256 x 256 x 150 (issue: 9.7 s).

The volume is a phantom resampled to 512 x 512 x 300 (0.67 x 0.67 x 0.87 mm).
Ratios are printed last. Timings on a shared machine vary: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _baseline3d import CACHE, SECONDS, ensure_baseline  # noqa: E402


def big_volume():
    import numpy as np
    import torch
    import torch.nn.functional as F

    from medrecon.phantom import make_phantom
    from medrecon.volume import Volume

    vol, _ = make_phantom(3)
    lps = vol.reorient("LPS")
    shape = (512, 512, 300)
    t = torch.from_numpy(np.asarray(lps.array, dtype=np.float32))[None, None]
    big = F.interpolate(t, size=shape, mode="trilinear", align_corners=False)[0, 0].numpy()
    sp = np.asarray(lps.shape) * lps.spacing / np.asarray(shape)
    affine = lps.affine.copy()
    affine[:3, :3] = lps.direction * sp
    centre = lps.voxel_to_world((np.asarray(lps.shape) - 1) / 2)
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return Volume(big, affine, modality="CT", units="HU")


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--baseline-slices", type=int, default=30)
    ap.add_argument("--skip-all-planes", action="store_true")
    ap.add_argument("--baseline3d", default=str(CACHE),
                    help="trained 3D UNet baseline checkpoint (same data as the default model); "
                         "trained into this folder when it holds none (default: %(default)s)")
    ap.add_argument("--baseline3d-seconds", type=float, default=SECONDS,
                    help="training time when the baseline has to be trained (default: %(default)s)")
    ap.add_argument("--skip-baseline3d", action="store_true", help="leave the 3D baseline rows out")
    args = ap.parse_args()
    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import UNet

    from medrecon.models import load_model, segment
    from medrecon.models.grid import GridMap
    from medrecon.models.inference import normalise, predict_model_grid
    from medrecon.models.nets import NetSpec, build_network

    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}")
    vol = big_volume()
    model = load_model("default")
    segment(vol, model=model)  # warm-up (also loads the weights)
    rows = {}
    rows["default model, axial"] = timed(lambda: segment(vol, model=model, planes="axial"), args.repeats)
    if not args.skip_all_planes:
        rows["default model, auto (= 3 planes here)"] = timed(lambda: segment(vol, model=model), 1)

    m3 = None
    if not args.skip_baseline3d:
        m3 = load_model(ensure_baseline(Path(args.baseline3d), seconds=args.baseline3d_seconds))
        segment(vol, model=m3)
        rows["trained 3D UNet baseline, same path"] = timed(lambda: segment(vol, model=m3), args.repeats)
    # the network passes alone, on the model grid (no resampling, clean-up or labels back)
    grid = GridMap.build(vol.affine, vol.shape, spacing=model.card.spacing_mm,
                         orientation=model.card.orientation)
    xg = normalise(grid.image_to_model(vol.array, fill=model.card.window[0]), model.card)
    rows["network only: default model, axial"] = timed(
        lambda: predict_model_grid(model, xg, planes="axial"), args.repeats)
    if m3 is not None:
        rows["network only: trained 3D UNet baseline"] = timed(
            lambda: predict_model_grid(m3, xg), args.repeats)

    unet2d = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256),
                  strides=(2, 2, 2, 2), num_res_units=2).eval()
    n = args.baseline_slices
    x = torch.randn(n, 1, 512, 512)
    with torch.inference_mode():
        unet2d(x[:2])
        per = timed(lambda: [unet2d(x[i:i + 8]) for i in range(0, n, 8)], 1) / n
    rows[f"MONAI 2D UNet fp32, 300 x 512^2 (from {n} slices)"] = per * 300

    net3d = build_network(NetSpec("unet3d", 1, 11, {"channels": [16, 32, 64, 128], "strides": [2, 2, 2],
                                                    "num_res_units": 1})).eval()
    x3 = torch.randn(1, 1, 256, 256, 150)
    with torch.inference_mode():
        rows["3D UNet sliding window 96^3, 256x256x150"] = timed(
            lambda: sliding_window_inference(x3, (96, 96, 96), 4, net3d, overlap=0.25), 1)

    print(f"volume {vol.shape}, spacing {[round(float(s), 3) for s in vol.spacing]} mm")
    for name, t in rows.items():
        print(f"{name:<58} {t:8.2f} s")
    ours = rows["default model, axial"]
    print("ratios:")
    print(f"  default axial / 20 s target            {ours / 20:.2f}  ({'met' if ours < 20 else 'MISSED'})")
    print(f"  MONAI 2D UNet baseline / default axial {rows[next(k for k in rows if k.startswith('MONAI'))] / ours:.1f}x")
    print(f"  3D sliding window (256x256x150) / default axial (512x512x300) "
          f"{rows['3D UNet sliding window 96^3, 256x256x150'] / ours:.1f}x")
    if m3 is not None:
        print(f"  default axial / trained 3D baseline, whole call   "
              f"{ours / rows['trained 3D UNet baseline, same path']:.2f}  (target < 0.5)")
        print(f"  default axial / trained 3D baseline, network only "
              f"{rows['network only: default model, axial'] / rows['network only: trained 3D UNet baseline']:.2f}"
              "  (target < 0.5)")
    print(f"  issue anchors: 2D 76 s / default axial {76 / ours:.1f}x; 3D 9.7 s / default axial {9.7 / ours:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
