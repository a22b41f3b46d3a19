"""GPU check: training throughput, default-model training, 3D baseline, held-out scores, timings.

Run by bench/gpu_check.sh on a CUDA machine (or with --tiny on the CPU to test the
script itself). Every stage is guarded: a failing stage is logged and the next one
runs, and the trained models are written as soon as they exist.

    python bench/gpu_train.py --out OUT [--train-seconds 210] [--train3d-seconds 55]
                              [--unet3d-from .bench/unet3d_baseline] [--tiny]

Writes OUT/default/{model.safetensors,model.json,metrics.json},
OUT/unet3d/{model.safetensors,model.json,metrics.json} and OUT/gpu_results.json,
and prints a summary table last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _baseline3d import (  # noqa: E402
    SECONDS,
    baseline_config,
    copy_model,
    default_workers,
    is_checkpoint,
    store,
)

RESULTS: dict = {}


def stage(name):
    def wrap(fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            print(f"== {name}", flush=True)
            try:
                out = fn(*args, **kwargs)
                RESULTS.setdefault("stages", {})[name] = {"ok": True, "seconds": round(time.perf_counter() - t0, 1)}
                return out
            except Exception as exc:  # noqa: BLE001 - keep going, report it
                traceback.print_exc()
                RESULTS.setdefault("stages", {})[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                                          "seconds": round(time.perf_counter() - t0, 1)}
                return None
        return run
    return wrap


def sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def default_options():
    return {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 1}


@stage("throughput")
def throughput(dev, args, cases):
    """Model-only vs end-to-end (batcher + on-device augmentation) training step rate."""
    import torch
    from monai.losses import DiceCELoss

    from medrecon.models.nets import NetSpec, build_network
    from medrecon.train.graphed import GraphedBatches
    from medrecon.train.loop import amp_enabled
    from medrecon.train.sampler import Batcher

    batch, patch = (4, 64) if args.tiny else (32, 160)
    spec = NetSpec("unet2d", 5, 11, default_options())
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    use_amp = amp_enabled(dev, True)
    out = {"batch": batch, "patch": patch, "bf16": use_amp}

    def bench(next_batch, channels_last, n, clip=False):
        model = build_network(spec).to(dev)
        if channels_last and dev.type == "cuda":
            model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step():
            x, y = next_batch()
            if channels_last and dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                value = loss(model(x).float(), y[:, None])
            value.backward()
            if clip:
                for group in opt.param_groups:
                    group["lr"] = 1e-3
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        for _ in range(5):
            step()
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        sync(dev)
        return (time.perf_counter() - t0) / n

    n = 3 if args.tiny else 60
    for size in ([patch] if args.tiny else [patch, 256]):
        x = torch.randn(batch, 5, size, size, device=dev)
        y = torch.randint(0, 11, (batch, size, size), device=dev)
        for cl in (False, True):
            if cl:  # converted once here: the timed step then holds no extra copy
                x = x.contiguous(memory_format=torch.channels_last)
            t = bench(lambda x=x, y=y: (x, y), cl, n)
            out[f"model_only_{size}_{'cl' if cl else 'nchw'}_ms"] = round(1000 * t, 2)
    x_fixed = torch.randn(batch, 5, patch, patch, device=dev).contiguous(memory_format=torch.channels_last)
    y_fixed = torch.randint(0, 11, (batch, patch, patch), device=dev)

    def batcher():
        return Batcher(cases, batch=batch, patch=patch, context=5,
                       planes=("axial", "axial", "coronal", "sagittal"), device=dev, seed=0)

    # eager: the batcher's ops launched one by one before each step (the previous loop);
    # graphed: what medrecon.train uses on a GPU (replayed CUDA graphs, one step ahead)
    eager, graphed = batcher(), GraphedBatches.wrap(batcher(), channels_last=True)
    out["end_to_end_source"] = type(graphed).__name__
    rows = {"model_only": lambda: (x_fixed, y_fixed), "eager": eager, "graphed": graphed}
    times = {(name, clip): [] for name in rows for clip in (False, True)}
    for _ in range(1 if args.tiny else args.rounds):  # interleaved rounds, median: clocks drift
        for (name, clip), got in times.items():
            got.append(bench(rows[name], True, 3 if args.tiny else 200, clip=clip))
    med = {key: statistics.median(v) for key, v in times.items()}
    for clip in (False, True):
        tag = "_clip" if clip else ""
        t_model = med[("model_only", clip)]
        out[f"model_only{tag}_cl_ms"] = round(1000 * t_model, 2)
        out[f"model_only{tag}_slices_per_s"] = round(batch / t_model, 1)
        for name in ("eager", "graphed"):
            t = med[(name, clip)]
            out[f"end_to_end_{name}{tag}_cl_ms"] = round(1000 * t, 2)
            out[f"end_to_end_{name}{tag}_slices_per_s"] = round(batch / t, 1)
            out[f"end_to_end_{name}{tag}_fraction"] = round(t_model / t, 3)
    out["end_to_end_slices_per_s"] = out["end_to_end_graphed_slices_per_s"]
    out["end_to_end_fraction"] = out["end_to_end_graphed_fraction"]
    RESULTS["throughput"] = out
    print(json.dumps(out), flush=True)


@stage("train_2p5d")
def train_default(dev, args, work, out):
    from medrecon.train.loop import LoopConfig
    from medrecon.train.segtrain import DEFAULT_ORGANS, TrainConfig, train_segmenter

    cfg = TrainConfig(
        arch="unet2d", net_options=default_options(), labels=DEFAULT_ORGANS,
        cases=4 if args.tiny else 40,
        phantom_small=args.tiny, spacing_mm=(1.5, 1.5, 2.5), context=5,
        planes=("axial", "coronal", "sagittal"), patch=64 if args.tiny else 160,
        batch=4 if args.tiny else 32, workers=args.workers, refresh_every=0 if args.tiny else 8,
        init=args.init,
        loop=LoopConfig(steps=args.steps, lr=args.lr, warmup=100 if not args.tiny else 2,
                        max_seconds=args.train_seconds, seed=args.seed),
    )
    model, history = train_segmenter(cfg, work / "default", device=str(dev), show_bar=False)
    copy_model(work / "default", out / "default")
    RESULTS["train_2p5d"] = {"steps": len(history.losses), "seconds": round(history.seconds, 1),
                             "loss_first": history.losses[0], "loss_last": history.losses[-1],
                             "val": history.val[-1][1] if history.val else {},
                             "slices_per_s": round(len(history.losses) * cfg.batch / history.seconds, 1),
                             "steady_slices_per_s": (round(history.steady_rate() * cfg.batch, 1)
                                                     if history.steady_rate() else None)}
    print(json.dumps(RESULTS["train_2p5d"]), flush=True)
    return model


@stage("train_3d")
def train_3d(dev, args, work, out):
    from medrecon.models import load_model
    from medrecon.train.segtrain import train_segmenter

    cache = Path(args.unet3d_from) if args.unet3d_from else None
    if cache is not None and is_checkpoint(cache):
        copy_model(cache, work / "unet3d")
        RESULTS["train_3d"] = {"loaded": args.unet3d_from}
        return load_model(work / "unet3d")
    cfg = baseline_config(seconds=args.train3d_seconds, workers=args.workers, steps=args.steps,
                          tiny=args.tiny)
    model, history = train_segmenter(cfg, work / "unet3d", device=str(dev), show_bar=False)
    copy_model(work / "unet3d", out / "unet3d")
    if cache is not None and not args.tiny:  # --unet3d-from named an empty cache: fill it
        store(work / "unet3d", cache)
    RESULTS["train_3d"] = {"steps": len(history.losses), "seconds": round(history.seconds, 1),
                           "loss_first": history.losses[0], "loss_last": history.losses[-1]}
    print(json.dumps(RESULTS["train_3d"]), flush=True)
    return model


@stage("real_loop")
def real_loop(dev, args, work):
    """The real training loop (fresh phantoms made by N processes, swapped in every 8 steps)."""
    from medrecon.train.loop import LoopConfig
    from medrecon.train.segtrain import DEFAULT_ORGANS, TrainConfig, train_segmenter

    out = {}
    for workers in args.real_loop_workers:
        cfg = TrainConfig(
            arch="unet2d", net_options=default_options(), labels=DEFAULT_ORGANS,
            cases=4 if args.tiny else 24, phantom_small=args.tiny, spacing_mm=(1.5, 1.5, 2.5),
            context=5, planes=("axial", "coronal", "sagittal"), patch=64 if args.tiny else 160,
            batch=4 if args.tiny else 32, workers=workers, refresh_every=8,
            init=args.init,
            loop=LoopConfig(steps=args.steps, lr=args.lr, warmup=2, max_seconds=args.real_loop_seconds,
                            seed=args.seed),
        )
        _, history = train_segmenter(cfg, work / f"real_loop_{workers}", device=str(dev), show_bar=False)
        out[f"workers_{workers}_slices_per_s"] = round(len(history.losses) * cfg.batch / history.seconds, 1)
        steady = history.steady_rate()
        out[f"workers_{workers}_steady_slices_per_s"] = round(steady * cfg.batch, 1) if steady else None
    RESULTS["real_loop"] = out
    print(json.dumps(out), flush=True)


@stage("evaluate")
def evaluate_models(dev, args, work, out, models):
    from medrecon.train.heldout import evaluate_phantoms, format_metrics, write_metrics
    from medrecon.train.segtrain import phantom_config

    seeds = range(args.eval)
    for name, model, planes in models:
        if model is None:
            continue
        t0 = time.perf_counter()
        metrics = evaluate_phantoms(model, seeds=seeds, planes=planes, device=str(dev),
                                    phantom_config=phantom_config(args.tiny), workers=args.workers)
        metrics["device"] = str(dev)
        key = name if planes == "axial" else f"{name}_{planes}"
        if planes == "axial":
            write_metrics(work / name, metrics)
            copy_model(work / name, out / name)
        RESULTS.setdefault("heldout", {})[key] = metrics
        print(format_metrics(metrics), f"({time.perf_counter() - t0:.0f} s)", flush=True)


def big_volume(tiny: bool):
    """A 512 x 512 x 300 CT (0.8 x 0.8 x 1.0 mm) made by resampling a phantom."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from medrecon.train.data import phantom_pair
    from medrecon.volume import Volume

    shape = (96, 96, 60) if tiny else (512, 512, 300)
    vol, _ = phantom_pair(3)
    lps = vol.reorient("LPS")
    t = torch.from_numpy(np.asarray(lps.array, dtype=np.float32))[None, None]
    big = F.interpolate(t, size=shape, mode="trilinear", align_corners=False)[0, 0].numpy()
    ext = np.asarray(lps.shape) * lps.spacing
    sp = ext / np.asarray(shape)
    affine = lps.affine.copy()
    affine[:3, :3] = lps.direction * sp
    centre = lps.voxel_to_world((np.asarray(lps.shape) - 1) / 2)
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return Volume(big, affine, modality="CT", units="HU")


@stage("inference_timing")
def inference_timing(dev, args, models):
    import torch
    from monai.inferers import sliding_window_inference

    from medrecon.models import segment
    from medrecon.models.grid import GridMap, as_tensor
    from medrecon.models.inference import normalise, predict_model_grid
    from medrecon.models.nets import NetSpec, build_network

    vol = big_volume(args.tiny)
    out = {"volume_shape": list(vol.shape), "spacing_mm": [round(float(s), 3) for s in vol.spacing]}
    reps = 2 if args.tiny else 5
    for name, model, planes in models:
        if model is None:
            continue
        segment(vol, model=model, device=str(dev), planes=planes)  # warm-up
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            labels = segment(vol, model=model, device=str(dev), planes=planes)
            times.append(time.perf_counter() - t0)
        out[f"{name}_{planes}_s"] = round(statistics.median(times), 4)
        out[f"{name}_{planes}_labels"] = labels.labels
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            segment(vol, model=model, device=str(dev), planes=planes, largest_component=False)
            times.append(time.perf_counter() - t0)
        out[f"{name}_{planes}_no_cleanup_s"] = round(statistics.median(times), 4)
        # where a whole call's time goes: stage boundaries from the progress callback
        marks = []

        def mark(stage, fraction, marks=marks):
            if not marks or marks[-1][0] != stage:
                sync(dev)
                marks.append((stage, time.perf_counter()))

        segment(vol, model=model, device=str(dev), planes=planes, progress=mark)
        marks.append(("end", time.perf_counter()))
        out[f"{name}_{planes}_stages_s"] = {a[0]: round(b[1] - a[1], 4) for a, b in zip(marks, marks[1:], strict=False)}
        # the network pass alone, on the model grid already on the device
        grid = GridMap.build(vol.affine, vol.shape, spacing=model.card.spacing_mm,
                             orientation=model.card.orientation)
        xg = normalise(grid.image_to_model(as_tensor(vol.array, torch.float32).to(dev), fill=model.card.window[0]),
                       model.card)
        predict_model_grid(model, xg, planes=planes, device=str(dev))
        times = []
        for _ in range(reps):
            sync(dev)
            t0 = time.perf_counter()
            predict_model_grid(model, xg, planes=planes, device=str(dev))
            sync(dev)
            times.append(time.perf_counter() - t0)
        out[f"{name}_{planes}_network_only_s"] = round(statistics.median(times), 4)
    # the 3D anchor: a 3D UNet, 96^3 windows, overlap 0.25, over 256 x 256 x 150
    net = build_network(NetSpec("unet3d", 1, 11, {"channels": [16, 32, 64, 128], "strides": [2, 2, 2],
                                                  "num_res_units": 1})).to(dev).eval()
    x = torch.randn(1, 1, *((64, 64, 40) if args.tiny else (256, 256, 150)), device=dev)
    roi = (32, 32, 32) if args.tiny else (96, 96, 96)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        sliding_window_inference(x, roi, 4, net, overlap=0.25)
        sync(dev)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            sliding_window_inference(x, roi, 4, net, overlap=0.25)
            sync(dev)
            times.append(time.perf_counter() - t0)
    out["unet3d_sliding_window_256x256x150_s"] = round(statistics.median(times), 4)
    RESULTS["inference"] = out
    print(json.dumps(out), flush=True)


@stage("environment")
def environment(dev):
    import monai
    import torch

    env = {"torch": torch.__version__, "monai": monai.__version__, "device": str(dev),
           "cpus": os.cpu_count()}
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
        env["bf16"] = torch.cuda.is_bf16_supported()
    RESULTS["environment"] = env
    print(json.dumps(env), flush=True)


def summary() -> str:
    lines = ["", "==== GPU check summary ===="]
    env = RESULTS.get("environment", {})
    lines.append(f"device {env.get('gpu', env.get('device'))}, torch {env.get('torch')}, monai {env.get('monai')}")
    for name, st in RESULTS.get("stages", {}).items():
        lines.append(f"stage {name:<18} {'ok' if st['ok'] else 'FAILED ' + st.get('error', '')[:120]} "
                     f"({st['seconds']} s)")
    tp = RESULTS.get("throughput")
    if tp:
        lines.append(f"train step model-only {tp['model_only_slices_per_s']} slices/s, end-to-end "
                     f"{tp['end_to_end_slices_per_s']} slices/s = {tp['end_to_end_fraction']:.1%} "
                     f"(target >= 85 %; batches from {tp['end_to_end_source']}); eager batcher "
                     f"{tp['end_to_end_eager_fraction']:.1%}; with clipping: graphed "
                     f"{tp['end_to_end_graphed_clip_fraction']:.1%}, eager {tp['end_to_end_eager_clip_fraction']:.1%}")
        if "model_only_256_nchw_ms" in tp:
            lines.append(f"probe: 32 x 5 x 256 x 256 step {tp['model_only_256_nchw_ms']} ms bf16, "
                         f"{tp['model_only_256_cl_ms']} ms channels-last")
    for key, real in RESULTS.get("real_loop", {}).items():
        if tp and real:
            what = "after the first 25 steps" if "steady" in key else "whole run"
            lines.append(f"real training loop, {key.split('_')[1]} phantom processes, {what}: {real} slices/s = "
                         f"{real / tp['model_only_clip_slices_per_s']:.1%} of the model-only step with clipping")
    if tp and RESULTS.get("train_2p5d", {}).get("slices_per_s"):
        real = RESULTS["train_2p5d"]["slices_per_s"]
        lines.append(f"real training loop (fresh phantoms swapped in, clipping, schedule) {real} slices/s = "
                     f"{real / tp['model_only_clip_slices_per_s']:.1%} of the model-only step with clipping")
    for key in ("train_2p5d", "train_3d"):
        if key in RESULTS and "steps" in RESULTS[key]:
            r = RESULTS[key]
            lines.append(f"{key}: {r['steps']} steps in {r['seconds']} s, loss {r['loss_first']:.3f} -> "
                         f"{r['loss_last']:.3f}")
    for key, m in RESULTS.get("heldout", {}).items():
        dice = ", ".join(f"{n} {o['dice']:.3f}" for n, o in m["organs"].items())
        lines.append(f"held-out {key}: {dice}; mean HD95 {m['mean_hd95_mm_target_organs']} mm "
                     f"(limit {m['hd95_limit_mm']}); targets "
                     f"{'met' if all(t['met'] for t in m['targets'].values()) and m['hd95_met'] else 'MISSED'}")
    inf = RESULTS.get("inference")
    if inf:
        for k, v in inf.items():
            if isinstance(v, dict):
                lines.append(f"inference {k}: " + ", ".join(f"{a} {b} s" for a, b in v.items()))
            elif k.endswith("_s"):
                lines.append(f"inference {k}: {v} s")
        for kind in ("s", "no_cleanup_s", "network_only_s"):
            a, b = inf.get(f"default_axial_{kind}"), inf.get(f"unet3d_axial_{kind}")
            if a and b:
                lines.append(f"2.5D axial / 3D baseline ({kind}): {a / b:.2f} (target < 0.5)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "medrecon_gpu"))
    ap.add_argument("--train-seconds", type=float, default=210)
    ap.add_argument("--train3d-seconds", type=float, default=SECONDS,
                    help="training time of the 3D baseline when it is trained (the published one: 55 s)")
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--eval", type=int, default=20)
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test of this script")
    ap.add_argument("--init", default=None, help="fine-tune the 2.5D model from this checkpoint")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unet3d-from", default=None,
                    help="load the 3D baseline from this folder instead of training it; an empty or "
                         "missing folder is trained and filled (e.g. .bench/unet3d_baseline)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the throughput stage")
    ap.add_argument("--real-loop-workers", type=lambda v: [int(w) for w in v.split(",") if w], default=[],
                    help="also time the real training loop with these phantom process counts, e.g. 12,6")
    ap.add_argument("--real-loop-seconds", type=float, default=25)
    ap.add_argument("--skip-inference", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    import torch

    from medrecon.models.inference import resolve_device
    from medrecon.train.data import phantom_pair, to_case
    from medrecon.train.segtrain import DEFAULT_ORGANS, phantom_config

    dev = resolve_device(args.device)
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    environment(dev)
    ids = (0, *sorted(DEFAULT_ORGANS))
    n_cases = 0 if args.skip_throughput else 2 if args.tiny else 4
    cases = [to_case(*phantom_pair(1000 + i, phantom_config(args.tiny)), spacing=(1.5, 1.5, 2.5),
                     orientation="LPS", window=(-300.0, 400.0), value_range=(-1.0, 1.0),
                     channel_ids=ids) for i in range(n_cases)]
    if not args.skip_throughput:
        throughput(dev, args, cases)
    del cases
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    if args.real_loop_workers:
        real_loop(dev, args, work)
    if args.train_seconds <= 0 and args.init:  # no training: time the given checkpoint
        from medrecon.models import load_model

        m2 = load_model(args.init)
    else:
        m2 = train_default(dev, args, work, out)
    m3 = train_3d(dev, args, work, out)
    if args.eval:
        evaluate_models(dev, args, work, out, [("default", m2, "axial"), ("unet3d", m3, "axial"),
                                               ("default", m2, "all")])
    if not args.skip_inference:
        inference_timing(dev, args, [("default", m2, "axial"), ("default", m2, "all"),
                                     ("unet3d", m3, "axial")])
    RESULTS["total_seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "gpu_results.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    print(summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
