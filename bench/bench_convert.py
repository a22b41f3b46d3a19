"""Benchmark: ``medrecon convert`` against dcm2niix, whole processes, paired in one run.

Writes (in a temporary folder, removed afterwards) the 300-slice 512x512 int16
CT series of ``bench_load.py`` (explicit VR little endian, RescaleIntercept
-1024, shuffled file names), warms the page cache, then runs alternately
``medrecon convert SERIES out.nii`` and ``dcm2niix -z n -b n SERIES`` as new
processes (``--repeat`` times each), so that both meet the same machine load.
Each time is the wall clock of a whole process: interpreter start, imports,
reading, writing (its CPU time, user + system, is printed too: on a busy
machine it varies less than the wall clock). Both start with no output file
(deleting the last one is not timed), and Python finds its modules compiled
as in an installed package: the warm-up writes their bytecode to a temporary
``PYTHONPYCACHEPREFIX`` even where ``PYTHONDONTWRITEBYTECODE`` is set.

The outputs are checked against each other with nibabel (an independent
reader): the same grid (shape, voxel size, affine after reorienting both to
RAS+, as dcm2niix stores rows bottom-up), the same values, and the same header
fields that both write (datatype, bitpix, scl_slope, scl_inter, xyzt_units,
vox_offset, qform_code, sform_code). The last line prints the ratio of the
medians; the target is <= 1.5.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_convert.py [--slices 300] [--repeat 7]``
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_load import write_series

#: Header fields both writers set; they must agree.
SHARED_FIELDS = ("datatype", "bitpix", "scl_slope", "scl_inter", "xyzt_units", "vox_offset",
                 "qform_code", "sform_code")


def dcm2niix_command() -> str:
    """dcm2niix beside this interpreter (the PyPI package) or on PATH."""
    beside = Path(sys.executable).with_name("dcm2niix")
    found = str(beside) if beside.exists() else shutil.which("dcm2niix")
    if not found:
        raise SystemExit("dcm2niix not found: pip install dcm2niix")
    return found


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one process running ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def run_medrecon(series: Path, out: Path, pycache: Path) -> tuple[float, float]:
    out.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return timed([sys.executable, "-m", "medrecon", "convert", str(series), str(out)], env)


def run_dcm2niix(exe: str, series: Path, folder: Path) -> tuple[float, float]:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return timed([exe, "-z", "n", "-b", "n", "-o", str(folder), "-f", "vol", str(series)])


def compare(ours_path: Path, theirs_path: Path) -> list[str]:
    """Differences between the two files (empty when they agree)."""
    import nibabel as nib

    problems = []
    # the raw headers: nibabel's loaded images move scl_slope/scl_inter into the data proxy
    with open(ours_path, "rb") as a, open(theirs_path, "rb") as b:
        raw = nib.Nifti1Header.from_fileobj(a), nib.Nifti1Header.from_fileobj(b)
    for name in SHARED_FIELDS:
        if not np.array_equal(raw[0][name], raw[1][name]):
            problems.append(f"header {name}: medrecon {raw[0][name]} vs dcm2niix {raw[1][name]}")
    ours, theirs = nib.load(ours_path), nib.load(theirs_path)
    ours, theirs = nib.as_closest_canonical(ours), nib.as_closest_canonical(theirs)
    if ours.shape != theirs.shape:
        problems.append(f"shape: medrecon {ours.shape} vs dcm2niix {theirs.shape}")
    elif not np.allclose(ours.affine, theirs.affine, atol=1e-4):
        problems.append(f"affine:\n{ours.affine}\nvs\n{theirs.affine}")
    elif not np.array_equal(ours.get_fdata(), theirs.get_fdata()):
        problems.append("voxel values differ")
    if ours.get_data_dtype() != theirs.get_data_dtype():
        problems.append(f"stored type: medrecon {ours.get_data_dtype()} vs dcm2niix {theirs.get_data_dtype()}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    exe = dcm2niix_command()
    tmp = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        series = tmp / "series"
        series.mkdir()
        write_series(series, args.slices)
        for p in series.iterdir():  # warm the page cache for both
            p.read_bytes()
        ours, theirs = tmp / "medrecon.nii", tmp / "dcm2niix"
        pycache = tmp / "pycache"
        run_medrecon(series, ours, pycache)  # warm-up: Python's bytecode cache, the shared libraries
        run_dcm2niix(exe, series, theirs)
        runs: dict[str, list[tuple[float, float]]] = {"medrecon convert": [], "dcm2niix": []}
        for _ in range(args.repeat):
            runs["medrecon convert"].append(run_medrecon(series, ours, pycache))
            runs["dcm2niix"].append(run_dcm2niix(exe, series, theirs))
        problems = compare(ours, next(theirs.glob("*.nii")))
        size_ours, size_theirs = ours.stat().st_size, next(theirs.glob("*.nii")).stat().st_size
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.slices} slices 512x512 int16 -> .nii; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs; {args.repeat} paired runs")
    times = {name: [wall for wall, _cpu in values] for name, values in runs.items()}
    print(f"\n{'whole process':20s} {'best (s)':>9s} {'median (s)':>11s} {'worst (s)':>10s} "
          f"{'CPU median (s)':>15s}")
    print("-" * 69)
    for name, values in times.items():
        cpu = float(np.median([c for _wall, c in runs[name]]))
        print(f"{name:20s} {min(values):9.3f} {float(np.median(values)):11.3f} {max(values):10.3f} "
              f"{cpu:15.3f}")
    print(f"\nfile size: medrecon {size_ours / 1e6:.1f} MB, dcm2niix {size_theirs / 1e6:.1f} MB")
    if problems:
        print("OUTPUTS DIFFER:\n  " + "\n  ".join(problems))
        raise SystemExit(1)
    print("outputs agree: grid, values, " + ", ".join(SHARED_FIELDS))
    ratio = np.median(times["medrecon convert"]) / np.median(times["dcm2niix"])
    best = min(times["medrecon convert"]) / min(times["dcm2niix"])
    print(f"ratio medrecon / dcm2niix = {ratio:.2f} median, {best:.2f} best (target <= 1.5)")


if __name__ == "__main__":
    main()
