"""Mutations of a DICOM Segmentation (SEG): each edits the copied file in place, seeded.

The input is the real dcmqi SEG ``tests/data/dcmqi_ct3/liver.dcm`` (3 binary
512x512 frames, one segment, explicit VR). Besides the byte-level edits shared
with image series (:mod:`._dicom`: bit flips, truncation, a tag's VR or length,
a false transfer syntax), edits through pydicom give the SEG-specific structure
hostile values: frame counts and sizes, the segment table, the per-frame
functional groups (segment references, plane positions), the shared geometry
and the pixel data length.
"""

from __future__ import annotations

import copy
import functools
import random
from pathlib import Path

from _fuzz._dicom import (
    _read,
    _set_raw,
    _write,
    flip_bits,
    raw_length,
    raw_vr,
    transfer_syntax,
    truncate,
)

#: (group, element) of SEG tags worth corrupting at byte level.
RAW_TAGS = {
    "Rows": (0x0028, 0x0010), "Columns": (0x0028, 0x0011), "NumberOfFrames": (0x0028, 0x0008),
    "BitsAllocated": (0x0028, 0x0100), "PixelData": (0x7FE0, 0x0010),
    "SegmentSequence": (0x0062, 0x0002), "SegmentNumber": (0x0062, 0x0004),
    "ReferencedSegmentNumber": (0x0062, 0x000B),
    "PerFrameFunctionalGroupsSequence": (0x5200, 0x9230),
    "SharedFunctionalGroupsSequence": (0x5200, 0x9229),
    "ImagePositionPatient": (0x0020, 0x0032), "ImageOrientationPatient": (0x0020, 0x0037),
    "PixelSpacing": (0x0028, 0x0030), "DimensionIndexValues": (0x0020, 0x9157),
    "SegmentationType": (0x0062, 0x0001),
}

# top-level keyword -> hostile values (strings are the IS/CS text itself)
_VALUES: dict[str, list] = {
    "Rows": [0, 1, 2, 511, 513, 1024, 65535],
    "Columns": [0, 1, 7, 511, 513, 4096, 65535],
    "NumberOfFrames": ["0", "-1", "1", "2", "4", "1000000", "x", "2.5", "99999999999"],
    "BitsAllocated": [0, 1, 7, 8, 12, 16, 32, 65535],
    "BitsStored": [0, 1, 8, 16, 65535],
    "HighBit": [0, 7, 65535],
    "SamplesPerPixel": [0, 2, 3, 65535],
    "PixelRepresentation": [1, 2, 65535],
    "PhotometricInterpretation": ["MONOCHROME1", "RGB", "", "PALETTE COLOR"],
    "SegmentationType": ["FRACTIONAL", "LABELMAP", "", "X", "binary"],
    "MaximumFractionalValue": [0, 1, 255, 65535],
    "SegmentationFractionalType": ["PROBABILITY", "OCCUPANCY", "X"],
    "SOPClassUID": ["1.2.840.10008.5.1.4.1.1.2", "1.2.3", ""],
    "Modality": ["CT", "", "RTSTRUCT"],
    "FrameOfReferenceUID": ["", "1.2.3.4"],
}

_POSITIONS = [["nan", "0", "0"], ["inf", "inf", "inf"], ["1e300", "0", "1e300"], ["1", "2"],
              ["0", "0", "0"], ["-1e6", "3", "7"], ["x", "y", "z"], ["0", "0", "1e-300"]]
_ORIENTATIONS = [["0"] * 6, ["nan"] * 6, ["1", "0", "0", "1", "0", "0"], ["2", "0", "0", "0", "2", "0"],
                 ["1", "0", "0", "0", "1"], ["1", "0", "0", "0", "0", "0"],
                 ["0.7", "0.7", "0", "0", "1", "1e-4"], ["inf", "0", "0", "0", "1", "0"],
                 ["0", "1", "0", "1", "0", "0"], ["1e308"] * 6]
_SPACINGS = [["nan", "nan"], ["inf", "1"], ["0", "0"], ["-1", "-1"], ["1"], ["1e308", "1e308"],
             ["1e-300", "1e-300"], ["a", "b"], ["0.5", "2"]]
_THICKNESS = ["0", "-2", "nan", "inf", "1e308", "x"]
_SEGMENT_NUMBERS = [0, 2, 3, 99, 255, 256, 65535]
_LABELS = ["", "Liver", "Spleen", "x" * 10_000, "bad\x00name\x1b[31m", "../../etc", "lïver"]


def set_value(files: list[Path], rng: random.Random) -> str:
    """Give a size, pixel-format or identity tag of the SEG a hostile value, or delete it."""
    path = files[0]
    keyword = rng.choice(sorted(_VALUES))
    value = rng.choice(_VALUES[keyword])
    ds = _read(path)
    if rng.random() < 0.12:
        if keyword in ds:
            del ds[keyword]
        what = f"{keyword} deleted"
    else:
        _set_raw(ds, keyword, value)
        what = f"{keyword}={value!r}"
    _write(ds, path)
    return what


def segments(files: list[Path], rng: random.Random) -> str:
    """Empty, drop, duplicate or renumber the SegmentSequence, or give a segment a hostile label."""
    import pydicom

    path = files[0]
    ds = _read(path)
    how = rng.choice(["empty", "delete", "duplicate", "renumber", "label", "extra", "no_number"])
    if how == "empty":
        ds.SegmentSequence = pydicom.Sequence()
        what = "SegmentSequence emptied"
    elif how == "delete":
        del ds.SegmentSequence
        what = "SegmentSequence deleted"
    elif how == "duplicate":
        ds.SegmentSequence.append(pydicom.Dataset(ds.SegmentSequence[0]))
        what = "segment 1 declared twice"
    elif how == "renumber":
        number = rng.choice(_SEGMENT_NUMBERS)
        _set_raw(ds.SegmentSequence[0], "SegmentNumber", number)
        what = f"SegmentNumber 1 -> {number}"
    elif how == "label":
        label = rng.choice(_LABELS)
        ds.SegmentSequence[0].SegmentLabel = label
        what = f"SegmentLabel={label[:40]!r}"
    elif how == "extra":
        extra = copy.deepcopy(ds.SegmentSequence[0])
        number = rng.choice([2, 3, 1000, 65535])
        extra.SegmentNumber = number
        extra.SegmentLabel = rng.choice(["Spleen", "Liver", "blob"])
        ds.SegmentSequence.append(extra)
        what = f"a segment {number} with no frames declared"
    else:
        del ds.SegmentSequence[0].SegmentNumber
        what = "SegmentNumber deleted"
    _write(ds, path)
    return what


def frames(files: list[Path], rng: random.Random) -> str:
    """Edit the per-frame functional groups: fewer/more items, segment references, positions."""
    import pydicom

    path = files[0]
    ds = _read(path)
    groups = ds.PerFrameFunctionalGroupsSequence
    f = rng.randrange(len(groups))
    how = rng.choice(["drop", "empty", "delete", "extra", "segment", "no_segment", "position",
                      "no_position", "same_position", "index_values"])
    if how == "drop":
        del groups[f]
        what = f"frame group {f} dropped"
    elif how == "empty":
        ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence()
        what = "PerFrameFunctionalGroupsSequence emptied"
    elif how == "delete":
        del ds.PerFrameFunctionalGroupsSequence
        what = "PerFrameFunctionalGroupsSequence deleted"
    elif how == "extra":
        groups.append(pydicom.Dataset(groups[f]))
        what = f"frame group {f} repeated at the end"
    elif how == "segment":
        number = rng.choice(_SEGMENT_NUMBERS)
        _set_raw(groups[f].SegmentIdentificationSequence[0], "ReferencedSegmentNumber", number)
        what = f"frame {f} ReferencedSegmentNumber={number}"
    elif how == "no_segment":
        del groups[f].SegmentIdentificationSequence
        what = f"frame {f} SegmentIdentificationSequence deleted"
    elif how == "position":
        value = rng.choice(_POSITIONS)
        _set_raw(groups[f].PlanePositionSequence[0], "ImagePositionPatient", value)
        what = f"frame {f} ImagePositionPatient={value}"
    elif how == "no_position":
        del groups[f].PlanePositionSequence
        what = f"frame {f} PlanePositionSequence deleted"
    elif how == "same_position":
        other = (f + 1) % len(groups)
        groups[f].PlanePositionSequence[0].ImagePositionPatient = \
            groups[other].PlanePositionSequence[0].ImagePositionPatient
        what = f"frame {f} at the position of frame {other}"
    else:
        value = rng.choice([[0, 0], [1], [1, 1, 1], [65535, 1], [1, 99]])
        groups[f].FrameContentSequence[0].DimensionIndexValues = value
        what = f"frame {f} DimensionIndexValues={value}"
    _write(ds, path)
    return what


def geometry(files: list[Path], rng: random.Random) -> str:
    """Hostile shared geometry: orientation, pixel spacing, slice thickness/spacing."""
    path = files[0]
    ds = _read(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    which = rng.choice(["orientation", "spacing", "thickness", "between", "delete"])
    if which == "orientation":
        value = rng.choice(_ORIENTATIONS)
        _set_raw(shared.PlaneOrientationSequence[0], "ImageOrientationPatient", value)
    elif which == "spacing":
        value = rng.choice(_SPACINGS)
        _set_raw(shared.PixelMeasuresSequence[0], "PixelSpacing", value)
    elif which == "thickness":
        value = rng.choice(_THICKNESS)
        _set_raw(shared.PixelMeasuresSequence[0], "SliceThickness", value)
    elif which == "between":
        value = rng.choice(_THICKNESS)
        _set_raw(shared.PixelMeasuresSequence[0], "SpacingBetweenSlices", value)
    else:
        value = rng.choice(["PlaneOrientationSequence", "PixelMeasuresSequence"])
        del shared[value]
        which = "deleted"
    _write(ds, path)
    return f"shared {which}: {value}"


def pixel_length(files: list[Path], rng: random.Random) -> str:
    """Make the (bit-packed) pixel data shorter or longer than the header declares."""
    path = files[0]
    ds = _read(path)
    data = bytes(ds.PixelData)
    how = rng.choice(["half", "minus_two", "empty", "plus", "one_frame_more", "two_bytes"])
    frame = len(data) // max(1, int(ds.get("NumberOfFrames", 1) or 1))
    ds.PixelData = {"half": data[: len(data) // 2], "minus_two": data[:-2], "empty": b"",
                    "plus": data + b"\0" * 512, "one_frame_more": data + data[:frame],
                    "two_bytes": data[:2]}[how]
    _write(ds, path)
    return f"pixel data {how}"


MUTATIONS = {
    "flip_bits": flip_bits,
    "truncate": truncate,
    "raw_vr": functools.partial(raw_vr, tags=RAW_TAGS),
    "raw_length": functools.partial(raw_length, tags=RAW_TAGS),
    "transfer_syntax": transfer_syntax,
    "set_value": set_value,
    "segments": segments,
    "frames": frames,
    "geometry": geometry,
    "pixel_length": pixel_length,
}

#: How often each mutation is drawn.
WEIGHTS = {"flip_bits": 3, "truncate": 2, "raw_vr": 1, "raw_length": 2, "transfer_syntax": 1,
           "set_value": 4, "segments": 2, "frames": 3, "geometry": 2, "pixel_length": 1}


def declared_size(path: Path) -> tuple[int, int] | None:
    """(Columns, Rows) the SEG header declares, as pydicom reads it (None when unreadable)."""
    import warnings

    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows)
    except Exception:  # noqa: BLE001 - a header pydicom cannot read declares nothing
        return None
