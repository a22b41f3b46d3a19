"""Write a phantom study to disk: NIfTI image, DICOM series, labels and their names."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from medrecon.atomic import write_text
from medrecon.errors import OutputError
from medrecon.io.formats import DICOM
from medrecon.phantom.config import PhantomConfig
from medrecon.phantom.generate import make_phantom
from medrecon.progress import ProgressFn, report, scaled

FORMATS = ("both", "dicom", "nifti")
_DICOM_PREFIX = "CT"


def write_phantom(
    outdir: str | os.PathLike,
    *,
    seed: int = 0,
    fmt: str = "both",
    config: PhantomConfig | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Make the phantom of ``seed`` and write it under ``outdir``.

    Files: ``labels.nii.gz`` + ``labels.json`` (the ground truth, always),
    ``image.nii.gz`` (int16 HU; ``fmt`` "nifti" or "both"), ``dicom/`` (a CT
    series, one file per slice; ``fmt`` "dicom" or "both") and
    ``phantom.json`` (seed, settings, geometry and organ volumes).

    Parameters
    ----------
    outdir : path-like
        Output folder, created if needed. A ``dicom/`` folder left by an
        earlier run is replaced as a whole, so series never mix; in a folder
        that holds an earlier phantom (``phantom.json``), the image format not
        written this time is removed so that image and labels always match.
    seed : int
        Phantom seed (see :func:`make_phantom`).
    fmt : {"both", "dicom", "nifti"}
        Which image formats to write.
    config : PhantomConfig, optional
        Generator settings (default ``PhantomConfig()``).
    progress : ProgressFn, optional
        Progress callback.

    Returns
    -------
    Path
        ``outdir``.
    """
    from medrecon.io import save

    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    cfg = config if config is not None else PhantomConfig()
    out = Path(outdir)
    _check_dicom_folder(out / "dicom")
    report(progress, "make phantom", 0.0)
    volume, labels = make_phantom(seed, config=cfg)
    report(progress, "make phantom", 0.2)
    save(labels, out / "labels.nii.gz")
    if fmt in ("nifti", "both"):
        save(volume.replace(array=np.asarray(volume.array).astype(np.int16)), out / "image.nii.gz")
    report(progress, "write NIfTI", 0.3)
    if fmt in ("dicom", "both"):
        _write_dicom(volume, out / "dicom", seed=seed, cfg=cfg, progress=scaled(progress, 0.3, 1.0))
    if (out / "phantom.json").is_file():  # an earlier phantom: drop its image in the other format
        if fmt == "dicom":
            (out / "image.nii.gz").unlink(missing_ok=True)
        elif fmt == "nifti" and (out / "dicom").is_dir():
            shutil.rmtree(out / "dicom")
    write_text(out / "phantom.json", json.dumps(_summary(volume, labels, seed, cfg), indent=1) + "\n")
    report(progress, "done", 1.0)
    return out


def _check_dicom_folder(folder: Path) -> None:
    """Refuse to replace a ``dicom/`` folder that holds anything but our slice files."""
    if not folder.exists():
        return
    foreign = [] if not folder.is_dir() else [
        p.name for p in folder.iterdir() if not (p.name.startswith(_DICOM_PREFIX) and DICOM.matches(p.name))
    ]
    if not folder.is_dir() or foreign:
        raise OutputError(
            f"{folder} exists and holds files medrecon did not write ({', '.join(foreign[:3]) or folder.name}); "
            "choose another output folder or remove it"
        )


def _write_dicom(volume, folder: Path, *, seed: int, cfg: PhantomConfig, progress) -> None:
    from medrecon.io.dicom_write import write_dicom_series

    folder.parent.mkdir(parents=True, exist_ok=True)
    # Write the whole series beside the target, then swap it in.
    staging = Path(tempfile.mkdtemp(prefix=".dicom.", dir=folder.parent))
    try:
        write_dicom_series(
            volume,
            staging,
            patient_name="PHANTOM^ABDOMEN",
            patient_id=f"PHANTOM{seed:05d}",
            study_description="medrecon synthetic abdominal CT (no patient data)",
            description=volume.description,
            uid_seed=f"medrecon-phantom|{seed}|{cfg!r}",
            prefix=_DICOM_PREFIX,
            progress=progress,
        )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _summary(volume, labels, seed: int, cfg: PhantomConfig) -> dict:
    counts = np.bincount(np.asarray(labels.array).ravel(), minlength=256)
    ml = labels.voxel_volume_mm3 / 1000.0
    return {
        "generator": "medrecon.phantom.make_phantom",
        "seed": int(seed),
        "config": dataclasses.asdict(cfg),
        "synthetic": True,
        "shape": list(volume.shape),
        "spacing_mm": [round(float(s), 4) for s in volume.spacing],
        "orientation": volume.orientation,
        "affine_lps": np.round(volume.affine, 6).tolist(),
        **{k: v for k, v in volume.meta.items()},
        "organs": [
            {"label": int(i), "name": labels.name_of(int(i)), "volume_ml": round(float(counts[i]) * ml, 2)}
            for i in labels.labels
        ],
    }
