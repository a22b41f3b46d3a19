"""Benchmark: loading an uncompressed CT DICOM series, medrecon against other loaders.

Writes (in a temporary folder, removed afterwards) a 300-slice 512x512 int16 CT
series, explicit VR little endian, shuffled file names, then times side by side
in one process (loaders interleaved, best of ``--repeat`` runs, warm page cache):

* medrecon ``load_dicom`` (float32 HU volume)
* SimpleITK ``ImageSeriesReader`` (GDCM file-name sorting + read)
* MONAI ``LoadImage`` with its default reader for a folder
* a plain pydicom loop (read, sort by position, stack, rescale to float32)
* dcm2niix (``-z n``, writes an uncompressed NIfTI), when on PATH

Peak extra memory is measured separately, one loader per fresh interpreter (so
an allocator warmed by earlier runs cannot hide it): process RSS sampled every
2 ms by a thread (psutil) during one call, minus RSS
before the call (libraries already imported); for medrecon also tracemalloc's
peak in this process. The last lines print the ratios the targets are about.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_load.py [--slices 300] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np


def write_series(folder: Path, slices: int, size: int = 512) -> None:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.45 * size) ** 2
    base = np.where(body, 1064, 24).astype(np.int16)  # soft tissue 40 HU in air
    series_uid, study_uid = generate_uid(), generate_uid()
    order = rng.permutation(slices)
    for k in range(slices):
        ds = Dataset()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "BENCH", "Bench^Series"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = study_uid, series_uid, 1
        ds.FrameOfReferenceUID = study_uid
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [-250.0, -250.0, -600.0 + 1.25 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.9765625, 0.9765625]
        ds.SliceThickness = 1.25
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        pixels = base + rng.integers(-20, 20, size=base.shape, dtype=np.int16)
        ds.PixelData = pixels.tobytes()
        pydicom.dcmwrite(folder / f"IM{order[k]:05d}", ds, enforce_file_format=True)


# --- loaders: each returns an array holding the volume ------------------------------------------

def load_medrecon(folder: Path):
    from medrecon.io.dicom import load_dicom

    return load_dicom(folder).array


def load_sitk(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayViewFromImage(reader.Execute())


def load_monai(folder: Path):
    from monai.transforms import LoadImage

    return LoadImage(image_only=True)(str(folder))


def load_pydicom(folder: Path):
    import pydicom

    datasets = [pydicom.dcmread(p) for p in folder.iterdir()]
    datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    out = np.stack([d.pixel_array for d in datasets]).astype(np.float32)
    out *= float(datasets[0].RescaleSlope)
    out += float(datasets[0].RescaleIntercept)
    return out


def load_dcm2niix(folder: Path):
    out = Path(tempfile.mkdtemp(prefix="bench_dcm2niix_"))
    try:
        subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-o", str(out), "-f", "vol", str(folder)],
                       check=True, capture_output=True)
        return next(out.glob("*.nii"))
    finally:
        shutil.rmtree(out, ignore_errors=True)


def peak_rss_extra(fn, folder: Path) -> float:
    """Peak RSS increase in bytes while ``fn(folder)`` runs (sampled every 2 ms)."""
    import psutil

    proc = psutil.Process()
    gc.collect()
    before = proc.memory_info().rss
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.002)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        result = fn(folder)
        peak = max(peak, proc.memory_info().rss)
    finally:
        done.set()
        thread.join()
    del result
    return float(peak - before)


def memory_in_fresh_process(name: str, folder: Path) -> float:
    """Run one loader once in a new interpreter (fresh allocator) and return its peak extra RSS."""
    import sys

    out = subprocess.run([sys.executable, __file__, "--memory-of", name, "--folder", str(folder)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _memory_child(name: str, folder: Path) -> None:
    import pydicom  # noqa: F401 - imports are not the loader's memory
    import SimpleITK  # noqa: F401
    from monai.transforms import LoadImage  # noqa: F401

    import medrecon.io.dicom  # noqa: F401

    print(peak_rss_extra(LOADERS[name], folder))


LOADERS = {"medrecon": load_medrecon, "SimpleITK": load_sitk, "MONAI LoadImage": load_monai,
           "pydicom loop": load_pydicom}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        _memory_child(args.memory_of, args.folder)
        return
    loaders = dict(LOADERS)
    if shutil.which("dcm2niix"):
        loaders["dcm2niix (writes .nii)"] = load_dcm2niix
    tmp = Path(tempfile.mkdtemp(prefix="bench_dicom_"))
    try:
        t0 = time.perf_counter()
        write_series(tmp, args.slices)
        print(f"wrote {args.slices} slices 512x512 int16 in {time.perf_counter() - t0:.1f} s; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        for p in tmp.iterdir():  # warm the page cache for everybody
            p.read_bytes()
        for fn in loaders.values():  # warm imports
            fn(tmp)
        times: dict[str, list[float]] = {name: [] for name in loaders}
        for _ in range(args.repeat):
            for name, fn in loaders.items():
                gc.collect()
                t = time.perf_counter()
                result = fn(tmp)
                times[name].append(time.perf_counter() - t)
                del result
        volume_bytes = args.slices * 512 * 512 * 4
        print(f"\n{'loader':28s} {'best (s)':>9s} {'median (s)':>11s} {'peak extra RSS':>15s}")
        print("-" * 66)
        best = {}
        for name in loaders:
            best[name] = min(times[name])
            rss = memory_in_fresh_process(name, tmp) if name in LOADERS else float("nan")
            print(f"{name:28s} {best[name]:9.3f} {float(np.median(times[name])):11.3f} "
                  f"{rss / volume_bytes:12.2f} x vol")
        gc.collect()
        tracemalloc.start()
        vol = load_medrecon(tmp)
        _, traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert vol.shape == (512, 512, args.slices) and vol.dtype == np.float32
        del vol
        ours_rss = memory_in_fresh_process("medrecon", tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nfloat32 volume: {volume_bytes / 2**20:.0f} MiB; medrecon peak extra: "
          f"tracemalloc {traced / volume_bytes:.2f} x, RSS {ours_rss / volume_bytes:.2f} x")
    print(f"ratio medrecon / SimpleITK = {best['medrecon'] / best['SimpleITK']:.2f} (target <= 0.6)")
    print(f"ratio medrecon / MONAI = {best['medrecon'] / best['MONAI LoadImage']:.2f} (target <= 0.25)")
    print(f"peak extra memory / float32 volume = {max(traced, ours_rss) / volume_bytes:.2f} "
          "(target < 1.5)")


if __name__ == "__main__":
    main()
