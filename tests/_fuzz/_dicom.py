"""Mutations of DICOM series: each takes the copied files and a seeded RNG, edits them in place.

Two kinds of edit: through pydicom (well-formed files with hostile *values*:
absurd sizes, NaN spacing, degenerate orientations) and on raw bytes (bit flips,
truncation, a tag's VR or length rewritten, the transfer syntax swapped), which
produce files that are not well formed at all.
"""

from __future__ import annotations

import random
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_SHORT_VRS = [b"US", b"DS", b"IS", b"CS", b"UI", b"SS", b"FL", b"AT", b"LO"]

# (group, element) of tags worth corrupting at byte level
_RAW_TAGS = {
    "Rows": (0x0028, 0x0010), "Columns": (0x0028, 0x0011), "PixelSpacing": (0x0028, 0x0030),
    "BitsAllocated": (0x0028, 0x0100), "ImagePositionPatient": (0x0020, 0x0032),
    "ImageOrientationPatient": (0x0020, 0x0037), "RescaleSlope": (0x0028, 0x1053),
    "SeriesInstanceUID": (0x0020, 0x000E), "PixelData": (0x7FE0, 0x0010),
    "SamplesPerPixel": (0x0028, 0x0002), "PixelRepresentation": (0x0028, 0x0103),
}

_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.80", "1.2.3.4.5", "", "garbage\x00\x01",
]

# keyword -> candidate hostile values (strings are written as the DS/IS text itself)
_VALUES: dict[str, list] = {
    "Rows": [0, 1, 2, 255, 257, 1024, 4096, 65535],
    "Columns": [0, 1, 3, 511, 513, 8192, 65535],
    "NumberOfFrames": ["0", "-1", "2", "3", "1000000", "x", "2.5", "99999999999"],
    "PixelSpacing": [["nan", "nan"], ["inf", "1"], ["0", "0"], ["-1", "-1"], ["1"],
                     ["1e308", "1e308"], ["1e-300", "1e-300"], ["-inf", "0.5"], ["a", "b"]],
    "ImagePositionPatient": [["nan", "0", "0"], ["inf", "inf", "inf"], ["1e300", "0", "1e300"],
                             ["1", "2"], ["0", "0", "0"], ["-1e6", "3", "7"], ["x", "y", "z"]],
    "ImageOrientationPatient": [["0"] * 6, ["nan"] * 6, ["1", "0", "0", "1", "0", "0"],
                                ["2", "0", "0", "0", "2", "0"], ["1", "0", "0", "0", "1"],
                                ["1", "0", "0", "0", "0", "0"], ["0.7", "0.7", "0", "0", "1", "1e-4"],
                                ["inf", "0", "0", "0", "1", "0"], ["1e308"] * 6],
    "SliceThickness": ["0", "-2", "nan", "inf", "1e308"],
    "SpacingBetweenSlices": ["0", "-2", "nan", "1e-300"],
    "RescaleSlope": ["nan", "inf", "0", "1e38", "-1", "1e308", "x"],
    "RescaleIntercept": ["nan", "-inf", "abc", "1e308"],
    "BitsAllocated": [0, 1, 7, 8, 12, 24, 32, 64, 65535],
    "BitsStored": [0, 1, 17, 64, 65535],
    "HighBit": [0, 64, 65535],
    "PixelRepresentation": [2, 65535],
    "SamplesPerPixel": [0, 2, 3, 4, 65535],
    "PhotometricInterpretation": ["RGB", "PALETTE COLOR", "YBR_FULL", "", "MONOCHROME1"],
    "GantryDetectorTilt": ["nan", "90", "-45", "1e308"],
    "EchoNumbers": ["1", "2", "x"],
}


def _read(path: Path):
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


def _write(ds, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=False)


def _set_raw(ds, keyword: str, value) -> None:
    """Store ``value`` as the element's encoded bytes, bypassing pydicom's value checks."""
    from pydicom.datadict import dictionary_VR
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag(keyword)
    vr = dictionary_VR(tag)
    if vr == "US":
        raw = struct.pack("<H", int(value) & 0xFFFF)
    else:
        text = "\\".join(value) if isinstance(value, list) else str(value)
        raw = text.encode("latin-1")
        raw += b" " * (len(raw) % 2)
    implicit, little = getattr(ds, "original_encoding", (False, True))
    if vr == "US" and little is False:
        raw = raw[::-1]
    ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, bool(implicit), little is not False)


def _targets(files: list[Path], rng: random.Random, all_prob: float) -> list[Path]:
    return list(files) if rng.random() < all_prob else [rng.choice(files)]


def flip_bits(files: list[Path], rng: random.Random) -> str:
    """Flip 1-16 random bits of one file, mostly in its header."""
    path = rng.choice(files)
    data = bytearray(path.read_bytes())
    region = min(len(data), 4096) if rng.random() < 0.75 else len(data)
    n = rng.randint(1, 16)
    for _ in range(n):
        pos = rng.randrange(region)
        data[pos] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return f"{n} bits flipped in {path.name} (first {region} bytes)"


def truncate(files: list[Path], rng: random.Random) -> str:
    """Cut one file at a random offset."""
    path = rng.choice(files)
    data = path.read_bytes()
    cut = rng.randrange(len(data))
    path.write_bytes(data[:cut])
    return f"{path.name} cut at {cut} of {len(data)} bytes"


def set_value(files: list[Path], rng: random.Random) -> str:
    """Give a geometry, size or pixel-format tag a hostile value (one file or all)."""
    keyword = rng.choice(sorted(_VALUES))
    value = rng.choice(_VALUES[keyword])
    targets = _targets(files, rng, 0.4)
    delete = rng.random() < 0.1
    for path in targets:
        ds = _read(path)
        if delete:
            if keyword in ds:
                del ds[keyword]
        else:
            _set_raw(ds, keyword, value)
        _write(ds, path)
    return f"{keyword}={'<deleted>' if delete else value!r} in {len(targets)} file(s)"


def pixel_length(files: list[Path], rng: random.Random) -> str:
    """Make the pixel data shorter (or longer) than the header declares."""
    targets = _targets(files, rng, 0.3)
    how = rng.choice(["half", "minus_one", "empty", "plus", "one_byte"])
    for path in targets:
        ds = _read(path)
        compressed = ds.file_meta.TransferSyntaxUID.is_compressed
        if compressed:
            from pydicom.encaps import encapsulate, generate_frames

            data = next(generate_frames(ds.PixelData, number_of_frames=1))
        else:
            data = bytes(ds.PixelData)
        data = {"half": data[: len(data) // 2], "minus_one": data[:-2], "empty": b"",
                "plus": data + b"\0" * 512, "one_byte": data[:2]}[how]
        ds.PixelData = encapsulate([data or b"\0\0"]) if compressed else data
        _write(ds, path)
    return f"pixel data {how} in {len(targets)} file(s)"


def series_mix(files: list[Path], rng: random.Random) -> str:
    """Split the series (new SeriesInstanceUID) or duplicate SOP instances / positions."""
    how = rng.choice(["new_series", "same_sop", "same_position", "other_modality"])
    path, other = rng.choice(files), rng.choice(files)
    ds, ref = _read(path), _read(other)
    if how == "new_series":
        ds.SeriesInstanceUID = "1.2.3.999." + str(rng.randrange(10**6))
    elif how == "same_sop":
        ds.SOPInstanceUID = ref.SOPInstanceUID
    elif how == "same_position":
        ds.ImagePositionPatient = ref.get("ImagePositionPatient", ["0", "0", "0"])
    else:
        ds.Modality = rng.choice(["MR", "SEG", "", "XX"])
    _write(ds, path)
    return f"{how}: {path.name} vs {other.name}"


def _find(data: bytes, tag: tuple[int, int], start: int) -> int:
    return data.find(struct.pack("<HH", *tag), start)


def _meta_end(data: bytes) -> int:
    if data[128:132] != b"DICM":
        return 0
    pos = 132
    while pos + 8 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        vr = bytes(data[pos + 4:pos + 6])
        if vr in _LONG_VRS:
            pos += 12 + struct.unpack_from("<I", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return pos


def _explicit(data: bytes, at: int) -> bool:
    vr = bytes(data[at + 4:at + 6])
    return vr.isalpha() and vr.isupper()


def raw_vr(files: list[Path], rng: random.Random, *, tags: dict | None = None) -> str:
    """Rewrite the VR bytes of one element (explicit VR files) or its length (implicit)."""
    tags = tags or _RAW_TAGS
    path = rng.choice(files)
    data = bytearray(path.read_bytes())
    name = rng.choice(sorted(tags))
    at = _find(data, tags[name], _meta_end(data))
    if at < 0:
        return f"{name} not found in {path.name}: unchanged"
    if not _explicit(data, at):
        return raw_length(files, rng, path=path, name=name, tags=tags)
    new = rng.choice(_SHORT_VRS + sorted(_LONG_VRS))
    old = bytes(data[at + 4:at + 6])
    data[at + 4:at + 6] = new
    path.write_bytes(bytes(data))
    return f"{name} VR {old!r} -> {new!r} in {path.name}"


def raw_length(files: list[Path], rng: random.Random, *, path: Path | None = None,
               name: str | None = None, tags: dict | None = None) -> str:
    """Rewrite the value length of one element (from ``tags``, default image tags) to a wrong value."""
    tags = tags or _RAW_TAGS
    path = path or rng.choice(files)
    name = name or rng.choice(sorted(tags))
    data = bytearray(path.read_bytes())
    at = _find(data, tags[name], _meta_end(data))
    if at < 0:
        return f"{name} not found in {path.name}: unchanged"
    if _explicit(data, at) and bytes(data[at + 4:at + 6]) not in _LONG_VRS:
        old = struct.unpack_from("<H", data, at + 6)[0]
        new = rng.choice([0, 1, old + 1, max(0, old - 1), 0xFFFF, old * 7 & 0xFFFF])
        struct.pack_into("<H", data, at + 6, new)
    else:
        off = at + 8 if _explicit(data, at) else at + 4
        old = struct.unpack_from("<I", data, off)[0]
        new = rng.choice([0, 1, (old + 1) & 0xFFFFFFFF, max(0, old - 1), 0xFFFFFFFF,
                          0x7FFFFFFF, old // 3])
        struct.pack_into("<I", data, off, new)
    path.write_bytes(bytes(data))
    return f"{name} length {old} -> {new} in {path.name}"


def transfer_syntax(files: list[Path], rng: random.Random) -> str:
    """Declare another transfer syntax than the data is encoded in (file meta rewritten)."""
    uid = rng.choice(_TRANSFER_SYNTAXES)
    targets = _targets(files, rng, 0.5)
    for path in targets:
        data = path.read_bytes()
        end = _meta_end(data)
        at = _find(data, (0x0002, 0x0010), 132)
        if end == 0 or at < 0 or at > end:
            continue
        old_len = struct.unpack_from("<H", data, at + 6)[0]
        value = uid.encode("latin-1")
        value += b"\0" * (len(value) % 2)
        element = data[at:at + 6] + struct.pack("<H", len(value)) + value
        out = bytearray(data[:at] + element + data[at + 8 + old_len:])
        group = _find(out, (0x0002, 0x0000), 132)
        if group == 132:  # keep the meta group length consistent, as a writer would
            total = struct.unpack_from("<I", out, group + 8)[0] + len(value) - old_len
            struct.pack_into("<I", out, group + 8, total)
        path.write_bytes(bytes(out))
    return f"transfer syntax -> {uid!r} in {len(targets)} file(s)"


MUTATIONS: dict[str, Callable[[list[Path], random.Random], str]] = {
    "flip_bits": flip_bits,
    "truncate": truncate,
    "set_value": set_value,
    "pixel_length": pixel_length,
    "series_mix": series_mix,
    "raw_vr": raw_vr,
    "raw_length": raw_length,
    "transfer_syntax": transfer_syntax,
}

#: How often each mutation is drawn (value edits cover many tags, so they weigh more).
WEIGHTS = {"flip_bits": 3, "truncate": 2, "set_value": 6, "pixel_length": 1, "series_mix": 1,
           "raw_vr": 2, "raw_length": 2, "transfer_syntax": 1}


def declared_sizes(folder: Path) -> set[tuple[int, int]]:
    """(Columns, Rows) pairs the headers under ``folder`` declare, as pydicom reads them."""
    sizes = set()
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        try:
            import pydicom

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
            sizes.add((int(ds.Columns), int(ds.Rows)))
        except Exception:  # noqa: BLE001, S112 - a header pydicom cannot read declares nothing
            continue
    return sizes
