"""A small nnU-Net v2 trained-model folder, made by nnunetv2's own code on phantoms.

The plans are nnU-Net's plans format (a tiny 3-stage PlainConvUNet, 16 x 48 x 48
patch at 8 x 6 x 6 mm); the phantoms are preprocessed with nnunetv2's
``DefaultPreprocessor`` and stored as its numpy dataset; the network is built,
trained for a few dozen steps and saved by ``nnUNetTrainer`` (its
``train_step`` and ``save_checkpoint``), with the numpy scalars of a real
training log in the checkpoint. Labels: six abdominal organs; after this brief
training the network finds at least the liver, on the patient's right, so its
prediction is not left/right symmetric.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path

import numpy as np

DATASET = "Dataset901_Phantom"
PATCH = [16, 48, 48]
SPACING = [8.0, 6.0, 6.0]  # z, y, x as nnU-Net orders them
# more classes than the first stage's 4 features: inference averages features, not logits
LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney_right": 3, "kidney_left": 4, "stomach": 5, "aorta": 6}
PHANTOM_IDS = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3, "stomach": 6, "aorta": 52}

PLANS = {
    "dataset_name": DATASET, "plans_name": "nnUNetPlans",
    "original_median_spacing_after_transp": SPACING, "original_median_shape_after_transp": [32, 59, 59],
    "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
    "configurations": {"3d_fullres": {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2, "patch_size": PATCH, "median_image_size_in_voxels": [32, 59, 59], "spacing": SPACING,
        "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
                "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
                "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": False}},
    "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
    "foreground_intensity_properties_per_channel": {"0": {
        "max": 1500.0, "mean": 60.0, "median": 55.0, "min": -200.0,
        "percentile_00_5": -150.0, "percentile_99_5": 400.0, "std": 60.0}},
}
DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": 3, "file_ending": ".nii.gz"}


@contextlib.contextmanager
def _nnunet_paths(root: Path):
    names = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
    old = {n: os.environ.get(n) for n in names}
    os.environ.update({n: str(root / n) for n in names})
    try:
        yield
    finally:
        for n, v in old.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def phantom(seed: int):
    """A small phantom stored in LPS order, ``(Volume, LabelMap)``."""
    from medrecon.phantom import PhantomConfig, make_phantom

    return make_phantom(seed, config=PhantomConfig(small=True, orientation="LPS"))


def train_phantom_model(root: Path, *, seeds=(0, 1, 2), steps: int = 60) -> Path:
    """Build, train and save the model; return its trained-model folder."""
    import torch
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    with _nnunet_paths(root):
        plans = PlansManager(copy.deepcopy(PLANS))
        config = plans.get_configuration("3d_fullres")
        prep = root / "nnUNet_preprocessed" / DATASET / config.data_identifier
        prep.mkdir(parents=True)
        cases = []
        for seed in seeds:
            volume, truth = phantom(seed)
            seg = np.zeros(truth.shape, np.int16)
            for name, value in LABELS.items():
                if value:
                    seg[np.asarray(truth.array) == PHANTOM_IDS[name]] = value
            image = np.asarray(volume.array, np.float32).transpose(2, 1, 0)[None]
            props = {"spacing": [float(s) for s in volume.spacing[::-1]]}
            data, target, props = DefaultPreprocessor(verbose=False).run_case_npy(
                image, seg.transpose(2, 1, 0)[None], props, plans, config, DATASET_JSON)
            nnUNetDatasetNumpy.save_case(data, target, props, str(prep / f"case_{seed}"))
            cases.append((data, np.maximum(target, 0).astype(np.float32)))

        trainer = nnUNetTrainer(dict(copy.deepcopy(PLANS), continue_training=False), "3d_fullres", 0,
                                DATASET_JSON, device=torch.device("cpu"))
        trainer.enable_deep_supervision = False
        trainer.initialize()
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        trainer.network.train()
        losses = []
        for _ in range(steps):
            xs, ys = [], []
            for _ in range(2):
                data, target = cases[rng.integers(len(cases))]
                corner = [int(rng.integers(0, max(1, n - p + 1))) for n, p in zip(data.shape[1:], PATCH, strict=True)]
                window = (slice(None), *(slice(c, c + p) for c, p in zip(corner, PATCH, strict=True)))
                xs.append(data[window])
                ys.append(target[window])
            out = trainer.train_step({"data": torch.from_numpy(np.stack(xs)),
                                      "target": torch.from_numpy(np.stack(ys))})
            losses.append(out["loss"])
        # what one epoch's end logs: numpy scalars, as in every real nnU-Net checkpoint
        trainer.logger.log("train_losses", np.mean(losses), 0)
        trainer.logger.log("val_losses", np.float32(losses[-1]), 0)
        trainer.logger.log("mean_fg_dice", np.float64(0.5), 0)
        trainer.logger.log("ema_fg_dice", np.float64(0.5), 0)
        trainer.logger.log("dice_per_class_or_region", [np.float64(0.5)] * (len(LABELS) - 1), 0)
        trainer.logger.log("lrs", trainer.optimizer.param_groups[0]["lr"], 0)
        trainer.logger.log("epoch_start_timestamps", 0.0, 0)
        trainer.logger.log("epoch_end_timestamps", 1.0, 0)
        trainer._best_ema = np.float64(0.5)
        trainer.save_checkpoint(str(Path(trainer.output_folder) / "checkpoint_final.pth"))
        folder = Path(trainer.output_folder_base)
    (folder / "plans.json").write_text(json.dumps(PLANS))
    (folder / "dataset.json").write_text(json.dumps(DATASET_JSON))
    return folder
