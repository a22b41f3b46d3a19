"""An RT Structure Set builder and its mutations (contours, ROI tables, references).

The RTSTRUCT itself is written by ``write_rtstruct`` of ``tests/_builders.py`` (the
tests in ``test_labels_import.py`` use it too). :func:`base_rtstruct` draws three ROIs on
a given image grid (the GE 3-slice CT in the fuzz campaign): a polygon on every
slice, a ring with a hole and a small triangle. The mutations edit a copy in
place: contour data of odd length, NaN or huge coordinates, contours off the
grid (between slices, outside the image), empty or missing sequences, ROI numbers
that do not match, hostile names, plus the byte-level edits of :mod:`._dicom`.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

import numpy as np
from _builders import write_rtstruct

from _fuzz._dicom import _read, _set_raw, _write, flip_bits, raw_length, raw_vr, truncate

#: Fixed UIDs, so that the base file (and every case) is the same bytes on every run.
UID_ROOT = "1.2.826.0.1.3680043.10.1001."

RAW_TAGS = {
    "ContourData": (0x3006, 0x0050), "ROINumber": (0x3006, 0x0022),
    "ReferencedROINumber": (0x3006, 0x0084), "ROIName": (0x3006, 0x0026),
    "ContourGeometricType": (0x3006, 0x0042), "NumberOfContourPoints": (0x3006, 0x0046),
    "ContourSequence": (0x3006, 0x0040), "ROIContourSequence": (0x3006, 0x0039),
    "StructureSetROISequence": (0x3006, 0x0020), "Modality": (0x0008, 0x0060),
    "ReferencedFrameOfReferenceSequence": (0x3006, 0x0010),
}


def _ring(ci: float, cj: float, r: float, k: int, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([ci + r * np.cos(t), cj + r * np.sin(t), np.full(n, float(k))], 1)


def base_rtstruct(path: Path, image) -> Path:
    """Three ROIs drawn on ``image``'s grid (a Volume of at least 3 slices)."""
    ni, nj, nk = image.shape
    liver = [image.voxel_to_world(_ring(0.6 * ni, 0.5 * nj, 0.15 * ni, k, 9)) for k in range(nk)]
    ring = [image.voxel_to_world(_ring(0.3 * ni, 0.4 * nj, 0.06 * ni, nk // 2)),
            image.voxel_to_world(_ring(0.3 * ni, 0.4 * nj, 0.025 * ni, nk // 2))]
    tri = np.array([[0.2 * ni, 0.7 * nj, nk - 1], [0.3 * ni, 0.7 * nj, nk - 1], [0.25 * ni, 0.8 * nj, nk - 1]])
    rois = [(1, "Liver", liver), (2, "GTV ring", ring), (7, "Spleen", [image.voxel_to_world(tri)])]
    return write_rtstruct(path, rois, frame_uid=UID_ROOT + "1", sop_uid=UID_ROOT + "2")


_COORDS = ["nan", "inf", "-inf", "1e300", "-1e308", "1e6", "x", ""]


def contour_data(files: list[Path], rng: random.Random) -> str:
    """ContourData of odd length, with NaN/inf/huge/non-numeric values, too few or many points."""
    path = files[0]
    ds = _read(path)
    roi = rng.choice(ds.ROIContourSequence)
    contour = rng.choice(roi.ContourSequence)
    values = [str(v) for v in contour.ContourData]
    how = rng.choice(["odd", "value", "all_nan", "one_point", "two_points", "empty", "same_point",
                      "many", "scale"])
    if how == "odd":
        values = values[: -rng.choice([1, 2])]
    elif how == "value":
        values[rng.randrange(len(values))] = rng.choice(_COORDS)
    elif how == "all_nan":
        values = ["nan"] * len(values)
    elif how == "one_point":
        values = values[:3]
    elif how == "two_points":
        values = values[:6]
    elif how == "empty":
        values = []
    elif how == "same_point":
        values = values[:3] * 8
    elif how == "many":  # 50 000 points on the original polygon's first edge
        a = np.asarray(values[:3], float)
        b = np.asarray(values[3:6], float)
        t = np.linspace(0, 1, 50_000)[:, None]
        values = [f"{v:.3f}" for v in (a + t * (b - a)).ravel()] + values
    else:
        factor = rng.choice([1e3, 1e-6, -1.0, 1e200])
        values = [repr(float(v) * factor) for v in values]
    if values:
        _set_raw(contour, "ContourData", values)
    else:
        contour.ContourData = None
    _write(ds, path)
    return f"ContourData {how} ({len(values)} values)"


def off_grid(files: list[Path], rng: random.Random) -> str:
    """Move a contour between slices, out of the volume, or tilt it out of its plane."""
    path = files[0]
    ds = _read(path)
    roi = rng.choice(ds.ROIContourSequence)
    contour = rng.choice(roi.ContourSequence)
    pts = np.asarray(contour.ContourData, float).reshape(-1, 3)
    how = rng.choice(["dz_small", "dz_half", "dz_far", "xy_far", "tilt", "partly_out"])
    shift = {"dz_small": [0, 0, 0.3], "dz_half": [0, 0, 0.5], "dz_far": [0, 0, 500.0],
             "xy_far": [1e4, -1e4, 0], "tilt": [0, 0, 0], "partly_out": [300.0, 0, 0]}[how]
    pts = pts + np.asarray(shift)
    if how == "tilt":
        pts[:, 2] += 0.3 * (pts[:, 0] - pts[0, 0])
    contour.ContourData = [f"{v:.4f}" for v in pts.ravel()]
    _write(ds, path)
    return f"contour {how}"


def structure(files: list[Path], rng: random.Random) -> str:
    """Empty or delete the ROI/contour sequences, mismatch ROI numbers, change geometric types."""
    import pydicom

    path = files[0]
    ds = _read(path)
    rois = ds.ROIContourSequence
    r = rng.randrange(len(rois))
    how = rng.choice(["no_contours", "empty_contours", "no_roi_contours", "empty_roi_contours",
                      "no_structure_set", "empty_structure_set", "ref_number", "roi_number",
                      "no_ref_number", "dup_roi_number", "geometric_type", "no_frame_ref",
                      "empty_frame_ref", "modality"])
    if how == "no_contours":
        del rois[r].ContourSequence
    elif how == "empty_contours":
        rois[r].ContourSequence = pydicom.Sequence()
    elif how == "no_roi_contours":
        del ds.ROIContourSequence
    elif how == "empty_roi_contours":
        ds.ROIContourSequence = pydicom.Sequence()
    elif how == "no_structure_set":
        del ds.StructureSetROISequence
    elif how == "empty_structure_set":
        ds.StructureSetROISequence = pydicom.Sequence()
    elif how == "ref_number":
        value = rng.choice(["99", "0", "-1", "7", "1", "x", "1e9", ""])
        _set_raw(rois[r], "ReferencedROINumber", value)
        how += f"={value!r}"
    elif how == "roi_number":
        value = rng.choice(["99", "0", "-5", "2", "x", "3.5", ""])
        _set_raw(ds.StructureSetROISequence[r], "ROINumber", value)
        how += f"={value!r}"
    elif how == "no_ref_number":
        del rois[r].ReferencedROINumber
    elif how == "dup_roi_number":
        ds.StructureSetROISequence[r].ROINumber = ds.StructureSetROISequence[(r + 1) % len(rois)].ROINumber
    elif how == "geometric_type":
        value = rng.choice(["POINT", "OPEN_PLANAR", "OPEN_NONPLANAR", "", "closed_planar", "X"])
        contour = rng.choice(rois[r].ContourSequence)
        contour.ContourGeometricType = value
        how += f"={value!r}"
    elif how == "no_frame_ref":
        del ds.ReferencedFrameOfReferenceSequence
    elif how == "empty_frame_ref":
        ds.ReferencedFrameOfReferenceSequence = pydicom.Sequence()
    else:
        value = rng.choice(["CT", "SEG", "", "rtstruct"])
        ds.Modality = value
        how += f"={value!r}"
    _write(ds, path)
    return f"{how} (ROI item {r})"


def names(files: list[Path], rng: random.Random) -> str:
    """Hostile or duplicate ROI names."""
    path = files[0]
    ds = _read(path)
    items = ds.StructureSetROISequence
    r = rng.randrange(len(items))
    how = rng.choice(["same_as_other", "control", "long", "empty", "delete", "path"])
    if how == "same_as_other":
        items[r].ROIName = items[(r + 1) % len(items)].ROIName
    elif how == "delete":
        del items[r].ROIName
    else:
        items[r].ROIName = {"control": "a\x00b\x1b[2Jc\n", "long": "L" * 10_000, "empty": "",
                            "path": "../../../x"}[how]
    _write(ds, path)
    return f"ROIName {how} (item {r})"


MUTATIONS = {
    "flip_bits": flip_bits,
    "truncate": truncate,
    "raw_vr": functools.partial(raw_vr, tags=RAW_TAGS),
    "raw_length": functools.partial(raw_length, tags=RAW_TAGS),
    "contour_data": contour_data,
    "off_grid": off_grid,
    "structure": structure,
    "names": names,
}

#: How often each mutation is drawn.
WEIGHTS = {"flip_bits": 3, "truncate": 2, "raw_vr": 1, "raw_length": 2, "contour_data": 4,
           "off_grid": 2, "structure": 4, "names": 1}
