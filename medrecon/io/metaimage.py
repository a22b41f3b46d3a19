"""ITK MetaImage reading (``.mha`` with data inline, ``.mhd`` with a data file).

A small parser of our own for the MetaIO text header (``Key = Value`` lines
ending with ``ElementDataFile``). ITK's ``Offset`` and ``TransformMatrix`` are
already in the LPS frame, so the affine needs no flip: its columns are the
direction of each array axis (``TransformMatrix`` lists them one after the
other) times ``ElementSpacing``. Arrays are (i, j, k): the first ``DimSize``
axis varies fastest. ``AnatomicalOrientation`` is informative only (ITK
ignores it too) and is returned in ``meta``.

Declared sizes pass :func:`medrecon.io.limits.check_alloc` before any voxel
data is read, and compressed data is never inflated past the declared size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medrecon.errors import GeometryError, InputError, UnsupportedFormatError
from medrecon.io._stream import AUTO, Inflater, detached_data, open_input, read_exact, to_native
from medrecon.io.limits import check_alloc
from medrecon.volume import check_affine

# MetaIO element types (metaTypes.h: MET_LONG is 4 bytes, MET_LONG_LONG 8).
_TYPES = {
    "MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2",
    "MET_INT": "i4", "MET_UINT": "u4", "MET_LONG": "i4", "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}
_MAX_HEADER = 1 << 20  # a MetaIO header is a few hundred bytes; stop reading garbage early
_ALIASES = {"origin": "offset", "position": "offset", "rotation": "transformmatrix",
            "orientation": "transformmatrix", "elementbyteordermsb": "binarydatabyteordermsb"}


def _parse_header(fh: Any, path: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    read = 0
    while True:
        line = fh.readline(_MAX_HEADER)
        read += len(line)
        if not line:
            raise InputError(f"{path}: MetaImage header ends without an ElementDataFile line")
        if read > _MAX_HEADER:
            raise InputError(f"{path}: no MetaImage header found in the first {_MAX_HEADER} bytes")
        try:
            text = line.decode("latin-1").strip()
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
            text = ""
        if not text:
            continue
        key, sep, value = text.partition("=")
        # ITK copies foreign metadata verbatim (e.g. NIfTI's "dim[0] = 3"): allow
        # printable keys, refuse binary garbage
        if not sep or not key.strip() or not key.strip().isprintable():
            raise InputError(f"{path}: not a MetaImage header (line {text[:60]!r})")
        name = key.strip().lower()
        fields[_ALIASES.get(name, name)] = value.strip()
        if name == "elementdatafile":
            return fields


def _numbers(fields: dict[str, str], key: str, n: int, path: Path, *, default: list[float] | None = None) -> np.ndarray:
    if key not in fields:
        if default is None:
            raise InputError(f"{path}: MetaImage header lacks {key}")
        return np.asarray(default, dtype=np.float64)
    try:
        values = np.array([float(v) for v in fields[key].split()], dtype=np.float64)
    except ValueError:
        raise InputError(f"{path}: MetaImage field {key} = {fields[key]!r} is not a list of numbers") from None
    if values.size != n:
        raise InputError(f"{path}: MetaImage field {key} has {values.size} values, expected {n}")
    return values


def _flag(fields: dict[str, str], key: str) -> bool:
    return fields.get(key, "False").strip().lower() in ("true", "1", "yes")


def _affine(fields: dict[str, str], ndims: int, path: Path) -> np.ndarray:
    key = "elementsize" if "elementsize" in fields and "elementspacing" not in fields else "elementspacing"
    spacing = _numbers(fields, key, ndims, path, default=[1.0] * ndims)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise GeometryError(f"{path}: ElementSpacing {spacing.tolist()} must be positive and finite")
    origin = _numbers(fields, "offset", ndims, path, default=[0.0] * ndims)
    matrix = _numbers(fields, "transformmatrix", ndims * ndims, path, default=np.eye(ndims).ravel().tolist())
    # TransformMatrix lists the direction of axis 0, then axis 1, ...: those are columns.
    columns = matrix.reshape(ndims, ndims).T
    n = min(ndims, 3)  # a 4th (singleton) axis is dropped; a 2D image gets k = +z, 1 mm
    affine = np.eye(4)
    affine[:n, :n] = columns[:n, :n] * spacing[:n]
    affine[:n, 3] = origin[:n]
    try:
        return check_affine(affine)
    except GeometryError as exc:
        raise GeometryError(f"{path}: {exc}") from exc


def read_metaimage(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a 2D/3D scalar MetaImage (``.mha`` or ``.mhd`` + data file).

    Parameters
    ----------
    path : path-like
        The ``.mha`` file or the ``.mhd`` header.

    Returns
    -------
    array : (I, J, K) ndarray
        Voxels in the stored type, (i, j, k) order (Fortran-contiguous);
        2D images get a k axis of one voxel.
    affine : (4, 4) ndarray of float64
        Voxel index to LPS millimetres.
    meta : dict
        ``format``, ``anatomical_orientation`` (as written, not used for
        geometry) and ``compressed``.

    Raises
    ------
    InputError
        Not MetaImage, truncated or corrupt data, several channels.
    ResourceLimitError
        The declared array exceeds :mod:`medrecon.io.limits` (checked before reading).
    GeometryError
        Non-positive spacing or a singular direction matrix.
    UnsupportedFormatError
        Unknown element type, non-image objects, or data split over a file list.
    """
    p = Path(path)
    with open_input(p) as fh:
        fields = _parse_header(fh, p)
        if fields.get("objecttype", "Image").lower() != "image":
            raise UnsupportedFormatError(f"{p}: MetaIO object {fields['objecttype']!r} is not an image")
        try:
            ndims = int(fields.get("ndims", ""))
            sizes = [int(s) for s in fields.get("dimsize", "").split()]
        except ValueError:
            raise InputError(f"{p}: NDims/DimSize are not integers") from None
        if not 2 <= ndims <= 4 or len(sizes) != ndims:
            raise InputError(f"{p}: NDims={ndims} with DimSize {sizes}; medrecon reads 2D and 3D images")
        kind = _TYPES.get(fields.get("elementtype", "").upper())
        if kind is None:
            raise UnsupportedFormatError(f"{p}: MetaImage ElementType {fields.get('elementtype')!r} is not supported")
        dtype = np.dtype(kind).newbyteorder(">" if _flag(fields, "binarydatabyteordermsb") else "<")
        channels = int(fields.get("elementnumberofchannels", "1") or 1)
        nbytes = check_alloc([*sizes, channels], dtype, str(p))
        if channels != 1:
            raise InputError(f"{p}: {channels} channels per voxel; medrecon reads scalar images")
        if ndims == 4 and sizes[3] != 1:
            raise InputError(f"{p}: a 4D image of {sizes[3]} volumes; medrecon reads one 3D image")
        affine3 = _affine(fields, ndims, p)
        if not _flag(fields, "binarydata") and "binarydata" in fields:
            raise UnsupportedFormatError(f"{p}: ASCII MetaImage data is not supported; re-save it as binary")
        raw = _read_data(fields, fh, nbytes, p)
    array = raw.view(dtype).reshape((sizes + [1])[:3] if ndims == 2 else sizes[:3], order="F")
    array = to_native(array)
    meta = {
        "format": "metaimage",
        "anatomical_orientation": fields.get("anatomicalorientation", ""),
        "compressed": _flag(fields, "compresseddata"),
    }
    return array, affine3, meta


def _read_data(fields: dict[str, str], fh: Any, nbytes: int, path: Path) -> np.ndarray:
    datafile = fields["elementdatafile"]
    if datafile.upper() == "LOCAL":
        return _read_from(fh, fields, nbytes, path, local=True)
    target = detached_data(path, datafile, resave="re-save it as a single .mha (e.g. SimpleITK.WriteImage)")
    with open_input(target) as data_fh:
        return _read_from(data_fh, fields, nbytes, target, local=False)


def _read_from(fh: Any, fields: dict[str, str], nbytes: int, path: Path, *, local: bool) -> np.ndarray:
    header_size = int(fields.get("headersize", "0") or 0)
    size = os.fstat(fh.fileno()).st_size
    if _flag(fields, "compresseddata"):
        if not local and header_size > 0:
            fh.seek(header_size)
        return read_exact(Inflater(fh, wbits=AUTO), nbytes, "voxel data", path)
    if header_size == -1:
        start = size - nbytes
    else:
        start = (fh.tell() if local else 0) + max(header_size, 0)
    if start < 0 or start + nbytes > size:
        raise InputError(
            f"{path}: the header declares {nbytes} bytes of voxel data but the file holds "
            f"{max(size - max(start, 0), 0)}; the file is truncated: copy or export it again"
        )
    fh.seek(start)
    return read_exact(fh, nbytes, "voxel data", path)
