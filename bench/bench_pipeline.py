"""Benchmark: ``medrecon reconstruct`` end to end, and batch throughput.

1. A 512x512x300 phantom CT (0.8 x 0.8 x 1 mm) is written as a DICOM series in
   a temporary folder (not timed).
2. ``reconstruct`` from that DICOM folder to STL files + report, each run in a
   fresh spawned process so that its peak RSS (``ru_maxrss``, imports included)
   is its own: with the default model (when the model file is there) and with
   the bone preset. The report's per-stage timings give the breakdown; the
   difference between the total and the sum of the stages is the pipeline's
   own overhead.
3. Batch throughput on CPU-bound work: ``medrecon batch`` (a subprocess, as a
   user runs it) over ``--studies`` small phantoms with the bone preset, with
   ``--workers 1`` and ``--workers 2``.

Targets (issue 5): model < 30 s and < 4 GB; bone preset < 10 s; 2 workers >= 1.7x
one worker. Ratios are printed last.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_pipeline.py [--slices 300] [--studies 8]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(source: str, outdir: str, kwargs: dict, queue) -> None:
    try:
        _reconstruct_child(source, outdir, kwargs, queue)
    except BaseException as exc:
        queue.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def _reconstruct_child(source: str, outdir: str, kwargs: dict, queue) -> None:
    from medrecon.pipeline import ReconstructConfig, reconstruct

    t0 = time.perf_counter()
    result = reconstruct(source, outdir, config=ReconstructConfig(**kwargs))
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss_mb = usage.ru_maxrss / 1024
    organs = [(o["name"], round(o["mesh_volume_ml"], 1), o["faces"], o["watertight"])
              for o in result.report["organs"]]
    queue.put({"wall_s": wall, "peak_rss_mb": rss_mb, "cpu_s": usage.ru_utime + usage.ru_stime, "timings": result.report["timings_s"],
               "organs": organs, "files": len(result.mesh_files)})


def run_reconstruct(source: Path, outdir: Path, **kwargs) -> dict:
    """Run reconstruct in a fresh spawned interpreter; returns timings and peak RSS."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(str(source), str(outdir), kwargs, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"reconstruct failed in the child process: {result['error']}")
    return result


def _print_run(name: str, res: dict) -> None:
    t = dict(res["timings"])
    total = t.pop("total")
    stages = sum(t.values())
    print(f"\n[{name}] total {total:.2f} s (wall in child {res['wall_s']:.2f} s), "
          f"CPU time of the process {res['cpu_s']:.2f} s (imports included), "
          f"peak RSS {res['peak_rss_mb']:.0f} MB, {res['files']} mesh files, load {os.getloadavg()[0]:.1f}")
    for stage, sec in t.items():
        print(f"  {stage:<14} {sec:7.2f} s  {100 * sec / total:5.1f} %")
    print(f"  {'sum of stages':<14} {stages:7.2f} s; pipeline overhead {total - stages:.2f} s")
    for organ in res["organs"][:12]:
        print(f"  organ {organ}")


def batch_wall(inputs: Path, out: Path, workers: int) -> float:
    """Wall time of ``medrecon batch`` (bone preset, no preview) with ``workers``; prints CPU time."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "medrecon", "batch", str(inputs), "-o", str(out), "--preset", "bone",
           "--no-preview", "--quiet", "--workers", str(workers)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(f"  batch --workers {workers}: wall {wall:.1f} s, CPU {cpu:.1f} s, load {os.getloadavg()[0]:.1f}")
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--matrix", type=int, default=512)
    p.add_argument("--slices", type=int, default=300)
    p.add_argument("--studies", type=int, default=8, help="phantoms in the batch throughput test")
    p.add_argument("--study-matrix", type=int, default=384)
    p.add_argument("--study-slices", type=int, default=128)
    p.add_argument("--skip-preset", action="store_true", help="only the model run and the batch test")
    p.add_argument("--skip-model", action="store_true")
    p.add_argument("--workdir", type=Path, help="keep the generated studies here and reuse them on reruns")
    args = p.parse_args()

    from medrecon.io import save
    from medrecon.io.dicom_write import write_dicom_series
    from medrecon.phantom import PhantomConfig, make_phantom

    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, load average {os.getloadavg()}")
    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    tmp.mkdir(parents=True, exist_ok=True)
    ratios: list[str] = []
    try:
        t0 = time.perf_counter()
        if not (tmp / "ct").is_dir():
            vol, _ = make_phantom(0, config=PhantomConfig(
                matrix=args.matrix, slices=args.slices, spacing_xy=(0.8, 0.8), slice_thickness=(1.0, 1.0),
                orientation="LPS"))
            write_dicom_series(vol, tmp / "ct")
            del vol
        print(f"phantom {args.matrix}x{args.matrix}x{args.slices} DICOM ready in "
              f"{time.perf_counter() - t0:.1f} s (not timed below)")

        if not args.skip_model:
            from medrecon.models.checkpoint import resolve_model_path

            have_model = resolve_model_path("default").exists()
            if not have_model:
                print("default model not available; skipping the model run")
            if have_model:
                res = run_reconstruct(tmp / "ct", tmp / "out_model", preview=False)
                _print_run("default model", res)
                ratios.append(f"model: {res['timings']['total']:.1f} s (target < 30), "
                              f"peak RSS {res['peak_rss_mb'] / 1024:.2f} GB (target < 4)")
        if not args.skip_preset:
            res = run_reconstruct(tmp / "ct", tmp / "out_bone", method="preset", preset="bone", preview=False)
            _print_run("bone preset", res)
            ratios.append(f"bone preset: {res['timings']['total']:.1f} s (target < 10), "
                          f"peak RSS {res['peak_rss_mb'] / 1024:.2f} GB")
            res = run_reconstruct(tmp / "ct", tmp / "out_bone_prev", method="preset", preset="bone", preview=True)
            ratios.append(f"bone preset with preview.png: {res['timings']['total']:.1f} s "
                          f"(preview {res['timings'].get('preview', 0):.1f} s)")

        studies = tmp / "studies"
        studies.mkdir(exist_ok=True)
        for seed in range(args.studies):
            if (studies / f"study{seed:02d}.nii.gz").exists():
                continue
            v, _ = make_phantom(seed, config=PhantomConfig(matrix=args.study_matrix, slices=args.study_slices,
                                                           spacing_xy=(1.0, 1.0), slice_thickness=(2.0, 2.0)))
            save(v, studies / f"study{seed:02d}.nii.gz")
        one = batch_wall(studies, tmp / "b1", 1)
        two = batch_wall(studies, tmp / "b2", 2)
        summary = json.loads((tmp / "b2" / "summary.json").read_text())
        print(f"\n[batch] {args.studies} studies ({args.study_matrix}^2 x {args.study_slices}, bone preset): "
              f"1 worker {one:.1f} s, 2 workers {two:.1f} s; {summary['counts']}")
        ratios.append(f"batch throughput 2 workers / 1 worker: {one / two:.2f}x (target >= 1.7)")
    finally:
        if args.workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload average after: {os.getloadavg()}")
    for line in ratios:
        print(line)


if __name__ == "__main__":
    main()
