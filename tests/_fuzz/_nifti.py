"""Mutations of a NIfTI-1 file: header fields, bit flips, truncation, gzip bombs.

A mutation takes the uncompressed file bytes and a seeded RNG and returns new
bytes plus a description; :func:`write_case` then stores them as ``.nii`` or
``.nii.gz`` (and may flip bits of, or cut, the compressed stream itself).
"""

from __future__ import annotations

import gzip
import random
import struct
from pathlib import Path

# NIfTI-1 header offsets (little endian here; the source file is little endian)
DIM, DATATYPE, BITPIX, PIXDIM, VOX_OFFSET = 40, 70, 72, 76, 108
SCL_SLOPE, SCL_INTER, XYZT_UNITS = 112, 116, 123
QFORM_CODE, SFORM_CODE, QUATERN, QOFFSET, SROW, MAGIC = 252, 254, 256, 268, 280, 344

_FLOATS = [float("nan"), float("inf"), float("-inf"), 0.0, -1.0, 1e-30, 1e30, 3.4e38, -0.0]


def _f32(data: bytearray, off: int, value: float) -> None:
    struct.pack_into("<f", data, off, value)


def dims(data: bytearray, rng: random.Random) -> str:
    which = rng.randrange(8)
    value = rng.choice([0, -1, -32768, 1, 2, 3, 4, 5, 7, 8, 9, 32767, 1000])
    struct.pack_into("<h", data, DIM + 2 * which, value)
    return f"dim[{which}]={value}"


def datatype(data: bytearray, rng: random.Random) -> str:
    code = rng.choice([0, 1, 2, 4, 8, 16, 32, 64, 128, 255, 256, 512, 768, 1024, 1280, 1536,
                       1792, 2048, 2304, 7, -1])
    struct.pack_into("<h", data, DATATYPE, code)
    if rng.random() < 0.5:
        struct.pack_into("<h", data, BITPIX, rng.choice([0, 1, 8, 16, 64, 128, -8]))
    return f"datatype={code}"


def pixdim(data: bytearray, rng: random.Random) -> str:
    which = rng.randrange(8)
    value = rng.choice(_FLOATS)
    _f32(data, PIXDIM + 4 * which, value)
    # without an sform the pixdims make the affine: drop it sometimes so they matter
    if rng.random() < 0.6:
        struct.pack_into("<h", data, SFORM_CODE, 0)
    return f"pixdim[{which}]={value}"


def vox_offset(data: bytearray, rng: random.Random) -> str:
    value = rng.choice([float("nan"), float("inf"), -1.0, 0.0, 100.0, 351.0, 353.0, 1e12,
                        float(len(data)), float(len(data) - 10), 64 * 1024**2 + 1.0])
    _f32(data, VOX_OFFSET, value)
    return f"vox_offset={value}"


def scaling(data: bytearray, rng: random.Random) -> str:
    slope, inter = rng.choice(_FLOATS + [2.0]), rng.choice(_FLOATS + [-1024.0])
    _f32(data, SCL_SLOPE, slope)
    _f32(data, SCL_INTER, inter)
    return f"scl_slope={slope} scl_inter={inter}"


def codes(data: bytearray, rng: random.Random) -> str:
    q, s = rng.choice([0, 1, 2, 5, -1, 32767]), rng.choice([0, 1, 3, 4, -7, 32767])
    struct.pack_into("<hh", data, QFORM_CODE, q, s)
    data[XYZT_UNITS] = rng.choice([0, 1, 2, 3, 7, 8, 255])
    return f"qform_code={q} sform_code={s} xyzt_units={data[XYZT_UNITS]}"


def quatern(data: bytearray, rng: random.Random) -> str:
    struct.pack_into("<hh", data, QFORM_CODE, 1, 0)  # make the qform the one in use
    values = [rng.choice(_FLOATS + [0.5, 0.9, 1.0]) for _ in range(3)]
    for n, v in enumerate(values):
        _f32(data, QUATERN + 4 * n, v)
    if rng.random() < 0.3:
        _f32(data, QOFFSET + 4 * rng.randrange(3), rng.choice(_FLOATS))
    return f"quatern_bcd={values}"


def srow(data: bytearray, rng: random.Random) -> str:
    struct.pack_into("<h", data, SFORM_CODE, rng.choice([1, 2, 4]))
    how = rng.choice(["one", "row_zero", "singular", "all_zero"])
    if how == "one":
        off = SROW + 4 * rng.randrange(12)
        _f32(data, off, rng.choice(_FLOATS))
    elif how == "row_zero":
        row = rng.randrange(3)
        struct.pack_into("<4f", data, SROW + 16 * row, 0.0, 0.0, 0.0, 5.0)
    elif how == "singular":  # third row a copy of the first: rank 2
        data[SROW + 32:SROW + 48] = data[SROW:SROW + 16]
    else:
        data[SROW:SROW + 48] = bytes(48)
    return f"srow {how}"


def header_magic(data: bytearray, rng: random.Random) -> str:
    how = rng.choice(["magic", "ni1", "sizeof", "swap_sizeof", "extension"])
    if how == "magic":
        data[MAGIC:MAGIC + 4] = rng.choice([b"n+2\0", b"\0\0\0\0", b"abcd"])
    elif how == "ni1":
        data[MAGIC:MAGIC + 4] = b"ni1\0"
    elif how == "sizeof":
        struct.pack_into("<i", data, 0, rng.choice([0, 347, 349, 540, -348]))
    elif how == "swap_sizeof":
        struct.pack_into(">i", data, 0, 348)  # claims big endian: every field reads swapped
    else:  # extension flag set: an extension header of random size follows
        data[348:352] = b"\1\0\0\0"
        struct.pack_into("<ii", data, 352, rng.choice([0, 8, 16, 1 << 30, -16]), 6)
    return f"header {how}"


def flip_bits(data: bytearray, rng: random.Random) -> str:
    region = 352 if rng.random() < 0.7 else len(data)
    n = rng.randint(1, 16)
    for _ in range(n):
        data[rng.randrange(region)] ^= 1 << rng.randrange(8)
    return f"{n} bits flipped in the first {region} bytes"


def truncate(data: bytearray, rng: random.Random) -> str:
    cut = rng.randrange(len(data))
    del data[cut:]
    return f"cut at {cut}"


def append(data: bytearray, rng: random.Random) -> str:
    extra = rng.choice([1, 1000, 1 << 20])
    data.extend(bytes(extra))
    return f"{extra} bytes appended"


MUTATIONS = {
    "dims": dims, "datatype": datatype, "pixdim": pixdim, "vox_offset": vox_offset,
    "scaling": scaling, "codes": codes, "quatern": quatern, "srow": srow,
    "header_magic": header_magic, "flip_bits": flip_bits, "truncate": truncate, "append": append,
}
WEIGHTS = {name: 1 for name in MUTATIONS} | {"dims": 2, "flip_bits": 3, "truncate": 2, "srow": 2}


def write_case(raw: bytes, mutation: str, rng: random.Random, folder: Path) -> tuple[Path, str]:
    """Apply ``mutation`` to the uncompressed NIfTI ``raw`` and write the case file."""
    data = bytearray(raw)
    what = MUTATIONS[mutation](data, rng)
    if rng.random() < 0.5:
        path = folder / "case.nii"
        path.write_bytes(bytes(data))
        return path, what + " (.nii)"
    stream = gzip.compress(bytes(data), compresslevel=1, mtime=0)
    if rng.random() < 0.2:  # damage the compressed stream itself
        stream = bytearray(stream)
        if rng.random() < 0.5:
            for _ in range(rng.randint(1, 8)):
                stream[rng.randrange(len(stream))] ^= 1 << rng.randrange(8)
            what += " + gzip bits flipped"
        else:
            del stream[rng.randrange(len(stream)):]
            what += " + gzip stream cut"
        stream = bytes(stream)
    path = folder / "case.nii.gz"
    path.write_bytes(stream)
    return path, what + " (.nii.gz)"


def declared_shape(path: Path) -> tuple[int, ...] | None:
    """Spatial shape the (possibly mutated) header declares, or None if unreadable."""
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as fh:
            head = fh.read(348)
        for end in "<>":
            if struct.unpack(end + "i", head[:4])[0] == 348:
                dim = struct.unpack(end + "8h", head[DIM:DIM + 16])
                return tuple((list(dim[1:dim[0] + 1]) + [1, 1, 1])[:3])
    except Exception:  # noqa: BLE001 - damaged stream: nothing declared
        return None
    return None
