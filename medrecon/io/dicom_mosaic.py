"""Siemens mosaic images: one stored frame that holds a grid of slices.

Siemens MR (fMRI, DWI and many EPI series) stores all slices of one volume as
tiles of one large image, marked by ``MOSAIC`` in ImageType. The number of
slices is in the private CSA image header (element ``NumberOfImagesInMosaic``
of the "SIEMENS CSA HEADER" block, tag (0029,xx10)) or in the private tag
(0019,xx0A) of the "SIEMENS MR HEADER" block. The tiles fill a square grid of
``ceil(sqrt(n))`` tiles per side, row by row.

Geometry, as dcm2niix and nibabel work it out: ImagePositionPatient of a mosaic
is the corner of the whole mosaic, as if it were one image; the first tile's
corner lies ``(mosaic size - tile size) / 2`` pixels further along the row and
column directions. Tile ``m`` lies ``m`` slice steps (SpacingBetweenSlices, else
SliceThickness) along the slice normal ``row x column``, whose sign the CSA
header's ``SliceNormalVector`` gives (slices may be stored in descending order).

All positions are in DICOM's patient frame (LPS, mm).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medrecon.errors import DicomError

CSA_CREATOR = "SIEMENS CSA HEADER"
MR_CREATOR = "SIEMENS MR HEADER"
#: The CSA parser's bounds (nibabel's csareader uses the same tag limit).
MAX_CSA_TAGS = 128
_TAG = struct.Struct("<64si4siii")
_ITEM = struct.Struct("<4i")
_WANTED = ("NumberOfImagesInMosaic", "SliceNormalVector")


@dataclass(frozen=True)
class Mosaic:
    """How a mosaic image splits into slices.

    Attributes
    ----------
    count : int
        Number of slices (NumberOfImagesInMosaic).
    grid : int
        Tiles per side of the mosaic, ``ceil(sqrt(count))``.
    tile_rows, tile_cols : int
        Size of one tile (one slice).
    normal_sign : float
        +1 when tile ``m + 1`` lies further along ``row x column`` than tile ``m``, -1
        when the CSA SliceNormalVector points the other way.
    """

    count: int
    grid: int
    tile_rows: int
    tile_cols: int
    normal_sign: float = 1.0


def is_mosaic(image_type: Sequence[str]) -> bool:
    """Tell whether ImageType (upper case values) marks a Siemens mosaic."""
    return "MOSAIC" in image_type


def read_csa(data: bytes) -> dict[str, list[str]]:
    """Parse a Siemens CSA header (type 1 or 2) and return the values of :data:`_WANTED`.

    The header is untrusted: every length is checked against the bytes present,
    and the number of tags against :data:`MAX_CSA_TAGS`.

    Parameters
    ----------
    data : bytes
        Value of the CSA image header element.

    Returns
    -------
    dict of str to list of str
        Item strings of the wanted tags that the header holds.

    Raises
    ------
    ValueError
        If the header is malformed.
    """
    if data[:4] == b"SV10":
        csa2, pos = True, 16
        (n_tags,) = struct.unpack_from("<I", data, 8)
    else:
        csa2, pos = False, 8
        (n_tags,) = struct.unpack_from("<I", data, 0)
    if not 0 < n_tags <= MAX_CSA_TAGS:
        raise ValueError(f"CSA header declares {n_tags} tags")
    out: dict[str, list[str]] = {}
    for _ in range(n_tags):
        if pos + _TAG.size > len(data):
            raise ValueError("CSA header ends inside a tag")
        raw_name, vm, _vr, _syngo, n_items, tag0 = _TAG.unpack_from(data, pos)
        pos += _TAG.size
        name = raw_name.split(b"\0", 1)[0].decode("latin-1")
        if n_items < 0 or n_items * _ITEM.size > len(data) - pos:
            raise ValueError(f"CSA tag {name!r} declares {n_items} items")
        items = []
        for _ in range(n_items):
            if pos + _ITEM.size > len(data):
                raise ValueError("CSA header ends inside an item")
            x0, x1, _x2, _x3 = _ITEM.unpack_from(data, pos)
            pos += _ITEM.size
            length = x1 if csa2 else x0 - tag0
            if length < 0 or pos + length > len(data):
                raise ValueError(f"CSA item of tag {name!r} has length {length}")
            if len(items) < max(vm, 0):
                items.append(data[pos:pos + length].split(b"\0", 1)[0].decode("latin-1").strip())
            pos += -(-length // 4) * 4  # items are padded to 4 bytes
        if name in _WANTED:
            out[name] = [v for v in items if v]
    return out


def _private(ds: Any, group: int, creator: str, element: int) -> Any:
    """Value of private element ``element`` of ``creator``'s block in ``group``, or None."""
    try:
        return ds.private_block(group, creator)[element].value
    except (KeyError, ValueError, TypeError, AttributeError):
        return None


def _count_from_mr_header(value: Any, little_endian: bool) -> int | None:
    if isinstance(value, (bytes, bytearray)):  # an unknown VR (UN) keeps the raw bytes
        if len(value) < 2:
            return None
        return struct.unpack_from("<H" if little_endian else ">H", value)[0]
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def mosaic_layout(ds: Any, path: str, *, rows: int, cols: int, little_endian: bool) -> Mosaic:
    """Find how the mosaic image of ``ds`` splits into slices.

    Parameters
    ----------
    ds : pydicom Dataset
        The header of a file whose ImageType holds MOSAIC.
    path : str
        File name, for messages.
    rows, cols : int
        Rows and Columns of the stored (mosaic) image.
    little_endian : bool
        Byte order of the data set (for a private tag stored as raw bytes).

    Raises
    ------
    DicomError
        If the number of slices cannot be found or does not fit the image.
    """
    csa: dict[str, list[str]] = {}
    raw = _private(ds, 0x0029, CSA_CREATOR, 0x10)
    if isinstance(raw, (bytes, bytearray)):
        try:
            csa = read_csa(bytes(raw))
        except (ValueError, struct.error, UnicodeDecodeError):
            csa = {}
    count = None
    if csa.get("NumberOfImagesInMosaic"):
        try:
            count = int(float(csa["NumberOfImagesInMosaic"][0]))
        except ValueError:
            count = None
    if count is None:
        count = _count_from_mr_header(_private(ds, 0x0019, MR_CREATOR, 0x0A), little_endian)
    if count is None:
        raise DicomError(
            f"{path}: a Siemens mosaic (ImageType MOSAIC) without NumberOfImagesInMosaic (in the "
            "CSA header or the private tag (0019,100A)): its slices cannot be separated; export "
            "the series from the scanner again with its private tags, or without mosaic"
        )
    grid = math.isqrt(max(count, 1) - 1) + 1  # ceil(sqrt(count))
    if count < 1 or rows % grid or cols % grid:
        raise DicomError(
            f"{path}: a Siemens mosaic of {cols}x{rows} pixels cannot hold {count} slices "
            f"({grid}x{grid} tiles of equal size): NumberOfImagesInMosaic or the image size is "
            "wrong; the file is corrupt"
        )
    sign = 1.0
    normal = csa.get("SliceNormalVector", [])
    if len(normal) == 3:
        try:
            sign = float(np.sign(_normal_dot(ds, [float(v) for v in normal])) or 1.0)
        except ValueError:
            sign = 1.0
    return Mosaic(count=count, grid=grid, tile_rows=rows // grid, tile_cols=cols // grid,
                  normal_sign=sign)


def _normal_dot(ds: Any, normal: list[float]) -> float:
    """Dot product of the CSA slice normal with ``row x column`` (0 when unknown)."""
    try:
        o = np.asarray([float(v) for v in ds.get("ImageOrientationPatient") or ()], dtype=float)
    except (TypeError, ValueError):
        return 0.0
    if o.shape != (6,) or not np.all(np.isfinite(normal)):
        return 0.0
    return float(np.cross(o[:3], o[3:]) @ np.asarray(normal))


def tile_positions(
    mosaic: Mosaic,
    position: Sequence[float],
    orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    step: float,
) -> list[tuple[float, float, float]]:
    """ImagePositionPatient of each tile (LPS mm), as dcm2niix computes it.

    Parameters
    ----------
    mosaic : Mosaic
        The layout.
    position : 3 floats
        ImagePositionPatient of the mosaic (its first stored pixel).
    orientation : 6 floats
        ImageOrientationPatient: row direction, then column direction.
    pixel_spacing : 2 floats
        PixelSpacing (between rows, between columns), mm.
    step : float
        Distance between slices along the normal, mm.
    """
    o = np.asarray(orientation, dtype=np.float64)
    row, col = o[:3], o[3:]
    dy, dx = (float(v) for v in pixel_spacing)
    shift_cols = (mosaic.tile_cols * mosaic.grid - mosaic.tile_cols) / 2
    shift_rows = (mosaic.tile_rows * mosaic.grid - mosaic.tile_rows) / 2
    first = np.asarray(position, dtype=np.float64) + row * dx * shift_cols + col * dy * shift_rows
    normal = np.cross(row, col)
    size = np.linalg.norm(normal)
    normal = normal / size if size > 0 else normal
    normal *= mosaic.normal_sign * step
    return [tuple(float(v) for v in first + m * normal) for m in range(mosaic.count)]


def tile(image: np.ndarray, index: int, grid: int, rows: int, cols: int) -> np.ndarray:
    """Tile ``index`` (row by row) of a (grid*rows, grid*cols) mosaic image, a view."""
    r, c = divmod(index, grid)
    return image[r * rows:(r + 1) * rows, c * cols:(c + 1) * cols]
