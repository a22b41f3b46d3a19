"""NRRD reading and writing (``.nrrd`` and detached ``.nhdr``; 3D Slicer's format).

Arrays are (i, j, k), the NRRD axis order (first axis fastest). The affine maps
voxel indices to **LPS** millimetres: columns are the ``space directions`` of
the three spatial axes and the translation is ``space origin``, converted from
the file's ``space`` (LPS, RAS or LAS) at this edge.

Headers are parsed by pynrrd; voxel data is read here, after the declared
size has passed :func:`medrecon.io.limits.check_alloc`, and never beyond that
size (see :mod:`medrecon.io._stream`).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medrecon.atomic import atomic_path
from medrecon.errors import GeometryError, InputError, UnsupportedFormatError
from medrecon.io._stream import (
    AUTO,
    Inflater,
    detached_data,
    open_input,
    read_exact,
    skip,
    to_native,
)
from medrecon.io.formats import IMAGE_FORMATS
from medrecon.io.limits import check_alloc
from medrecon.volume import check_affine

# NRRD type names (teem's nrrd format spec, section "type") -> numpy type.
_TYPES: dict[str, str] = {}
for _np, _names in {
    "i1": ("signed char", "int8", "int8_t"),
    "u1": ("uchar", "unsigned char", "uint8", "uint8_t"),
    "i2": ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
    "u2": ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    "i4": ("int", "signed int", "int32", "int32_t"),
    "u4": ("uint", "unsigned int", "uint32", "uint32_t"),
    "i8": ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t"),
    "u8": ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"),
    "f4": ("float",),
    "f8": ("double",),
}.items():
    _TYPES.update(dict.fromkeys(_names, _np))

# Sign flips taking each supported NRRD space to LPS.
_SPACES = {
    "left-posterior-superior": (1.0, 1.0, 1.0),
    "lps": (1.0, 1.0, 1.0),
    "right-anterior-superior": (-1.0, -1.0, 1.0),
    "ras": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (1.0, -1.0, 1.0),
    "las": (1.0, -1.0, 1.0),
}
_SPATIAL_KINDS = {"domain", "space"}
_UNITS = {"mm": 1.0, "millimeter": 1.0, "millimeters": 1.0, "m": 1000.0, "cm": 10.0, "um": 1e-3, "µm": 1e-3, "": 1.0}
_SEGMENT = re.compile(r"^Segment(\d+)_(Name|LabelValue|Layer)$")


def _field(header: dict, *names: str, default: Any = None) -> Any:
    for name in names:
        if name in header:
            return header[name]
    return default


def _read_header(fh: Any, path: Path) -> dict:
    import nrrd
    from nrrd.errors import NRRDError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicate/unknown fields
            return dict(nrrd.read_header(fh))
    except (NRRDError, UnicodeDecodeError, ValueError, TypeError, IndexError) as exc:
        # pynrrd quotes the bad line: escape its control characters
        text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(exc))
        raise InputError(f"{path}: not a readable NRRD header ({text[:300]})") from exc


def _spatial_axes(header: dict, sizes: list[int], directions: np.ndarray | None, path: Path) -> list[int]:
    kinds = header.get("kinds")
    if kinds is not None and len(kinds) != len(sizes):
        raise InputError(f"{path}: {len(kinds)} kinds for {len(sizes)} axes; the header is corrupt")
    spatial = []
    for axis, size in enumerate(sizes):
        if kinds is not None:
            is_space = str(kinds[axis]).lower() in _SPATIAL_KINDS or (
                str(kinds[axis]).lower() == "none" and directions is not None and np.all(np.isfinite(directions[axis]))
            )
        elif directions is not None:
            is_space = bool(np.all(np.isfinite(directions[axis])))
        else:
            is_space = True
        if is_space:
            spatial.append(axis)
        elif size > 1:
            kind = kinds[axis] if kinds is not None else "non-spatial"
            raise InputError(
                f"{path}: axis {axis} is a {kind} axis of {size} components (sizes {sizes}); medrecon "
                "reads scalar 3D images and label maps: for a Slicer segmentation with overlapping "
                "segments, export it as a label map first"
            )
    if not 2 <= len(spatial) <= 3:
        raise InputError(f"{path}: {len(spatial)} spatial axes (sizes {sizes}); medrecon reads 3D images")
    return spatial


def _affine(header: dict, spatial: list[int], directions: np.ndarray | None, path: Path) -> tuple[np.ndarray, str]:
    space = header.get("space")
    if space is not None:
        flips = _SPACES.get(str(space).lower())
        if flips is None:
            raise UnsupportedFormatError(
                f"{path}: NRRD space {space!r} is not supported; medrecon reads "
                "left-posterior-superior, right-anterior-superior and left-anterior-superior"
            )
        frame = str(space).lower()
    else:
        if directions is not None and directions.shape[1] != 3:
            raise UnsupportedFormatError(f"{path}: a {directions.shape[1]}-dimensional space is not supported")
        flips, frame = (1.0, 1.0, 1.0), ""
    units = header.get("space units")
    scale = 1.0
    if units is not None:
        factors = {_UNITS.get(str(u).strip().lower()) for u in units}
        if None in factors or len(factors) != 1:
            raise UnsupportedFormatError(f"{path}: space units {list(units)} are not supported (use mm)")
        scale = factors.pop()
    affine = np.eye(4)
    if directions is not None:
        cols = np.asarray(directions, dtype=np.float64)[spatial].T
        if cols.shape[0] != 3:
            raise UnsupportedFormatError(f"{path}: a {cols.shape[0]}-dimensional space is not supported")
        source = "space directions"
    else:
        spacings = header.get("spacings")
        steps = np.ones(len(spatial)) if spacings is None else np.asarray(spacings, dtype=np.float64)[spatial]
        if not np.all(np.isfinite(steps)) or np.any(steps <= 0):
            raise GeometryError(f"{path}: spacings {list(steps)} must be positive and finite")
        cols = np.zeros((3, len(spatial)))
        cols[np.arange(len(spatial)), np.arange(len(spatial))] = steps
        source = "spacings"
        warnings.warn(
            f"{path}: no 'space directions'; using the spacings with axes along the "
            f"{frame or 'LPS'} axes: orientation in the scanner is unknown",
            UserWarning,
            stacklevel=4,
        )
    affine[:3, : cols.shape[1]] = cols
    if cols.shape[1] == 2:  # a single slice: k is a 1 mm step along the slice normal
        normal = np.cross(cols[:, 0], cols[:, 1])
        affine[:3, 2] = normal / max(float(np.linalg.norm(normal)), 1e-12)
    origin = header.get("space origin")
    if origin is not None:
        origin = np.asarray(origin, dtype=np.float64)
        if origin.shape != (3,):
            raise GeometryError(f"{path}: space origin {origin.tolist()} must have 3 coordinates")
        affine[:3, 3] = origin
    affine[:3] *= scale
    affine[:3] *= np.asarray(flips)[:, None]
    return check_affine(affine), source


def _names(header: dict) -> dict[int, str]:
    segments: dict[int, dict[str, str]] = {}
    for key, value in header.items():
        match = _SEGMENT.match(str(key))
        if match:
            segments.setdefault(int(match.group(1)), {})[match.group(2)] = str(value)
    names: dict[int, str] = {}
    for index, seg in sorted(segments.items()):
        if "Name" not in seg:
            continue
        try:
            label = int(seg.get("LabelValue", index + 1))
        except ValueError:
            continue
        names[label] = seg["Name"]
    return names


def _data_source(header: dict, path: Path, fh: Any):
    datafile = _field(header, "data file", "datafile")
    if datafile is None:
        return fh, None
    target = detached_data(path, str(datafile), resave="re-save it as a single .nrrd file (e.g. in 3D Slicer)")
    return open_input(target), target


def _read_data(header: dict, fh: Any, nbytes: int, dtype: np.dtype, path: Path) -> np.ndarray:
    encoding = str(header["encoding"]).lower()
    line_skip = int(_field(header, "line skip", "lineskip", default=0))
    byte_skip = int(_field(header, "byte skip", "byteskip", default=0))
    if line_skip < 0 or byte_skip < -1:
        raise InputError(f"{path}: invalid line skip {line_skip} / byte skip {byte_skip}")
    for _ in range(line_skip):
        if not fh.readline(1 << 16):
            raise InputError(f"{path}: file ends within the {line_skip} lines to skip; it is truncated")
    if encoding == "raw":
        size = os.fstat(fh.fileno()).st_size
        start = size - nbytes if byte_skip == -1 else fh.tell() + byte_skip
        if start < 0 or start + nbytes > size:
            raise InputError(
                f"{path}: the header declares {nbytes} bytes of voxel data but the file holds "
                f"{max(size - max(start, 0), 0)} after the header; the file is truncated"
            )
        fh.seek(start)
        return read_exact(fh, nbytes, "voxel data", path)
    if encoding in ("gzip", "gz", "bzip2", "bz2"):
        if byte_skip == -1:
            raise UnsupportedFormatError(f"{path}: 'byte skip: -1' with {encoding} encoding is not supported")
        reader = Inflater(fh, wbits=AUTO, bzip2=encoding.startswith("bz"))
        skip(reader, byte_skip, "skipped bytes", path)
        return read_exact(reader, nbytes, "voxel data", path)
    if encoding in ("ascii", "text", "txt"):
        count = nbytes // dtype.itemsize
        text = fh.read(count * 64 + 4096)  # bounded: no number needs 64 characters
        try:
            values = np.array(text.split()[:count], dtype=np.float64)
        except ValueError:
            # not the numpy message: it quotes the whole offending token, binary included
            raise InputError(f"{path}: ASCII voxel data holds something that is not a number; "
                             "the encoding field is wrong or the file is corrupt") from None
        if values.size < count:
            raise InputError(f"{path}: {values.size} of {count} declared ASCII values; the file is truncated")
        return values.astype(dtype.newbyteorder("=")).view(np.uint8)
    raise UnsupportedFormatError(f"{path}: NRRD encoding {encoding!r} is not supported (raw, gzip, bzip2, ascii)")


def read_nrrd(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a 3D NRRD image or label map (``.nrrd``, or ``.nhdr`` + data file).

    Parameters
    ----------
    path : path-like
        The ``.nrrd`` file or the detached ``.nhdr`` header.

    Returns
    -------
    array : (I, J, K) ndarray
        Voxels in the stored type, (i, j, k) order (Fortran-contiguous).
        Singleton non-spatial axes are dropped; 2D images get a k axis.
    affine : (4, 4) ndarray of float64
        Voxel index to LPS millimetres.
    meta : dict
        ``format``, ``space``, ``encoding``, ``affine_source`` (``"space
        directions"`` or ``"spacings"``), ``description`` (``content``) and,
        for 3D Slicer segmentations, ``names`` ({label value: segment name}).

    Raises
    ------
    InputError
        Not NRRD, truncated or corrupt, or a vector/list axis (several components).
    ResourceLimitError
        The declared array exceeds :mod:`medrecon.io.limits` (checked before reading).
    GeometryError
        Non-finite, zero or singular geometry.
    UnsupportedFormatError
        An unsupported space, encoding, type or multi-file data.
    """
    p = Path(path)
    with open_input(p) as fh:
        header = _read_header(fh, p)
        for required in ("dimension", "type", "encoding", "sizes"):
            if required not in header:
                raise InputError(f"{p}: NRRD header lacks the required field '{required}'")
        sizes = [int(s) for s in np.atleast_1d(header["sizes"])]
        if int(header["dimension"]) != len(sizes):
            raise InputError(f"{p}: dimension {header['dimension']} does not match sizes {sizes}")
        kind = _TYPES.get(str(header["type"]).strip().lower())
        if kind is None:
            raise UnsupportedFormatError(f"{p}: NRRD type {header['type']!r} is not a supported scalar type")
        dtype = np.dtype(kind)
        if dtype.itemsize > 1 and str(header["encoding"]).lower() not in ("ascii", "text", "txt"):
            endian = str(header.get("endian", "")).lower()
            if endian not in ("little", "big"):
                raise InputError(f"{p}: NRRD header lacks a valid 'endian' field for type {header['type']}")
            dtype = dtype.newbyteorder("<" if endian == "little" else ">")
        nbytes = check_alloc(sizes, dtype, str(p))
        directions = header.get("space directions")
        directions = None if directions is None else np.asarray(directions, dtype=np.float64)
        if directions is not None and directions.shape[0] != len(sizes):
            raise InputError(f"{p}: {directions.shape[0]} space directions for {len(sizes)} axes")
        spatial = _spatial_axes(header, sizes, directions, p)
        affine, source = _affine(header, spatial, directions, p)
        data_fh, detached = _data_source(header, p, fh)
        try:
            raw = _read_data(header, data_fh, nbytes, dtype, p)
        finally:
            if detached is not None:
                data_fh.close()
    array = to_native(raw.view(dtype).reshape(sizes, order="F"))
    array = array.reshape([sizes[a] for a in spatial] + [1] * (3 - len(spatial)), order="F")
    meta: dict[str, Any] = {
        "format": "nrrd",
        "space": str(header.get("space", "")),
        "encoding": str(header["encoding"]),
        "affine_source": source,
        "description": str(header.get("content", "")),
    }
    names = _names(header)
    if names:
        meta["names"] = names
    return array, affine, meta


def _nrrd_dtype(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"NRRD holds integer or float voxels, got {array.dtype}")
    return array


def write_nrrd(array: Any, affine_lps: Any, path: str | os.PathLike, *, is_label: bool = False,
               compression_level: int = 1) -> Path:
    """Write a 3D array as a gzip-compressed ``.nrrd`` in LPS space, atomically.

    Parameters
    ----------
    array : (I, J, K) array_like
        Voxels in (i, j, k) order (stored type kept; bool becomes uint8).
    affine_lps : (4, 4) array_like
        Voxel index to LPS millimetres; written as ``space directions`` and
        ``space origin`` with ``space: left-posterior-superior``.
    path : path-like
        Output ``.nrrd`` file.
    is_label : bool
        Label maps and images are stored alike (the array's own type); taken so
        that every writer of :mod:`medrecon.io.formats` is called the same way.
    compression_level : int, optional
        gzip level, 1 (fast) to 9.

    Returns
    -------
    Path
        ``path``.
    """
    import nrrd

    p = Path(path)
    if not IMAGE_FORMATS["nrrd"].writes(p.name):
        raise UnsupportedFormatError(f"{p}: medrecon writes NRRD as a single .nrrd file")
    data = _nrrd_dtype(np.asarray(array))
    if data.ndim != 3:
        raise ValueError(f"array must be 3D (i, j, k), got shape {data.shape}")
    affine = check_affine(affine_lps)
    header = {
        "space": "left-posterior-superior",
        "space directions": affine[:3, :3].T,
        "space origin": affine[:3, 3],
        "kinds": ["domain", "domain", "domain"],
        "endian": "little",
        "encoding": "gzip",
    }
    with atomic_path(p, suffix=".nrrd") as tmp:
        nrrd.write(
            str(tmp), data.astype(data.dtype.newbyteorder("<"), copy=False), header,
            index_order="F", compression_level=compression_level,
        )
    return p
