"""DICOM Segmentation objects (SEG) to :class:`~medrecon.volume.LabelMap`.

Uses highdicom (extra ``dicom-seg``). Segment numbers are kept as label ids and
segment labels as names (:func:`medrecon.labels.assign_ids`; a label the vocabulary
knows is spelled as it does: "Liver" numbered 1 stays 1, named "liver"). Geometry
comes from the SEG's own plane positions, converted to medrecon's (i, j, k) order
in LPS millimetres; overlapping segments are painted in segment order (later ones
win) with a warning; fractional segments are thresholded at 0.5.

The file is untrusted: it is parsed with bounded reads
(:func:`~medrecon.io.dicom_file.read_dataset`), and its sizes, segment table,
per-frame groups, geometry and pixel data length are checked here before
highdicom sees it, so that a corrupt SEG fails with a :class:`DicomError` that
names the field.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from medrecon.errors import DicomError, GeometryError, MedreconError, MissingDependencyError
from medrecon.io.dicom_file import describe_error, read_dataset
from medrecon.io.limits import check_alloc
from medrecon.labels import assign_ids
from medrecon.volume import LabelMap

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: BitsAllocated each SegmentationType allows.
_BITS = {"BINARY": (1,), "FRACTIONAL": (8,), "LABELMAP": (8, 16)}
_FIX = "the SEG is corrupt: re-export it"


def segment_ids(labels: dict[int, str]) -> dict[int, tuple[int, str]]:
    """Map segment number -> (label id, name) for segments named ``labels``.

    Parameters
    ----------
    labels : dict of int to str
        Segment number -> SegmentLabel.
    """
    numbers = sorted(labels)
    return dict(zip(numbers, assign_ids([labels[n] for n in numbers], numbers=numbers), strict=True))


def read_seg(path: str | os.PathLike) -> LabelMap:
    """Read a DICOM SEG file as a label map.

    Parameters
    ----------
    path : path-like
        A DICOM Segmentation Storage file.

    Returns
    -------
    LabelMap
        (I, J, K) integer labels in LPS mm on the SEG's own frames: the segment
        numbers, named by the segment labels (vocabulary spelling where they match).

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
    p = Path(path)
    ds = read_dataset(p)
    sop = _value(ds, "SOPClassUID", p)
    if str(sop or "") != SEG_CLASS:
        raise DicomError(
            f"{p} is not a DICOM Segmentation (SOP class {_shown(str(sop or '?'))}); "
            "load images with medrecon.io.load"
        )
    seg_type = _check_header(ds, p)
    numbers = _segment_numbers(ds, p)
    _check_frames(ds, p, numbers, seg_type)
    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
        labels = {int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in seg.SegmentSequence}
        mapping = segment_ids(labels)
        try:
            array, affine = _combined(seg, mapping) if seg_type == "BINARY" else (None, None)
        except ValueError:
            array = None
        if array is None:
            warnings.warn(f"{p}: segments overlap or are fractional; painted in segment order",
                          stacklevel=2)
            array, affine = _painted(seg, mapping)
    except MedreconError:
        raise
    except Exception as exc:  # noqa: BLE001 - highdicom and pydicom raise many types on odd SEGs
        raise DicomError(f"{p}: highdicom cannot read this SEG ({describe_error(exc)}); {_FIX}") from exc
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


def _shown(value) -> str:
    """Quote a header value for a message: at most 40 characters, never raw bytes."""
    if isinstance(value, bytes | bytearray):
        return f"a binary value of {len(value)} bytes"
    text = str(value)
    if not all(c.isprintable() for c in text):
        return f"a value of {len(text)} characters with control characters"
    return repr(text[:40]) + ("..." if len(text) > 40 else "")


def _value(ds, keyword: str, p: Path):
    """``ds.keyword`` or None; a value pydicom cannot convert is a DicomError naming it."""
    try:
        return ds.get(keyword)
    except Exception as exc:  # noqa: BLE001 - pydicom converts values lazily, on access
        raise DicomError(f"{p}: {keyword} cannot be read ({describe_error(exc)}); {_FIX}") from exc


def _int(ds, keyword: str, p: Path, *, default: int | None = None, lo: int = 1,
         hi: int = 2**31 - 1) -> int:
    value = _value(ds, keyword, p)
    if value is None or value == "":
        if default is None:
            raise DicomError(f"{p} has no {keyword}; {_FIX}")
        return default
    try:
        number = int(value)
        exact = number == float(value)
    except (TypeError, ValueError, OverflowError):
        exact = False
    if not exact or not lo <= number <= hi:
        raise DicomError(f"{p}: {keyword} is {_shown(value)}, expected an integer from {lo} to {hi}; {_FIX}")
    return number


def _check_header(ds, p: Path) -> str:
    """Validate sizes, pixel format and pixel data length; return the SegmentationType."""
    rows = _int(ds, "Rows", p, hi=65535)
    cols = _int(ds, "Columns", p, hi=65535)
    frames = _int(ds, "NumberOfFrames", p, default=1)
    check_alloc((frames, rows, cols), np.uint8, str(p))
    seg_type = str(_value(ds, "SegmentationType", p) or "").upper()
    if seg_type not in _BITS:
        raise DicomError(f"{p}: SegmentationType {_shown(seg_type)} is none of {sorted(_BITS)}; {_FIX}")
    bits = _int(ds, "BitsAllocated", p, hi=64)
    if bits not in _BITS[seg_type]:
        raise DicomError(f"{p}: BitsAllocated is {bits} but a {seg_type} SEG stores "
                         f"{' or '.join(map(str, _BITS[seg_type]))} bits per pixel; {_FIX}")
    stored = _int(ds, "BitsStored", p, default=bits, hi=bits)
    if _int(ds, "HighBit", p, default=stored - 1, lo=0, hi=bits) != stored - 1:
        raise DicomError(f"{p}: HighBit must be BitsStored - 1 ({stored - 1}); {_FIX}")
    if _int(ds, "SamplesPerPixel", p, default=1) != 1:
        raise DicomError(f"{p}: SamplesPerPixel must be 1 in a SEG; {_FIX}")
    if _int(ds, "PixelRepresentation", p, default=0, lo=0) != 0:
        raise DicomError(f"{p}: PixelRepresentation must be 0 (unsigned) in a SEG; {_FIX}")
    data = _value(ds, "PixelData", p)
    if not data:
        raise DicomError(f"{p} holds no pixel data; {_FIX}")
    from pydicom.uid import UID

    syntax = UID(str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) or ""))
    if not syntax.is_transfer_syntax:
        raise DicomError(f"{p}: transfer syntax {_shown(syntax)} is not a known DICOM transfer syntax; "
                         f"{_FIX}")
    if not syntax.is_encapsulated:
        need = (frames * rows * cols * bits + 7) // 8
        if len(data) < need:
            raise DicomError(
                f"{p}: pixel data holds {len(data):,} bytes but the header declares {frames} frames "
                f"of {rows}x{cols} at {bits} bit(s) ({need:,} bytes): the file is truncated or corrupt; "
                "re-export it"
            )
    return seg_type


def _segment_numbers(ds, p: Path) -> set[int]:
    items = _value(ds, "SegmentSequence", p)
    if not items:
        raise DicomError(f"{p}: SegmentSequence is missing or empty, so no segment is declared; {_FIX}")
    numbers: set[int] = set()
    for n, item in enumerate(items):
        number = _int(item, "SegmentNumber", p, hi=65535)
        if number in numbers:
            raise DicomError(f"{p}: SegmentSequence declares segment {number} twice (item {n + 1}); {_FIX}")
        numbers.add(number)
    return numbers


def _floats(item, keyword: str, p: Path, n: int, where: str) -> np.ndarray:
    value = _value(item, keyword, p)
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        out = np.zeros(0)
    if out.shape != (n,) or not np.all(np.isfinite(out)) or np.any(np.abs(out) > 1e7):
        raise GeometryError(f"{p}: {keyword} of {where} is {_shown(value)}, expected {n} finite "
                            f"numbers (mm); {_FIX}")
    return out


def _group_item(groups, sequence: str, p: Path):
    """First item of ``sequence`` in the first of ``groups`` (per-frame, shared) that has it."""
    for group in groups:
        if group is not None:
            items = _value(group, sequence, p)
            if items:
                return items[0]
    return None


def _check_frames(ds, p: Path, numbers: set[int], seg_type: str) -> None:
    """One functional group per frame, each naming a declared segment, placed by finite geometry."""
    frames = _int(ds, "NumberOfFrames", p, default=1)
    per_frame = _value(ds, "PerFrameFunctionalGroupsSequence", p) or []
    if len(per_frame) != frames:
        raise DicomError(f"{p}: PerFrameFunctionalGroupsSequence has {len(per_frame)} item(s) but "
                         f"NumberOfFrames is {frames}; {_FIX}")
    shared_items = _value(ds, "SharedFunctionalGroupsSequence", p)
    shared = shared_items[0] if shared_items else None
    for f, group in enumerate(per_frame):
        where = f"frame {f + 1}"
        if seg_type != "LABELMAP":
            ident = _group_item((group, shared), "SegmentIdentificationSequence", p)
            if ident is None:
                raise DicomError(f"{p}: {where} names no segment (SegmentIdentificationSequence); {_FIX}")
            number = _int(ident, "ReferencedSegmentNumber", p, hi=65535)
            if number not in numbers:
                raise DicomError(f"{p}: {where} refers to segment {number}, which SegmentSequence does not "
                                 f"declare (segments {sorted(numbers)[:10]}); {_FIX}")
        for sequence, keyword, n in (("PlanePositionSequence", "ImagePositionPatient", 3),
                                     ("PlaneOrientationSequence", "ImageOrientationPatient", 6),
                                     ("PixelMeasuresSequence", "PixelSpacing", 2)):
            item = _group_item((group, shared), sequence, p)
            if item is None:
                raise GeometryError(f"{p}: {where} has no {keyword} ({sequence}), so it cannot be "
                                    f"placed in space; {_FIX}")
            values = _floats(item, keyword, p, n, where)
            if keyword == "PixelSpacing" and np.any(values <= 0):
                raise GeometryError(f"{p}: PixelSpacing of {where} is {values.tolist()}; it must be "
                                    f"positive; {_FIX}")
            if keyword == "ImageOrientationPatient":
                row, col = values[:3], values[3:]
                if (abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3
                        or abs(np.dot(row, col)) > 1e-2):
                    raise GeometryError(f"{p}: ImageOrientationPatient of {where} is {values.tolist()}, "
                                        f"not two orthogonal unit directions; {_FIX}")


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
