"""``medrecon train``: train a segmentation network (phantoms or your own labelled data)."""

from __future__ import annotations

import argparse


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _labels(choice: str | None, data: str):
    from medrecon.io.sidecar import read_names
    from medrecon.train.segtrain import DEFAULT_ORGANS

    if choice is None:
        choice = "organs" if data == "phantoms" else "all"
    if choice == "organs":
        return DEFAULT_ORGANS
    if choice == "all":
        return None
    return read_names(choice)


def register(subparsers) -> None:
    """Add the ``train`` sub-command."""
    p = subparsers.add_parser(
        "train", help="train a segmentation network",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a 2.5D slice network (or the 3D UNet baseline) and write a checkpoint "
                    "(model.safetensors + model.json) to OUTDIR.\n\n"
                    "DATA is 'phantoms' (synthetic, endless; seeds >= 1000, seeds 0-19 held out) or "
                    "a folder in one of these layouts:\n"
                    "  Medical Segmentation Decathlon: dataset.json, imagesTr/, labelsTr/\n"
                    "  nnU-Net raw: imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz\n"
                    "  plain pairs: <case>_image.nii.gz + <case>_label.nii.gz, or images/ + labels/\n"
                    "Multi-GPU: torchrun --nproc_per_node N -m medrecon train ...")
    p.add_argument("data", nargs="?", default="phantoms", help="'phantoms' or a dataset folder")
    p.add_argument("-o", "--output", required=True, help="checkpoint folder to write")
    p.add_argument("--arch", default="unet2d", choices=("unet2d", "flexunet2d", "unet3d"))
    p.add_argument("--channels", type=_ints, default=None, help="UNet channels, e.g. 16,32,64,128")
    p.add_argument("--res-units", type=int, default=None, help="residual units per UNet level")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--accum", type=int, default=1, help="gradient accumulation micro-batches")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--patch", type=int, default=128, help="patch edge in model voxels")
    p.add_argument("--spacing", type=_floats, default=(1.5, 1.5, 2.5), help="model voxel size mm")
    p.add_argument("--window", type=_floats, default=(-300.0, 400.0), help="HU window low,high")
    p.add_argument("--context", type=int, default=5, help="slices per input stack (odd)")
    p.add_argument("--planes", default="axial", choices=("axial", "all"))
    p.add_argument("--labels", default=None,
                   help="'organs' (the default model's 10 abdominal structures; default for "
                        "phantoms), 'all' (every label of the first case; default for folders) "
                        "or a JSON file of label id -> name")
    p.add_argument("--cases", type=int, default=12, help="phantoms held in memory")
    p.add_argument("--refresh-every", type=int, default=0, help="swap in a new phantom every N steps")
    p.add_argument("--small", action="store_true", help="small (fast, coarse) phantoms")
    p.add_argument("--workers", type=int, default=1,
                   help="processes making phantoms; on a GPU keep a few cores free for the "
                        "training process (it launches the kernels): ~4 on a 16-core host")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on the GPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUTDIR/train_state.pt")
    p.add_argument("--init", default=None, help="start from this checkpoint's weights (fine-tune)")
    p.add_argument("--val-every", type=int, default=0)
    p.add_argument("--eval", type=int, default=0, metavar="N",
                   help="afterwards score N held-out phantoms (seeds 0..N-1) into metrics.json")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train, save, optionally evaluate."""
    from medrecon.train import LoopConfig, TrainConfig, train_segmenter
    from medrecon.train.heldout import evaluate_phantoms, format_metrics, write_metrics
    from medrecon.train.segtrain import phantom_config

    options = {}
    if args.channels:
        options["channels"] = list(args.channels)
        options["strides"] = [2] * (len(args.channels) - 1)
    if args.res_units is not None:
        options["num_res_units"] = args.res_units
    config = TrainConfig(
        arch=args.arch, net_options=options or TrainConfig().net_options,
        labels=_labels(args.labels, args.data),
        data=args.data, cases=args.cases, refresh_every=args.refresh_every,
        phantom_small=args.small, spacing_mm=tuple(args.spacing), window=tuple(args.window),
        context=args.context, planes=("axial", "coronal", "sagittal") if args.planes == "all" else ("axial",),
        patch=args.patch, batch=args.batch, workers=args.workers, init=args.init,
        loop=LoopConfig(steps=args.steps, lr=args.lr, accum=args.accum, amp=not args.no_amp,
                        compile=args.compile, seed=args.seed, val_every=args.val_every,
                        checkpoint_every=max(100, args.steps // 10) if args.resume else 0),
    )
    model, history = train_segmenter(config, args.output, device=args.device, resume=args.resume,
                                     show_bar=not args.quiet)
    first = sum(history.losses[:10]) / max(1, len(history.losses[:10]))
    last = sum(history.losses[-10:]) / max(1, len(history.losses[-10:]))
    print(f"trained {len(history.losses)} steps in {history.seconds:.1f} s: loss {first:.4f} -> "
          f"{last:.4f}; wrote {args.output}")
    if args.eval and args.data == "phantoms":
        metrics = evaluate_phantoms(model, seeds=range(args.eval), planes=args.planes,
                                    device=args.device, phantom_config=phantom_config(args.small),
                                    workers=args.workers)
        write_metrics(args.output, metrics)
        print(format_metrics(metrics))
    return 0
