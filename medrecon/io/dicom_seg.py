"""DICOM Segmentation objects (SEG) to :class:`~medrecon.volume.LabelMap`.

Uses highdicom (extra ``dicom-seg``). Segments become label ids: the
TotalSegmentator ``total`` id when the segment label names one of its structures
(case, spaces and dashes ignored: "Liver" -> 5), else the segment number (or the
next free id if that is taken). Geometry comes from the SEG's own plane positions,
converted to medrecon's (i, j, k) order in LPS millimetres; overlapping segments
are painted in segment order (later ones win) with a warning; fractional
segments are thresholded at 0.5.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from importlib import resources
from pathlib import Path

import numpy as np

from medrecon.errors import DicomError, MissingDependencyError
from medrecon.io.limits import check_alloc
from medrecon.volume import LabelMap

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def _key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _totalseg_ids() -> dict[str, int]:
    """TotalSegmentator structure name -> id, from the package's class map (if shipped)."""
    try:
        text = resources.files("medrecon.data").joinpath("class_map_total.json").read_text("utf-8")
    except (FileNotFoundError, ModuleNotFoundError, OSError):
        return {}
    return {_key(str(v)): int(k) for k, v in json.loads(text).items()}


def segment_ids(labels: dict[int, str]) -> dict[int, tuple[int, str]]:
    """Map segment number -> (label id, name) for segments named ``labels``.

    Parameters
    ----------
    labels : dict of int to str
        Segment number -> SegmentLabel.
    """
    known = _totalseg_ids()
    by_id = {v: k for k, v in known.items()}
    out: dict[int, tuple[int, str]] = {}
    used: set[int] = set()
    pending = []
    for number, label in sorted(labels.items()):
        key = _key(label)
        if key in known and known[key] not in used:
            out[number] = (known[key], by_id[known[key]])
            used.add(known[key])
        else:
            pending.append((number, label))
    nxt = max([0, *used, *labels]) + 1
    names = {name for _, name in out.values()}
    for number, label in pending:
        ident = number if number not in used else nxt
        nxt = max(nxt, ident + 1)
        used.add(ident)
        name = _key(label) or f"segment_{number}"
        if name in names:
            name = f"{name}_{number}"  # names stay unique, so label_of(name) is unambiguous
        names.add(name)
        out[number] = (ident, name)
    return out


def read_seg(path: str | os.PathLike) -> LabelMap:
    """Read a DICOM SEG file as a label map.

    Parameters
    ----------
    path : path-like
        A DICOM Segmentation Storage file.

    Returns
    -------
    LabelMap
        (I, J, K) integer labels in LPS mm on the SEG's own frames; names from the
        segment labels (TotalSegmentator names where they match).

    Raises
    ------
    MissingDependencyError
        If highdicom is not installed (extra ``dicom-seg``).
    DicomError
        If the file is not a SEG or its frames do not form a regular volume.
    ResourceLimitError
        If the declared size is over the limits.
    """
    try:
        import highdicom as hd
    except ImportError as exc:
        raise MissingDependencyError("highdicom", "dicom-seg", "reading DICOM SEG") from exc
    import pydicom

    p = Path(path)
    try:
        header = pydicom.dcmread(p, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on corrupt files
        raise DicomError(f"{p} is not a readable DICOM file: {exc}") from exc
    if str(header.get("SOPClassUID", "")) != SEG_CLASS:
        raise DicomError(
            f"{p} is not a DICOM Segmentation (SOP class {header.get('SOPClassUID', '?')}); "
            "load images with medrecon.io.load"
        )
    frames = int(header.get("NumberOfFrames", 1) or 1)
    check_alloc((frames, int(header.Rows), int(header.Columns)), np.uint8, str(p))
    try:
        seg = hd.seg.segread(p)
    except Exception as exc:  # noqa: BLE001
        raise DicomError(f"{p}: highdicom cannot read this SEG ({exc})") from exc
    labels = {int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in seg.SegmentSequence}
    mapping = segment_ids(labels)
    binary = str(header.get("SegmentationType", "BINARY")).upper() == "BINARY"
    try:
        array, affine = _combined(seg, mapping) if binary else (None, None)
    except ValueError:
        array = None
    if array is None:
        warnings.warn(f"{p}: segments overlap or are fractional; painted in segment order",
                      stacklevel=2)
        array, affine = _painted(seg, mapping)
    if array is None or not np.any(array):
        raise DicomError(f"{p}: the SEG holds no segmented voxels")
    names = {ident: name for ident, name in mapping.values()}
    # highdicom: array (slice, row, column), affine maps those indices to LPS;
    # medrecon: (i=column, j=row, k=slice)
    ijk = np.ascontiguousarray(array.transpose(2, 1, 0))
    lps = np.eye(4)
    lps[:3, :3] = affine[:3, [2, 1, 0]]
    lps[:3, 3] = affine[:3, 3]
    if np.dot(lps[:3, 2], np.cross(lps[:3, 0], lps[:3, 1])) < 0:
        # k along row x column, as load_dicom orders slices: same grid as the image
        lps[:3, 3] = lps[:3, 3] + lps[:3, 2] * (ijk.shape[2] - 1)
        lps[:3, 2] = -lps[:3, 2]
        ijk = np.ascontiguousarray(ijk[:, :, ::-1])
    return LabelMap(array=ijk, affine=lps, names=names, source=str(p))


def _out_dtype(mapping: dict[int, tuple[int, str]]) -> np.dtype:
    top = max(i for i, _ in mapping.values())
    return np.dtype(np.uint8 if top < 256 else np.uint16)


def _combined(seg, mapping):
    try:
        vol = seg.get_volume(combine_segments=True, relabel=False)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(str(exc)) from exc
    numbers = np.asarray(vol.array)
    lut = np.zeros(max(mapping) + 1, dtype=_out_dtype(mapping))
    for number, (ident, _name) in mapping.items():
        lut[number] = ident
    if numbers.max() >= lut.size:
        raise DicomError("SEG pixel values refer to undeclared segments")
    return lut[numbers], np.asarray(vol.affine)


def _painted(seg, mapping):
    out = affine = None
    for number, (ident, _name) in sorted(mapping.items()):
        try:
            vol = seg.get_volume(segment_numbers=[number])
        except (ValueError, RuntimeError) as exc:
            raise DicomError(f"segment {number} does not form a regular volume: {exc}") from exc
        values = np.asarray(vol.array)
        values = values.reshape(values.shape[:3])
        if out is None:
            out = np.zeros(values.shape, dtype=_out_dtype(mapping))
            affine = np.asarray(vol.affine)
        elif values.shape != out.shape or not np.allclose(vol.affine, affine, atol=1e-3):
            raise DicomError(f"segment {number} lies on a different grid from segment 1")
        out[values >= 0.5] = ident
    return out, affine
