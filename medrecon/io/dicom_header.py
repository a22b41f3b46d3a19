"""One DICOM file's header, parsed without its pixels.

:func:`read_headers` returns one :class:`FrameHeader` per image frame (a
single-frame file gives one, an enhanced multi-frame file one per frame, with
its per-frame functional groups resolved). Headers are parsed with pydicom's
``stop_before_pixels``; for natively encoded pixel data the byte offset of the
pixel values is recorded so the pixel pass can read them straight into the
output array without parsing the file again. Declared sizes are checked against
:mod:`medrecon.io.limits` before any per-frame record is made.

Geometry fields stay in DICOM's patient frame (LPS, mm), as the file states them.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medrecon.errors import DicomError, ResourceLimitError
from medrecon.io.dicom_file import describe_error, open_capped
from medrecon.io.dicom_mosaic import is_mosaic, mosaic_layout, tile_positions
from medrecon.io.limits import check_alloc

#: SOP class of a DICOMDIR (Media Storage Directory Storage).
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_PIXEL_DATA = 0x7FE00010
#: Bounds beyond which a header's geometry or modality LUT is corrupt, not unusual.
MIN_SPACING_MM, MAX_SPACING_MM = 1e-4, 100.0
MAX_POSITION_MM = 1e7
MAX_RESCALE = 1e10
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_VRS = _LONG_VRS | {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
    b"PN", b"SH", b"SL", b"SS", b"ST", b"SV", b"TM", b"UI", b"UL", b"US", b"UV",
}


@dataclass(frozen=True)
class FrameHeader:
    """What the first pass knows about one image frame.

    Attributes
    ----------
    path : str
        File holding the frame.
    frame : int
        Frame index inside the file (0 for single-frame files).
    n_frames : int
        Number of frames in the file.
    series_uid, sop_uid, sop_class, modality, description : str
        Identifying tags (SeriesInstanceUID, SOPInstanceUID, SOPClassUID, ...).
    series_number, instance : int or None
        SeriesNumber and InstanceNumber (never used for ordering).
    image_type : tuple of str
        ImageType values, upper case.
    rows, cols, samples : int
        Rows, Columns and SamplesPerPixel (0 when the file has no pixel data).
    bits_allocated, bits_stored : int
        BitsAllocated and BitsStored.
    signed : bool
        PixelRepresentation == 1.
    transfer_syntax : str
        Transfer syntax UID.
    pixel_offset : int
        Byte offset of the first frame's pixel values in the file, or -1 when the
        pixel data must be decoded by pydicom (compressed, deflated, odd layouts).
    pixel_length : int
        Length in bytes of the pixel data value (-1 when encapsulated or unknown).
    file_size : int
        Size of the file in bytes.
    little_endian : bool
        Byte order of native pixel data.
    position : tuple of 3 float or None
        ImagePositionPatient, LPS mm of the centre of the first pixel.
    orientation : tuple of 6 float or None
        ImageOrientationPatient: row direction then column direction cosines.
    pixel_spacing : tuple of 2 float or None
        PixelSpacing (between rows, between columns) in mm.
    slope, intercept : float
        Modality LUT (RescaleSlope, RescaleIntercept); 1 and 0 when absent.
    thickness, spacing_between : float or None
        SliceThickness and SpacingBetweenSlices (informative only).
    tilt : float or None
        GantryDetectorTilt in degrees (informative; geometry comes from positions).
    echo : int or None
        EchoNumbers (multi-echo MR series are split by echo).
    mosaic : int
        Tiles per side of a Siemens mosaic, 0 when the file is not one. For a
        mosaic, ``rows`` and ``cols`` are one tile's size, ``frame`` is the
        tile's index and ``position`` the tile's own corner.
    """

    path: str
    frame: int
    n_frames: int
    series_uid: str
    sop_uid: str
    sop_class: str
    modality: str
    description: str
    series_number: int | None
    instance: int | None
    image_type: tuple[str, ...]
    rows: int
    cols: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    transfer_syntax: str
    pixel_offset: int
    pixel_length: int
    file_size: int
    little_endian: bool
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    slope: float = 1.0
    intercept: float = 0.0
    thickness: float | None = None
    spacing_between: float | None = None
    tilt: float | None = None
    echo: int | None = None
    mosaic: int = 0

    @property
    def has_pixels(self) -> bool:
        """True when the file carries image pixel data."""
        return self.rows > 0 and self.cols > 0

    @property
    def is_localizer(self) -> bool:
        """True for localizer / scout / topogram images."""
        return any(t in ("LOCALIZER", "SCOUT", "TOPOGRAM") for t in self.image_type)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one natively encoded frame (one tile of a mosaic)."""
        return self.rows * self.cols * self.samples * (self.bits_allocated // 8)

    @property
    def stored_bytes(self) -> int:
        """Bytes of one natively encoded frame as stored (the whole mosaic of a mosaic)."""
        return self.frame_bytes * max(1, self.mosaic) ** 2


def looks_like_dicom(path: str | os.PathLike) -> bool:
    """Cheap check (reads at most 132 bytes) that a file is DICOM.

    True for files with the ``DICM`` marker after the 128-byte preamble and for
    raw datasets that start with a plausible group 0x0002/0x0008 element.
    Never raises.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    group, element = struct.unpack("<HH", head[:4])
    if group not in (0x0002, 0x0008) or element > 0x0100:
        return False
    if head[4:6] in _VRS:
        return True
    (length,) = struct.unpack("<I", head[4:8])
    return length < 1024


def _float(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _int(value: Any) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _pixel_element(fh, ds, tsyntax) -> tuple[int, int]:
    """Offset and length of the native pixel data value; (-1, -1) when not readable raw."""
    if tsyntax is not None and (tsyntax.is_encapsulated or tsyntax.is_deflated):
        return -1, -1
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or little is None:
        return -1, -1
    start = fh.tell()
    head = fh.read(12)
    if len(head) < 8:
        return -1, -1
    end = "<" if little else ">"
    group, element = struct.unpack(end + "HH", head[:4])
    if (group << 16 | element) != _PIXEL_DATA:
        return -1, -1
    if implicit:
        (length,) = struct.unpack(end + "I", head[4:8])
        value_at = start + 8
    elif head[4:6] in _LONG_VRS:
        (length,) = struct.unpack(end + "I", head[8:12])
        value_at = start + 12
    else:
        (length,) = struct.unpack(end + "H", head[6:8])
        value_at = start + 8
    if length == 0xFFFFFFFF:
        return -1, -1
    return value_at, length


def _group_value(groups: list, f: int, seq: str, attr: str) -> Any:
    """Look ``seq[0].attr`` up in frame ``f``'s per-frame group, then the shared group."""
    per_frame, shared = groups
    for item in (per_frame[f] if per_frame is not None and f < len(per_frame) else None, shared):
        if item is None or seq not in item:
            continue
        sub = item[seq].value
        if sub and attr in sub[0]:
            return sub[0][attr].value
    return None


def _fmt(values: Any) -> str:
    """Numbers of a header field as plain text (no numpy reprs)."""
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


def _checked(path: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Refuse geometry and modality LUT values that are not finite or absurd; return ``fields``.

    Informative fields (SliceThickness, SpacingBetweenSlices) out of range become unknown.
    """
    for key, name in (("position", "ImagePositionPatient"), ("orientation", "ImageOrientationPatient")):
        values = fields[key]
        if values is not None and not all(math.isfinite(v) and abs(v) <= MAX_POSITION_MM for v in values):
            raise DicomError(f"{path}: {name} {_fmt(values)} holds NaN, infinite or absurd values: "
                             "the file's geometry is corrupt; re-export it or remove it from the folder")
    spacing = fields["pixel_spacing"]
    if spacing is not None and not all(MIN_SPACING_MM <= v <= MAX_SPACING_MM for v in spacing):
        raise DicomError(
            f"{path}: PixelSpacing {_fmt(spacing)} mm is outside {MIN_SPACING_MM:g}..{MAX_SPACING_MM:g} mm: "
            "the file's geometry is corrupt; re-export it or remove it from the folder"
        )
    for key, name in (("slope", "RescaleSlope"), ("intercept", "RescaleIntercept")):
        value = fields[key]
        if not (math.isfinite(value) and abs(value) <= MAX_RESCALE):
            raise DicomError(
                f"{path}: {name} {value:g} is not a usable number (NaN, infinite or beyond "
                f"{MAX_RESCALE:.0e}): its pixel values cannot be converted; re-export the file or "
                "remove it from the folder"
            )
    for key in ("thickness", "spacing_between"):
        value = fields[key]
        if value is not None and not (MIN_SPACING_MM <= value <= MAX_POSITION_MM):
            fields[key] = None
    return fields


def _headers(path: Path, ds, tsyntax: str, little: bool, offset: int, length: int,
             size: int) -> list[FrameHeader]:
    """Frame records from a parsed header (a pydicom dataset or a FlatHeader)."""
    n_frames = _int(ds.get("NumberOfFrames")) or 1
    if "Rows" in ds:
        # a header is untrusted: refuse absurd sizes before making per-frame records
        bits = _int(ds.get("BitsAllocated")) or 8
        width = max(1, (bits + 7) // 8)
        dtype, per = (f"u{width}", 1) if width in (1, 2, 4, 8) else ("u1", width)  # odd widths as bytes
        check_alloc((n_frames, _int(ds.get("Rows")) or 1, _int(ds.get("Columns")) or 1,
                     (_int(ds.get("SamplesPerPixel")) or 1) * per), dtype, str(path))
    image_type = tuple(str(t).upper() for t in (ds.get("ImageType") or ()))
    common = dict(
        path=str(path),
        n_frames=n_frames,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        sop_uid=str(ds.get("SOPInstanceUID", "")),
        sop_class=str(ds.get("SOPClassUID", "")),
        modality=str(ds.get("Modality", "")).upper(),
        description=str(ds.get("SeriesDescription", "")),
        series_number=_int(ds.get("SeriesNumber")),
        instance=_int(ds.get("InstanceNumber")),
        image_type=image_type,
        rows=_int(ds.get("Rows")) or 0,
        cols=_int(ds.get("Columns")) or 0,
        samples=_int(ds.get("SamplesPerPixel")) or 1,
        bits_allocated=_int(ds.get("BitsAllocated")) or 0,
        bits_stored=_int(ds.get("BitsStored")) or _int(ds.get("BitsAllocated")) or 0,
        signed=_int(ds.get("PixelRepresentation")) == 1,
        transfer_syntax=tsyntax,
        pixel_offset=offset,
        pixel_length=length,
        file_size=size,
        little_endian=little,
        tilt=_float(ds.get("GantryDetectorTilt")),
        echo=_int(ds.get("EchoNumbers")),
    )
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        shared = ds.get("SharedFunctionalGroupsSequence")
        groups = [per_frame, shared[0] if shared else None]
        _check_groups(path, n_frames, per_frame, groups[1])
        out = []
        for f in range(n_frames):
            def get(seq: str, attr: str, f: int = f) -> Any:
                return _group_value(groups, f, seq, attr)

            out.append(FrameHeader(**_checked(path, dict(
                frame=f,
                position=_floats(get("PlanePositionSequence", "ImagePositionPatient"), 3),
                orientation=_floats(get("PlaneOrientationSequence", "ImageOrientationPatient"), 6),
                pixel_spacing=_floats(get("PixelMeasuresSequence", "PixelSpacing"), 2),
                slope=_float(get("PixelValueTransformationSequence", "RescaleSlope")) or 1.0,
                intercept=_float(get("PixelValueTransformationSequence", "RescaleIntercept")) or 0.0,
                thickness=_float(get("PixelMeasuresSequence", "SliceThickness")),
                spacing_between=_float(get("PixelMeasuresSequence", "SpacingBetweenSlices")),
            )), **common))
        return out
    single = n_frames == 1
    fields = _checked(path, dict(
        # classic multi-frame objects carry no per-frame geometry: leave it unknown
        position=_floats(ds.get("ImagePositionPatient"), 3) if single else None,
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),
        slope=_float(ds.get("RescaleSlope")) or 1.0,
        intercept=_float(ds.get("RescaleIntercept")) or 0.0,
        thickness=_float(ds.get("SliceThickness")),
        spacing_between=_float(ds.get("SpacingBetweenSlices")),
    ))
    if is_mosaic(image_type) and common["rows"]:
        return _mosaic_frames(path, ds, fields, common)
    return [FrameHeader(frame=f, **fields, **common) for f in range(n_frames)]


def _check_groups(path: Path, n_frames: int, per_frame: Any, shared: Any) -> None:
    """Refuse an enhanced file whose per-frame groups describe fewer frames than it declares.

    Frames without a per-frame item can only take their position from the shared
    groups, which is valid only when the shared groups hold one (all frames in one plane).
    """
    described = len(per_frame) if per_frame is not None else n_frames
    if described >= n_frames or (shared is not None and "PlanePositionSequence" in shared):
        return
    raise DicomError(
        f"{path}: declares {n_frames} frames (NumberOfFrames) but its per-frame functional "
        f"groups describe {described}, and the shared groups give no position: frames "
        f"{described + 1}..{n_frames} cannot be placed; the file is truncated or was edited: "
        "re-export it"
    )


def _mosaic_frames(path: Path, ds: Any, fields: dict[str, Any],
                   common: dict[str, Any]) -> list[FrameHeader]:
    """One frame per slice of a Siemens mosaic (see :mod:`medrecon.io.dicom_mosaic`)."""
    if not hasattr(ds, "private_block"):
        raise DicomError(f"{path}: a mosaic header must be read with pydicom")  # pragma: no cover
    if common["n_frames"] != 1:
        raise DicomError(f"{path}: a multi-frame Siemens mosaic ({common['n_frames']} frames) is "
                         "not supported; export the series as single-frame images")
    layout = mosaic_layout(ds, str(path), rows=common["rows"], cols=common["cols"],
                           little_endian=common["little_endian"])
    common = dict(common, rows=layout.tile_rows, cols=layout.tile_cols, mosaic=layout.grid)
    step = fields["spacing_between"] or fields["thickness"]
    positions: list[Any] = [None] * layout.count
    if fields["position"] and fields["orientation"] and fields["pixel_spacing"]:
        if step is None:
            raise DicomError(f"{path}: a Siemens mosaic without SpacingBetweenSlices or "
                             "SliceThickness: its slices cannot be placed; the file is incomplete")
        positions = tile_positions(layout, fields["position"], fields["orientation"],
                                   fields["pixel_spacing"], step)
    return [FrameHeader(frame=m, **dict(fields, position=pos), **common)
            for m, pos in enumerate(positions)]


#: SOP classes whose instances always carry pixel data (CT, MR, PET, NM, SC, SEG, RT dose).
_IMAGE_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4",
                  "1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130",
                  "1.2.840.10008.5.1.4.1.1.20", "1.2.840.10008.5.1.4.1.1.7",
                  "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.481.2")


def _incomplete(ds, *, no_pixels: bool = False) -> str:
    """Why a parsed header is unusable ("" when it is fine)."""
    if len(ds) == 0:
        return "no DICOM data elements after the file meta header"
    if no_pixels and "Rows" in ds:
        return (f"the header describes a {ds.get('Columns')}x{ds.get('Rows')} image but the file "
                "ends without its Pixel Data")
    meta = getattr(ds, "file_meta", None)
    sop = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    is_image = any(sop == c or sop.startswith(c + ".") for c in _IMAGE_CLASSES)
    if is_image and "Rows" not in ds:
        return "the header ends before the image description (Rows, Columns)"
    return ""


class NotDicomFile(DicomError):
    """The file is not DICOM at all (folder scans skip these silently)."""


def read_headers(path: str | os.PathLike) -> tuple[list[FrameHeader], Any]:
    """Parse one file's header; return its frames and the parsed header (no pixels).

    Ordinary single-frame images go through the fast flat parser of
    :mod:`medrecon.io.dicom_fast`; everything else through pydicom.

    Raises
    ------
    NotDicomFile
        If the file is not DICOM.
    DicomError
        If the file is corrupt or truncated inside its header.
    ResourceLimitError
        If it declares an image over the size limits.
    """
    from medrecon.io.dicom_fast import read_flat_header

    p = Path(path)
    flat = read_flat_header(str(p))
    if flat is not None and "Rows" in flat and not is_mosaic(
            [str(t).upper() for t in flat.get("ImageType") or ()]):  # mosaics need private tags
        try:
            size = p.stat().st_size
            return _headers(p, flat, flat.transfer_syntax, True, flat.pixel_offset,
                            flat.pixel_length, size), flat
        except OSError as exc:
            raise DicomError(f"{p} cannot be read: {exc.strerror or exc}") from exc
    if not looks_like_dicom(p):
        raise NotDicomFile(f"{p} is not a DICOM file (no DICM marker and no DICOM header)")
    return _read_with_pydicom(p)


def _read_with_pydicom(p: Path) -> tuple[list[FrameHeader], Any]:
    import pydicom
    from pydicom.errors import BytesLengthException, InvalidDicomError

    try:
        size = p.stat().st_size
        with open_capped(p, size) as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, force=True)
            tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            # pydicom stops before Pixel Data, or reads to the end when there is none
            no_pixels = fh.peek(1) == b"" and not (tsyntax is not None and tsyntax.is_deflated)
            offset, length = _pixel_element(fh, ds, tsyntax)
            problem = _incomplete(ds, no_pixels=no_pixels)
            if problem:
                raise DicomError(f"{p}: {problem}; the file is truncated or corrupt: "
                                 "re-export it or remove it from the folder")
            _implicit, little = getattr(ds, "original_encoding", (True, True))
            frames = _headers(p, ds, str(tsyntax or ""), little is not False, offset, length,
                              size)
    except (DicomError, ResourceLimitError):
        raise
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError,
            struct.error, AttributeError, IndexError, BytesLengthException, zlib.error,
            NotImplementedError) as exc:  # NotImplementedError: an unknown VR
        raise DicomError(
            f"{p} is not a readable DICOM file ({describe_error(exc)}); "
            "it may be truncated or corrupt: re-export it or remove it from the folder"
        ) from exc
    return frames, ds
