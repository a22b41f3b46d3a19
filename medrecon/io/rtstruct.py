"""Reading an RT Structure Set (RTSTRUCT): its ROI table and closed planar contours.

Every value is checked where it is read (pydicom converts lazily, on access): a
corrupt or inconsistent file is a :class:`~medrecon.errors.DicomError` or
:class:`~medrecon.errors.GeometryError` naming the ROI and contour, never a raw
exception. Rasterising the contours onto an image grid is
:func:`medrecon.sources.imported.read_rtstruct`.
"""

from __future__ import annotations

import os

import numpy as np

from medrecon.errors import DicomError, GeometryError, InputError
from medrecon.io.dicom_file import describe_error
from medrecon.text import sanitize_text


def read_structure_set(path: str | os.PathLike) -> tuple[dict[int, str], list[tuple[int, list[np.ndarray], int]]]:
    """Read and validate an RTSTRUCT file's ROIs and contours.

    Returns
    -------
    (dict, list)
        ``{ROI number: unique sanitised name}`` and ``[(ROI number, [(N, 3) LPS mm
        closed planar contours], number of other contours)]``.

    Raises
    ------
    InputError
        Not an RTSTRUCT, or it holds no contours.
    DicomError, GeometryError
        Corrupt or inconsistent values (the message names the field).
    """
    from medrecon.io.dicom_file import read_dataset

    ds = read_dataset(path)
    modality = _rt_value(ds, "Modality", path)
    if str(modality or "").upper() != "RTSTRUCT":
        raise InputError(f"{path} is not an RTSTRUCT (Modality {sanitize_text(str(modality or '?'))[:40]})")
    return _structure_set(ds, path)


def _rt_value(item, keyword: str, path, where: str = ""):
    """``item.keyword`` or None; a value pydicom cannot convert is a DicomError naming it."""
    try:
        return item.get(keyword)
    except Exception as exc:  # noqa: BLE001 - pydicom converts values lazily, on access
        raise DicomError(f"{path}: {keyword}{where} cannot be read ({describe_error(exc)}); "
                         "the structure set is corrupt: re-export it") from exc


def _rt_items(item, keyword: str, path) -> list:
    from pydicom.sequence import Sequence

    value = _rt_value(item, keyword, path)
    if value is None:
        return []
    if not isinstance(value, Sequence):
        raise DicomError(f"{path}: {keyword} is not a sequence; the structure set is corrupt: re-export it")
    return list(value)


def _rt_int(item, keyword: str, path, where: str) -> int:
    value = _rt_value(item, keyword, path, where)
    try:
        number = int(value)
        ok = number == float(value) and 0 <= number < 2**31
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        shown = "missing" if value in (None, "") else f"{sanitize_text(str(value))[:40]!r}"
        raise DicomError(f"{path}: {keyword}{where} is {shown}, expected a non-negative integer; "
                         "the structure set is corrupt: re-export it")
    return number


#: Largest |coordinate| (mm) accepted in ContourData: 1 km, far beyond any patient.
_MAX_MM = 1e6


def _structure_set(ds, path) -> tuple[dict[int, str], list[tuple[int, list[np.ndarray], int]]]:
    """Validate the ROI table and contours.

    Returns ``({ROI number: unique name}, [(ROI number, [(N, 3) LPS mm contours], n_not_closed)])``.
    """
    roi_names: dict[int, str] = {}
    for n, item in enumerate(_rt_items(ds, "StructureSetROISequence", path)):
        number = _rt_int(item, "ROINumber", path, f" of StructureSetROISequence item {n + 1}")
        if number in roi_names:
            raise DicomError(f"{path}: ROI number {number} is declared twice in StructureSetROISequence; "
                             "the structure set is corrupt: re-export it")
        name = sanitize_text(str(_rt_value(item, "ROIName", path) or "")) or f"roi_{number}"
        if name in roi_names.values():
            name = f"{name}_{number}"  # two ROIs of one name stay two structures
        roi_names[number] = name
    rois = []
    for n, item in enumerate(_rt_items(ds, "ROIContourSequence", path)):
        number = _rt_int(item, "ReferencedROINumber", path, f" of ROIContourSequence item {n + 1}")
        if number not in roi_names:
            raise DicomError(
                f"{path}: ROIContourSequence item {n + 1} refers to ROI {number}, which "
                f"StructureSetROISequence does not declare (ROIs {sorted(roi_names)[:10]}); the "
                "structure set is inconsistent: re-export it"
            )
        contours, other = [], 0
        for c, contour in enumerate(_rt_items(item, "ContourSequence", path)):
            where = f" of contour {c + 1} of ROI {number}"
            kind = str(_rt_value(contour, "ContourGeometricType", path, where) or "CLOSED_PLANAR")
            if kind.strip().upper() != "CLOSED_PLANAR":
                other += 1
                continue
            pts = _contour_points(_rt_value(contour, "ContourData", path, where), path, where)
            if pts is not None:
                contours.append(pts)
        rois.append((number, contours, other))
    if not any(c or o for _n, c, o in rois):
        raise InputError(f"{path}: the structure set holds no contours (ROIContourSequence or its "
                         "ContourSequences are empty); export the structures with their contours")
    return roi_names, rois


def _contour_points(value, path, where: str) -> np.ndarray | None:
    """ContourData as (N, 3) LPS mm, or None for fewer than 3 points (encloses nothing)."""
    from pydicom.multival import MultiValue

    if value is None or value == "":
        raise DicomError(f"{path}: ContourData{where} is missing; the structure set is corrupt: re-export it")
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    try:
        values = np.array([float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError):
        raise DicomError(f"{path}: ContourData{where} holds a value that is not a number; the structure "
                         "set is corrupt: re-export it") from None
    if values.size % 3:
        raise DicomError(f"{path}: ContourData{where} holds {values.size} numbers, not x, y, z triples; "
                         "the structure set is corrupt: re-export it")
    if not np.all(np.isfinite(values)) or np.any(np.abs(values) > _MAX_MM):
        raise GeometryError(f"{path}: ContourData{where} holds NaN, infinite or absurd coordinates "
                            f"(beyond {_MAX_MM:.0e} mm); the structure set is corrupt: re-export it")
    pts = values.reshape(-1, 3)
    return pts if len(pts) >= 3 else None
