"""CPU time of medrecon's nnU-Net engine against nnunetv2's own predictor, same folder, same settings.

    python bench/bench_nnunet.py [--shape 512 512 300] [--spacing 0.8 0.8 1.5] [--threads 2]

The model folder is made here the way nnU-Net makes one, with TotalSegmentator's
size: nnunetv2's ``ExperimentPlanner`` writes the default ``3d_fullres`` plans
for a CT dataset fingerprint at 1.5 mm (TotalSegmentator's spacing) with 117
classes, and ``nnUNetTrainer`` writes the checkpoint with its freshly
initialised weights (the time does not depend on them). The CT is a phantom
resampled to ``--shape`` voxels of ``--spacing`` mm (default 512 x 512 x 300 at
0.8 x 0.8 x 1.5 mm).

Both run in this process on the same array with the same settings: tile step
0.5, Gaussian weighting, no mirroring (TotalSegmentator's setting), fold 0, the
same number of torch threads (``--threads``; nnunetv2's own thread count for its
export is set to it too):

* nnunetv2: ``nnUNetPredictor.predict_single_npy_array`` (preprocess, sliding
  window, resample the logits, argmax);
* medrecon: :func:`medrecon.models.nnunet_predict.predict_array`, once with its
  default precision (``auto``) and once in float32 (``--precisions``).

It prints each time with the process's peak memory so far, the ratios and how
many voxels the label maps share;
``--repeats`` interleaves rounds so that a change of load hits every row. At the
default size nnunetv2 needs about 45 GB of memory for its export (117 classes of
logits in float64 and at input resolution); ``--shape 256 256 150`` keeps the spacing
and plans and needs an eighth.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_model_folder(root: Path, *, classes: int = 117) -> Path:
    """Default 3d_fullres plans (nnunetv2's planner) and an initialised checkpoint (its trainer)."""
    import nibabel as nib

    for d in ("raw", "pre", "res"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.environ.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "pre"),
                      nnUNet_results=str(root / "res"))
    import torch
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner,
    )
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from medrecon.labels import total_class_map

    name = "Dataset999_TotalSize"
    raw = root / "raw" / name
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(exist_ok=True)
    names = dict(total_class_map())
    labels = {"background": 0, **{names[i]: i for i in range(1, classes + 1)}}
    dataset = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 10, "file_ending": ".nii.gz"}
    (raw / "dataset.json").write_text(json.dumps(dataset))
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), affine), raw / "imagesTr" / "ct_000_0000.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), affine), raw / "labelsTr" / "ct_000.nii.gz")
    pre = root / "pre" / name
    pre.mkdir(parents=True, exist_ok=True)
    fingerprint = {  # a whole-body CT dataset at TotalSegmentator's 1.5 mm
        "spacings": [[1.5, 1.5, 1.5]] * 10, "shapes_after_crop": [[300, 270, 270]] * 10,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 3000.0, "mean": 100.0, "median": 80.0, "min": -1024.0,
            "percentile_00_5": -1000.0, "percentile_99_5": 1500.0, "std": 250.0}}}
    (pre / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    plans = ExperimentPlanner(name).plan_experiment()
    config = plans["configurations"]["3d_fullres"]
    data_dir = pre / config["data_identifier"]
    data_dir.mkdir(exist_ok=True)
    nnUNetDatasetNumpy.save_case(np.zeros((1, 8, 8, 8), np.float32), np.zeros((1, 8, 8, 8), np.int8),
                                 {"spacing": [1.5] * 3}, str(data_dir / "ct_000"))
    trainer = nnUNetTrainer(dict(copy.deepcopy(plans), continue_training=False), "3d_fullres", 0, dataset,
                            device=torch.device("cpu"))
    torch.manual_seed(0)  # the same initial weights in every run
    trainer.initialize()
    trainer.save_checkpoint(str(Path(trainer.output_folder) / "checkpoint_final.pth"))
    folder = Path(trainer.output_folder_base)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    return folder


def make_ct(shape, spacing) -> np.ndarray:
    """A phantom CT resampled to ``shape`` (i, j, k), returned in nnU-Net's (z, y, x) order."""
    import torch
    import torch.nn.functional as F

    from medrecon.phantom import make_phantom

    vol, _ = make_phantom(3)
    lps = vol.reorient("LPS")
    t = torch.from_numpy(np.asarray(lps.array, dtype=np.float32))[None, None]
    big = F.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=False)[0, 0].numpy()
    return np.ascontiguousarray(big.transpose(2, 1, 0))


def _peak() -> str:
    """The process's peak resident memory so far (Linux ``ru_maxrss``, KiB)."""
    import resource

    return f"peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300), help="CT voxels i j k")
    ap.add_argument("--spacing", type=float, nargs=3, default=(0.8, 0.8, 1.5), help="CT voxel size mm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precisions", default="auto,float32", help="medrecon precisions to time")
    ap.add_argument("--skip-nnunet", action="store_true", help="time medrecon only")
    ap.add_argument("--repeats", type=int, default=1, help="rounds of all runs, interleaved (the best is kept)")
    args = ap.parse_args()
    os.environ["nnUNet_def_n_proc"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from medrecon.models.nnunet import load_nnunet_folder
    from medrecon.models.nnunet_predict import predict_array, resolve_precision

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_model_folder(Path(tmp))
        plans = json.loads((folder / "plans.json").read_text())["configurations"]["3d_fullres"]
        image = make_ct(args.shape, args.spacing)
        spacing = [float(s) for s in args.spacing[::-1]]
        print(f"CT {tuple(args.shape)} at {tuple(args.spacing)} mm; plans: patch {plans['patch_size']}, "
              f"spacing {plans['spacing']}, 117 classes; {args.threads} threads; "
              f"load {os.getloadavg()[0]:.1f}; before the runs: {_peak()}", flush=True)
        model = load_nnunet_folder(folder, folds=("0",))
        predictor = None
        if not args.skip_nnunet:
            predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                        device=torch.device("cpu"), verbose=False, allow_tqdm=False)
            predictor.initialize_from_trained_model_folder(str(folder), use_folds=("0",))
        times, labels = {}, {}
        for _ in range(args.repeats):  # interleaved, so that a change of load hits every row
            for precision in args.precisions.split(","):
                dtype = resolve_precision(precision, torch.device("cpu"))
                key = f"medrecon ({'float32' if dtype is None else str(dtype)[6:]})"
                t = time.perf_counter()
                labels[key] = predict_array(model, image, spacing, mirroring=False, precision=precision)
                times.setdefault(key, []).append(time.perf_counter() - t)
                print(f"{key}: {times[key][-1]:.1f} s (load {os.getloadavg()[0]:.1f}, {_peak()})", flush=True)
            if predictor is not None:
                t = time.perf_counter()
                labels["nnunetv2"] = predictor.predict_single_npy_array(image[None], {"spacing": spacing})
                times.setdefault("nnunetv2", []).append(time.perf_counter() - t)
                print(f"nnunetv2 nnUNetPredictor: {times['nnunetv2'][-1]:.1f} s "
                      f"(load {os.getloadavg()[0]:.1f}, {_peak()})", flush=True)
        if predictor is not None:
            for key in times:
                if key != "nnunetv2":
                    ratios = [a / b for a, b in zip(times[key], times["nnunetv2"], strict=True)]
                    same = float(np.mean(labels[key] == labels["nnunetv2"]))
                    print(f"{key} / nnunetv2: best {min(times[key]) / min(times['nnunetv2']):.2f}, per round "
                          f"{', '.join(f'{r:.2f}' for r in ratios)} (same label in {100 * same:.2f} % of voxels)")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
