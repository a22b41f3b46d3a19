"""A fast reader for the flat header of an ordinary single-frame DICOM image.

pydicom parses every element into Python objects; for a 300-file CT series that
costs more than reading the pixels. Classic single-frame images keep every
geometry tag at the top level before Pixel Data, so this module walks the
elements of the first block of the file with :mod:`struct`, skips sequences
without parsing them, keeps the raw bytes of the tags
:mod:`medrecon.io.dicom_header` needs, and records where the pixel values start.

It handles the little-endian transfer syntaxes with a ``DICM`` preamble
(implicit and explicit VR, native or encapsulated pixel data). Anything else
(big endian, deflate, multi-frame functional groups, a header over
:data:`BLOCK` bytes, anything odd) returns ``None`` and the caller falls back
to pydicom, which stays the reference.
"""

from __future__ import annotations

import os
import struct
from typing import Any

BLOCK = 65536
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_VRS = _LONG_VRS | {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
    b"PN", b"SH", b"SL", b"SS", b"ST", b"SV", b"TM", b"UI", b"UL", b"US", b"UV",
}
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_IMPLICIT_LE, _EXPLICIT_LE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
_NOT_FLAT = "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"  # deflate, big endian
_FUNCTIONAL_GROUPS = {0x52009229, 0x52009230}

#: Tags read here: keyword -> (tag, kind); kind "US" is binary, "str" text, "multi" text list.
TAGS: dict[str, tuple[int, str]] = {
    "SOPClassUID": (0x00080016, "str"), "SOPInstanceUID": (0x00080018, "str"),
    "ImageType": (0x00080008, "multi"), "Modality": (0x00080060, "str"),
    "SeriesDescription": (0x0008103E, "str"), "SliceThickness": (0x00180050, "str"),
    "SpacingBetweenSlices": (0x00180088, "str"), "GantryDetectorTilt": (0x00181120, "str"),
    "EchoNumbers": (0x00180086, "str"),
    "SeriesInstanceUID": (0x0020000E, "str"), "SeriesNumber": (0x00200011, "str"),
    "InstanceNumber": (0x00200013, "str"), "ImagePositionPatient": (0x00200032, "multi"),
    "ImageOrientationPatient": (0x00200037, "multi"), "SamplesPerPixel": (0x00280002, "US"),
    "NumberOfFrames": (0x00280008, "str"), "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"), "PixelSpacing": (0x00280030, "multi"),
    "BitsAllocated": (0x00280100, "US"), "BitsStored": (0x00280101, "US"),
    "PixelRepresentation": (0x00280103, "US"), "RescaleIntercept": (0x00281052, "str"),
    "RescaleSlope": (0x00281053, "str"),
}
_BY_TAG = {tag: (kw, kind) for kw, (tag, kind) in TAGS.items()}


class _Odd(Exception):
    """The file is not of the simple kind this parser handles."""


class FlatHeader:
    """Decoded values of :data:`TAGS`, with a pydicom-like ``get``.

    Attributes
    ----------
    transfer_syntax : str
        Transfer syntax UID from the file meta group.
    implicit : bool
        Implicit VR encoding.
    pixel_offset, pixel_length : int
        Byte offset and length of the Pixel Data value (length -1 when undefined,
        i.e. encapsulated).
    """

    def __init__(self, raw: dict[int, bytes], tsyntax: str, implicit: bool,
                 offset: int, length: int) -> None:
        self._raw = raw
        self.transfer_syntax = tsyntax
        self.implicit = implicit
        self.pixel_offset = offset
        self.pixel_length = length

    def __contains__(self, keyword: str) -> bool:
        return keyword in TAGS and TAGS[keyword][0] in self._raw

    def get(self, keyword: str, default: Any = None) -> Any:
        """Value of ``keyword``: str, list of str, or int for binary US tags."""
        tag, kind = TAGS[keyword]
        data = self._raw.get(tag)
        if data is None:
            return default
        if kind == "US":
            return struct.unpack("<H", data[:2])[0] if len(data) >= 2 else default
        text = data.decode("latin-1").strip(" \x00")
        return [v.strip() for v in text.split("\\")] if kind == "multi" else text


def _element(buf: bytes, pos: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None, value length, value start) of the element at ``pos``."""
    if pos + 8 > len(buf):
        raise _Odd
    group, elem = struct.unpack_from("<HH", buf, pos)
    tag = group << 16 | elem
    if implicit or group == 0xFFFE:
        return tag, None, struct.unpack_from("<I", buf, pos + 4)[0], pos + 8
    vr = buf[pos + 4:pos + 6]
    if vr not in _VRS:
        raise _Odd  # not what explicit VR promises: let pydicom judge the file
    if vr in _LONG_VRS:
        if pos + 12 > len(buf):
            raise _Odd
        return tag, vr, struct.unpack_from("<I", buf, pos + 8)[0], pos + 12
    return tag, vr, struct.unpack_from("<H", buf, pos + 6)[0], pos + 8


def _skip_sequence(buf: bytes, pos: int, implicit: bool, depth: int = 0) -> int:
    """Skip the items of an undefined-length sequence starting at ``pos``; return the end."""
    if depth > 16:
        raise _Odd
    while True:
        tag, _vr, length, start = _element(buf, pos, True)
        if tag == _SEQ_END:
            return start
        if tag != _ITEM:
            raise _Odd
        if length != 0xFFFFFFFF:
            pos = start + length
            continue
        pos = start
        while True:  # elements of an undefined-length item
            tag, vr, length, start = _element(buf, pos, implicit)
            if tag == _ITEM_END:
                pos = start
                break
            if length == 0xFFFFFFFF:
                if vr is not None and vr != b"SQ":
                    raise _Odd
                pos = _skip_sequence(buf, start, implicit, depth + 1)
            else:
                pos = start + length


def read_flat_header(path: str) -> FlatHeader | None:
    """Parse the header of ``path`` if it is a simple single-frame image, else ``None``."""
    try:
        with open(path, "rb") as fh:
            buf = fh.read(BLOCK)
        if len(buf) < 144 or buf[128:132] != b"DICM":
            return None
        return _parse(buf)
    except (OSError, _Odd, struct.error, UnicodeDecodeError):
        return None


def _parse(buf: bytes) -> FlatHeader | None:
    pos, tsyntax = 132, ""
    while struct.unpack_from("<H", buf, pos)[0] == 0x0002:  # meta: explicit VR LE
        tag, _vr, length, start = _element(buf, pos, False)
        if tag == 0x00020010:
            tsyntax = buf[start:start + length].decode("ascii").strip(" \x00")
        pos = start + length
    if not tsyntax or tsyntax in _NOT_FLAT or not tsyntax.startswith("1.2.840.10008.1.2"):
        return None
    implicit = tsyntax == _IMPLICIT_LE
    raw: dict[int, bytes] = {}
    while True:
        tag, vr, length, start = _element(buf, pos, implicit)
        if tag == _PIXEL_DATA:
            if length == 0xFFFFFFFF:
                return FlatHeader(raw, tsyntax, implicit, -1, -1)
            return FlatHeader(raw, tsyntax, implicit, start, length)
        if tag in _FUNCTIONAL_GROUPS or tag > _PIXEL_DATA:
            return None
        if length == 0xFFFFFFFF:
            if vr is not None and vr != b"SQ":
                return None  # e.g. UN of undefined length: leave it to pydicom
            pos = _skip_sequence(buf, start, implicit)
            continue
        if tag in _BY_TAG:
            if start + length > len(buf):
                return None
            raw[tag] = buf[start:start + length]
        pos = start + length
        if tag == 0x00280008 and raw[tag].strip(b" \x00") not in (b"", b"1"):
            return None  # multi-frame: per-frame geometry needs pydicom


def _deflated_start(head: bytes) -> int | None:
    """Offset of the data set when the file meta declares Deflated Explicit VR Little Endian."""
    if len(head) < 144 or head[128:132] != b"DICM":
        return None
    pos, deflated = 132, False
    while pos + 8 <= len(head) and struct.unpack_from("<H", head, pos)[0] == 0x0002:
        tag, _vr, length, start = _element(head, pos, False)
        if tag == 0x00020010:
            deflated = head[start:start + length].rstrip(b"\0 ") == _NOT_FLAT[0].encode()
        pos = start + length
    return pos if deflated else None


def check_deflated(path: str | os.PathLike) -> None:
    """Refuse a deflated data set that inflates past ``MEDRECON_MAX_BYTES``.

    pydicom inflates a deflated data set whole, before any size in it can be
    checked; here the stream is inflated in bounded steps and discarded, so a
    "zip bomb" costs time up to the limit but no memory.

    Raises
    ------
    ResourceLimitError
        If the data set inflates to more than the byte limit.
    InputError
        If the deflate stream is corrupt.
    """
    from medrecon.errors import ResourceLimitError
    from medrecon.io._stream import Inflater
    from medrecon.io.limits import ENV_MAX_BYTES, current_limits

    with open(path, "rb") as fh:
        try:
            start = _deflated_start(fh.read(BLOCK))
        except (_Odd, struct.error):
            return  # an odd meta group: pydicom judges the file
        if start is None:
            return
        fh.seek(start)
        # one raw deflate stream; bytes after its end (some writers leave a gzip trailer) are ignored
        reader, scratch = Inflater(fh, wbits=-15, multi_member=False), bytearray(1 << 20)
        total, limit = 0, current_limits().max_bytes
        while True:
            got = reader.readinto(scratch)
            total += got
            if total > limit:
                raise ResourceLimitError(
                    f"{path}: the deflated data set inflates to more than {limit:,} bytes, over the "
                    f"limit; if the file is genuine, raise {ENV_MAX_BYTES} (e.g. {ENV_MAX_BYTES}=32G)"
                )
            if got < len(scratch):
                return
