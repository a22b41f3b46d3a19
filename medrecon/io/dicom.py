"""DICOM series to :class:`~medrecon.volume.Volume`, with correct geometry.

Reads a folder (recursively), a single file or a DICOMDIR. Two passes: headers
without pixels (:mod:`medrecon.io.dicom_scan`), grouping into series and choosing
one (:mod:`medrecon.io.dicom_series`), slice geometry from ImagePositionPatient
and ImageOrientationPatient (:mod:`medrecon.io.dicom_geometry`), then pixels
straight into a float32 array with the modality LUT applied
(:mod:`medrecon.io.dicom_pixels`), or, by :func:`load_dicom_stored`, the stored
integers with the LUT beside them (:class:`~medrecon.io.stored.StoredVolume`).

The result is in medrecon's convention: LPS millimetres, array (i, j, k) with i
along a row (column index), j down a column (row index), k across slices in
increasing position along ``row x column``. CT values are Hounsfield units.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from medrecon.errors import DicomError, GeometryError
from medrecon.io.dicom_geometry import StackPlan, plan_stack, resample_even
from medrecon.io.dicom_header import FrameHeader, looks_like_dicom
from medrecon.io.dicom_pixels import NotStored, read_frames
from medrecon.io.dicom_scan import scan
from medrecon.io.dicom_series import AUTO_RULE, SeriesInfo, group_series, select_series
from medrecon.io.stored import StoredVolume
from medrecon.progress import ProgressFn, report, scaled
from medrecon.volume import Volume

__all__ = [
    "AUTO_RULE", "SeriesInfo", "list_series", "load_dicom", "load_dicom_stored", "looks_like_dicom", "plan_series",
    "read_modality",
]


def read_modality(path: str | os.PathLike) -> str | None:
    """Return the upper-case Modality of one DICOM file (``"CT"``, ``"SEG"``), or None. Never raises.

    None for a file that is not DICOM, has no Modality, or cannot be parsed; the
    header is read with the bounded reader (:func:`medrecon.io.dicom_file.read_dataset`).
    """
    from medrecon.io.dicom_file import read_dataset

    if not looks_like_dicom(path):
        return None
    try:
        ds = read_dataset(path, stop_before_pixels=True, specific_tags=["Modality"])
        return str(ds.get("Modality", "")).strip().upper() or None
    except Exception:  # noqa: BLE001 - not DICOM (or a corrupt value): the caller tries other readers
        return None


def list_series(path: str | os.PathLike) -> list[SeriesInfo]:
    """List the series (and parts of split series) under ``path``, headers only.

    Parameters
    ----------
    path : path-like
        DICOM folder (recursive), file or DICOMDIR.

    Returns
    -------
    list of SeriesInfo
        Sorted by series number; :attr:`SeriesInfo.volume_like` tells which can load.

    Raises
    ------
    InputError
        If no DICOM file is found.

    Warns
    -----
    UserWarning
        When files that look like DICOM cannot be read and are skipped.
    """
    return group_series(scan(path).frames)


def plan_series(info: SeriesInfo) -> StackPlan:
    """Work out the output grid (shape, affine) of one series from its headers only."""
    if info.reason and not info.reason.startswith("only "):
        raise DicomError(f"series {info.key} cannot be loaded as a volume: {info.reason}")
    return plan_stack(info.frames)


def _pick(path: Path, series: str | int | None) -> tuple[SeriesInfo, dict, list[str]]:
    found = scan(path)
    infos = group_series(found.frames)
    images = [s for s in infos if s.reason.startswith("only ") or s.volume_like]
    if series is None and not any(s.volume_like for s in infos) and len(images) == 1:
        # a single slice (or two) given on purpose: load it as a thin volume
        info, choice = images[0], {"rule": "only image series", "key": images[0].key}
    else:
        info, choice = select_series(infos, series, source=str(path))
    # what was chosen and what else is there, in words (the CLI says it in one line)
    choice.update(label=info.label(), others=[s.label() for s in infos if s is not info])
    return info, choice, found.skipped


def _stored(frames: list[FrameHeader]) -> dict:
    """``stored_dtype`` and ``scaling`` (slope, intercept) when every frame shares them."""
    kinds = {(f.signed, f.bits_allocated, f.samples, f.slope, f.intercept) for f in frames}
    if len(kinds) != 1:
        return {}
    signed, bits, samples, slope, intercept = kinds.pop()
    if samples != 1 or bits not in (8, 16, 32):
        return {}
    return {"stored_dtype": f"{'int' if signed else 'uint'}{bits}", "scaling": (slope, intercept)}


def _check_duplicates(plan: StackPlan, read) -> None:
    for kept, dropped in plan.duplicates:
        a, b = read([kept]), read([dropped])
        if not np.array_equal(a, b):
            raise DicomError(
                f"two different slices at the same position ({kept.path}, {dropped.path}): "
                "the series mixes acquisitions (echoes, phases or time points); select the "
                "files of one acquisition into their own folder"
            )


def load_dicom(
    path: str | os.PathLike,
    *,
    series: str | int | None = None,
    progress: ProgressFn | None = None,
) -> Volume:
    """Load one DICOM series as a volume in LPS millimetres.

    Parameters
    ----------
    path : path-like
        Folder (searched recursively), single file or DICOMDIR.
    series : str or int, optional
        SeriesInstanceUID, series number, ``UID:part`` / ``number:part`` for a
        series split by size or orientation, or ``"auto"`` (rule:
        :data:`AUTO_RULE`). Needed when several volume-like series are present.
    progress : ProgressFn, optional
        Progress callback.

    Returns
    -------
    Volume
        ``array`` (I, J, K) float32 (Hounsfield units for CT, ``units="HU"``),
        affine in LPS mm. ``meta`` holds ``series_choice``, ``n_files``,
        ``slice_thickness``, ``gantry_tilt_deg`` and ``geometry_warnings`` when
        the slices had to be resampled (tilt, uneven gaps, duplicates), and
        ``stored_dtype`` / ``scaling`` (RescaleSlope, RescaleIntercept) when all
        slices share them (NIfTI output then keeps the stored integers).

    Raises
    ------
    InputError
        No DICOM files under ``path``.
    SeriesSelectionError
        Several volume-like series and ``series`` not given (the message lists them).
    DicomError
        Corrupt or truncated files, conflicting duplicates, absurd gaps.
    ResourceLimitError
        Declared size over ``MEDRECON_MAX_VOXELS`` / ``MEDRECON_MAX_BYTES``.
    MissingDependencyError
        A codec for the series' compression is missing (extra ``dicom-codecs``).
    """
    volume, _scaling = _load(Path(path), series, progress, keep_stored=False)
    return volume


def load_dicom_stored(
    path: str | os.PathLike,
    *,
    series: str | int | None = None,
    progress: ProgressFn | None = None,
) -> StoredVolume | Volume:
    """Load one DICOM series keeping the integers its files store, where it can.

    What ``medrecon convert`` writes to NIfTI as they are: the same series, checks,
    warnings and errors (the same parameters) as :func:`load_dicom`, without the
    float32 volume.

    Returns
    -------
    StoredVolume or Volume
        A :class:`~medrecon.io.stored.StoredVolume` (its :meth:`~medrecon.io.stored.StoredVolume.values`
        is :func:`load_dicom`'s volume) when every slice stores one integer type
        with one RescaleSlope and RescaleIntercept and no slice is resampled (gantry
        tilt, uneven gaps); otherwise :func:`load_dicom`'s volume.
    """
    volume, scaling = _load(Path(path), series, progress, keep_stored=True)
    if scaling is None:
        return volume
    return StoredVolume(raw=volume, slope=scaling[0], intercept=scaling[1],
                        units="HU" if volume.modality == "CT" else "")


def _load(p: Path, series: str | int | None, progress: ProgressFn | None, *,
          keep_stored: bool) -> tuple[Volume, tuple[float, float] | None]:
    """Load the volume of values, or of the stored integers and their (slope, intercept)."""
    report(progress, "reading DICOM headers", 0.0)
    info, choice, skipped = _pick(p, series)
    plan = plan_series(info)
    what = f"DICOM series {info.key or p}"

    def read(frames: list[FrameHeader]) -> np.ndarray:
        return read_frames(frames, what=what)

    _check_duplicates(plan, read)
    stored = _stored(plan.frames)
    keep = keep_stored and bool(stored) and not plan.resample_even and not plan.tilted
    stack = None
    if keep:
        try:
            stack = read_frames(plan.frames, what=what, progress=scaled(progress, 0.05, 0.9),
                                dtype=stored["stored_dtype"])
        except NotStored:  # a decoder's values outside the declared type: read them as values
            keep = False
    if stack is None:
        stack = read_frames(plan.frames, what=what, progress=scaled(progress, 0.05, 0.9))
    if plan.resample_even:
        stack = resample_even(stack, plan.positions, plan.target_positions)
    first = plan.frames[0]
    modality = first.modality
    meta = {
        "series_choice": choice,
        "series_number": first.series_number,
        "n_files": len({f.path for f in plan.frames}),
        "slice_thickness": first.thickness,
        "transfer_syntax": first.transfer_syntax,
        "sop_class": first.sop_class,
        **({} if keep else stored),
    }
    if skipped:
        meta["skipped_files"] = list(skipped)
    if first.tilt:
        meta["gantry_detector_tilt"] = first.tilt
    for note in plan.warnings:
        warnings.warn(f"{what}: {note}", stacklevel=3)  # the caller of load_dicom(_stored)
    if plan.warnings:
        meta["geometry_warnings"] = list(plan.warnings)
    try:
        volume = Volume(
            array=stack.transpose(2, 1, 0),
            affine=plan.source_affine,
            modality=modality,
            units="HU" if modality == "CT" and not keep else "",  # stored integers are not HU yet
            series_uid=first.series_uid,
            description=first.description,
            source=str(p),
            meta=meta,
        )
    except GeometryError as exc:  # the header checks should leave none; name the files if one does
        raise DicomError(f"{first.path} ({what}): {exc}") from exc
    if plan.tilted:
        meta["gantry_tilt_deg"] = round(plan.tilt_deg, 4)
        volume = volume.resample_to(plan.affine, plan.shape).replace(meta=meta)
    report(progress, "reading DICOM", 1.0)
    return volume, stored["scaling"] if keep else None
