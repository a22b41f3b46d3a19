"""NIfTI-1/NIfTI-2 reading and writing (``.nii``, ``.nii.gz``).

Arrays are returned in NIfTI's own (i, j, k) index order and the affine maps
voxel indices to **LPS** millimetres (NIfTI's RAS world converted once, here,
with :data:`~medrecon.volume.LPS_TO_RAS`).

The header is read and written here, with the NIfTI-1 and NIfTI-2 layouts below
(the fields medrecon uses, at nibabel's offsets), so neither reading nor writing
imports nibabel (~0.2 s with what it pulls in); nibabel is used only for the
qform quaternion of files that have no sform. The header written is the one
nibabel writes for the same image, byte for byte. The header is validated first (dimensions, data type, size limits of
:mod:`medrecon.io.limits`) and then *exactly* the number of bytes it declares is
inflated into a buffer of that size. A compressed file that inflates to more
than its header says (a "zip bomb") is therefore never inflated past the
declared size, and a file that holds less raises :class:`InputError` (see
:mod:`medrecon.io._stream`; inflating uses ISA-L, about twice as fast as zlib).

Label names stored in a header extension are read too: the Caret/Workbench XML
``LabelTable`` that TotalSegmentator writes into its multi-label files (extension
code 0). Extension sizes are checked against the space between the header and
the voxel data before anything is read; a table that cannot be parsed is
skipped with a warning (the labels are then named by the usual rule).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medrecon.atomic import atomic_path
from medrecon.errors import GeometryError, InputError, UnsupportedFormatError
from medrecon.io._stream import Inflater, open_input, read_exact, skip, to_native
from medrecon.io.formats import NIFTI
from medrecon.io.limits import check_alloc
from medrecon.io.stored import exact_scaling
from medrecon.volume import LPS_TO_RAS, check_affine

_MAX_OFFSET = 64 * 1024**2  # header + extensions larger than this are not credible
_MAX_LABEL_TABLE = 16 * 1024**2  # a label table extension larger than this is skipped unread
# extension codes that may hold a Caret LabelTable: 0 ("ignore", as TotalSegmentator
# writes it) and 30 (NIFTI_ECODE_CARET)
_LABEL_TABLE_CODES = (0, 30)
_TO_MM = {1: 1000.0, 2: 1.0, 3: 0.001}  # xyzt_units spatial codes: metre, mm, micron


def _layout(fields: list[tuple[str, str, int]], itemsize: int) -> np.dtype:
    names, formats, offsets = zip(*fields, strict=True)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})


# (field, type, byte offset) of the header fields read here, little-endian (nibabel's offsets)
_NIFTI1 = _layout([
    ("sizeof_hdr", "<i4", 0), ("dim", "(8,)<i2", 40), ("datatype", "<i2", 70), ("bitpix", "<i2", 72),
    ("pixdim", "(8,)<f4", 76), ("vox_offset", "<f4", 108), ("scl_slope", "<f4", 112),
    ("scl_inter", "<f4", 116), ("xyzt_units", "u1", 123), ("descrip", "S80", 148),
    ("qform_code", "<i2", 252), ("sform_code", "<i2", 254), ("quatern_b", "<f4", 256),
    ("quatern_c", "<f4", 260), ("quatern_d", "<f4", 264), ("qoffset_x", "<f4", 268),
    ("qoffset_y", "<f4", 272), ("qoffset_z", "<f4", 276), ("srow_x", "(4,)<f4", 280),
    ("srow_y", "(4,)<f4", 296), ("srow_z", "(4,)<f4", 312), ("magic", "S4", 344),
], 348)
_NIFTI2 = _layout([
    ("sizeof_hdr", "<i4", 0), ("magic", "S4", 4), ("eol_check", "S4", 8), ("datatype", "<i2", 12),
    ("bitpix", "<i2", 14), ("dim", "(8,)<i8", 16),
    ("pixdim", "(8,)<f8", 104), ("vox_offset", "<i8", 168), ("scl_slope", "<f8", 176),
    ("scl_inter", "<f8", 184), ("descrip", "S80", 240), ("qform_code", "<i4", 344),
    ("sform_code", "<i4", 348), ("quatern_b", "<f8", 352), ("quatern_c", "<f8", 360),
    ("quatern_d", "<f8", 368), ("qoffset_x", "<f8", 376), ("qoffset_y", "<f8", 384),
    ("qoffset_z", "<f8", 392), ("srow_x", "(4,)<f8", 400), ("srow_y", "(4,)<f8", 432),
    ("srow_z", "(4,)<f8", 464), ("xyzt_units", "<i4", 500),
], 540)
# NIfTI datatype codes of scalar voxels, and the names of the others (as nibabel has them)
_SCALAR_TYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8",
                 1280: "u8"}
_OTHER_TYPES = {0: "none", 1: "binary", 32: "complex64", 128: "RGB", 255: "all", 1536: "float128",
                1792: "complex128", 2048: "complex256", 2304: "RGBA"}


def _header(reader: Any, path: Path):
    first = bytes(read_exact(reader, 4, "NIfTI header", path))
    layout = endian = None
    for end, code in (("<", "<i4"), (">", ">i4")):
        size = int(np.frombuffer(first, dtype=code)[0])
        if size in (348, 540):
            layout = _NIFTI1 if size == 348 else _NIFTI2
            endian, hsize = end, size
            break
    if layout is None:
        raise InputError(f"{path} is not a NIfTI file (sizeof_hdr is neither 348 nor 540)")
    block = first + bytes(read_exact(reader, hsize - 4, "NIfTI header", path))
    hdr = np.frombuffer(block, dtype=layout.newbyteorder(endian))[0]
    magic = bytes(hdr["magic"]).rstrip(b"\0")
    if magic in (b"ni1", b"ni2"):
        raise UnsupportedFormatError(
            f"{path} is the header of a two-file (.hdr/.img) NIfTI pair; medrecon reads "
            "single-file .nii/.nii.gz: convert it, e.g. with nibabel or fslchfiletype"
        )
    if magic not in (b"n+1", b"n+2"):
        raise InputError(f"{path}: bad NIfTI magic {magic!r}; the file is not NIfTI or is corrupt")
    return hdr, hsize


def _shape(hdr: Any, path: Path) -> tuple[int, ...]:
    dim = [int(d) for d in hdr["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise InputError(f"{path}: header dim[0]={ndim} must be 1..7; the header is corrupt")
    return tuple(dim[1 : ndim + 1])


def _dtype(hdr: Any, path: Path) -> np.dtype:
    code = int(hdr["datatype"])
    if code in _OTHER_TYPES:
        raise UnsupportedFormatError(
            f"{path}: NIfTI datatype {_OTHER_TYPES[code]} (RGB/complex) is not a scalar image; "
            "medrecon reads scalar intensity images and label maps"
        )
    if code not in _SCALAR_TYPES:
        raise UnsupportedFormatError(f"{path}: unknown NIfTI datatype code {code}")
    # the voxels have the header's byte order
    return np.dtype(_SCALAR_TYPES[code]).newbyteorder(hdr.dtype["datatype"].byteorder)


def _spacing(hdr: Any, ndim: int, path: Path) -> np.ndarray:
    pix = np.array(hdr["pixdim"][1:4], dtype=np.float64)
    pix[ndim:] = 1.0  # 1D/2D images: unused spatial axes are one voxel thick
    if not np.all(np.isfinite(pix)) or np.any(pix <= 0):
        raise GeometryError(
            f"{path}: voxel spacing pixdim[1:4]={pix.tolist()} must be positive and finite; "
            "fix the header (e.g. nibabel's header.set_zooms) or re-export the image"
        )
    return pix


def _affine_ras(hdr: Any, ndim: int, path: Path) -> tuple[np.ndarray, str]:
    if int(hdr["sform_code"]) > 0:
        ras = np.eye(4)
        ras[:3] = np.stack([hdr["srow_x"], hdr["srow_y"], hdr["srow_z"]]).astype(np.float64)
        source = "sform"
    elif int(hdr["qform_code"]) > 0:
        from nibabel.quaternions import fillpositive, quat2mat

        pix = _spacing(hdr, ndim, path)
        # nibabel's Nifti1Header/Nifti2Header.get_qform_quaternion, on our header
        threshold = 3 * np.finfo(hdr.dtype["quatern_b"]).eps
        try:
            quat = fillpositive([hdr["quatern_b"], hdr["quatern_c"], hdr["quatern_d"]], threshold)
        except ValueError:  # b^2 + c^2 + d^2 > 1: not a rotation
            quat = np.array([np.nan])
        if not np.all(np.isfinite(quat)):
            raise GeometryError(
                f"{path}: the qform quaternion (quatern_b/c/d) is not a rotation; the header is corrupt"
            )
        # NIfTI C library rule: qfac is -1 when pixdim[0] < 0, else 1 (0 included).
        pix[2] *= -1.0 if float(hdr["pixdim"][0]) < 0 else 1.0
        ras = np.eye(4)
        ras[:3, :3] = quat2mat(quat) @ np.diag(pix)
        ras[:3, 3] = [float(hdr["qoffset_x"]), float(hdr["qoffset_y"]), float(hdr["qoffset_z"])]
        source = "qform"
    else:
        pix = _spacing(hdr, ndim, path)
        warnings.warn(
            f"{path}: neither sform nor qform is set (codes 0); using the voxel spacing "
            "only (NIfTI method 1): orientation and position in the scanner are unknown",
            UserWarning,
            stacklevel=3,
        )
        ras = np.diag([*pix, 1.0])
        source = "pixdim"
    units = int(hdr["xyzt_units"]) & 0x07
    ras[:3] *= _TO_MM.get(units, 1.0)
    return ras, source


def _data_offset(hdr: Any, hsize: int, path: Path) -> int:
    raw = float(hdr["vox_offset"])
    if not np.isfinite(raw) or raw < 0 or raw > _MAX_OFFSET:
        raise InputError(f"{path}: header vox_offset={raw} is not a plausible data offset; the header is corrupt")
    # An offset inside the header means "right after it" (what nibabel and ITK assume).
    return max(int(raw), hsize + 4)


def _extensions(reader: Any, size: int, byteorder: str, path: Path) -> dict[int, str]:
    """Consume the ``size`` bytes between header and voxels; return a label table found there.

    The block is a 4-byte extender (first byte non-zero: extensions follow), then
    extensions of ``esize`` bytes each (``esize``, ``ecode`` as int32, then data).
    """
    extender = bytes(read_exact(reader, 4, "NIfTI header extender", path))  # size >= 4: _data_offset
    pos = 4
    names: dict[int, str] = {}
    if extender[0]:
        layout = np.dtype("<i4").newbyteorder(byteorder)
        while size - pos >= 8 and not names:
            esize, ecode = (int(v) for v in read_exact(reader, 8, "NIfTI header extension", path).view(layout))
            pos += 8
            if esize < 8 or esize - 8 > size - pos:
                warnings.warn(f"{path}: a header extension declares {esize} bytes where {size - pos + 8} "
                              "are left before the voxel data; extensions are ignored", UserWarning,
                              stacklevel=3)
                break
            length, pos = esize - 8, pos + esize - 8
            if ecode in _LABEL_TABLE_CODES and length <= _MAX_LABEL_TABLE:
                names = _caret_labels(bytes(read_exact(reader, length, "NIfTI header extension", path)), path)
            else:
                skip(reader, length, "NIfTI header extension", path)
    skip(reader, size - pos, "NIfTI header extensions", path)
    return names


def _caret_labels(content: bytes, path: Path) -> dict[int, str]:
    """Label id -> name from a Caret ``<LabelTable>`` (``<Label Key="5">liver</Label>``), else {}."""
    text = content.rstrip(b"\0 \t\r\n")
    if b"<CaretExtension" not in text[:1024]:
        return {}
    if b"<!DOCTYPE" in text or b"<!ENTITY" in text:  # no entity expansion in untrusted XML
        warnings.warn(f"{path}: the label table extension declares a DTD; its names are ignored",
                      UserWarning, stacklevel=4)
        return {}
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        warnings.warn(f"{path}: the label table extension is not valid XML ({exc}); its names are "
                      "ignored", UserWarning, stacklevel=4)
        return {}
    names: dict[int, str] = {}
    for item in root.iterfind("VolumeInformation/LabelTable/Label"):
        key, name = item.get("Key", "").strip(), (item.text or "").strip()
        if key.isascii() and key.isdigit() and 0 < int(key) < 2**31 and name:
            names[int(key)] = name
    return names


def _scaling(hdr: Any) -> tuple[float, float] | None:
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    if not np.isfinite(slope) or slope == 0.0:
        return None  # NIfTI: slope 0 (or unset) means "no scaling"
    inter = inter if np.isfinite(inter) else 0.0
    return None if (slope, inter) == (1.0, 0.0) else (slope, inter)


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a 3D NIfTI image or label map.

    Parameters
    ----------
    path : path-like
        A ``.nii`` or ``.nii.gz`` file (NIfTI-1 or NIfTI-2, either byte order).

    Returns
    -------
    array : (I, J, K) ndarray
        Voxels in NIfTI (i, j, k) order (Fortran-contiguous). Data with a
        ``scl_slope``/``scl_inter`` other than identity is returned as float32
        with the scaling applied; unscaled data keeps its stored type (so
        integer label maps stay integers). 1D/2D images get singleton axes.
    affine : (4, 4) ndarray of float64
        Voxel index to LPS millimetres: the sform if ``sform_code > 0``, else
        the qform if ``qform_code > 0``, else the voxel spacing alone (with a
        warning). Metre and micron ``xyzt_units`` are converted to mm. With an
        sform, ``pixdim`` is not used (the sform alone is validated); otherwise
        ``pixdim[1:4]`` must be positive and finite.
    meta : dict
        ``format``, ``affine_source`` (``"sform"``, ``"qform"``, ``"pixdim"``),
        ``sform_code``, ``qform_code``, ``description``, ``scaling``
        (``(slope, inter)`` or ``None``), ``stored_dtype``, and ``names``
        ({label: name}) when a header extension holds a label table.

    Raises
    ------
    InputError
        Not NIfTI, corrupt or truncated data, or a 4D image with several volumes.
    ResourceLimitError
        The header declares an array beyond :mod:`medrecon.io.limits`; raised
        before anything of that size is allocated.
    GeometryError
        Spacing or affine that is non-finite, zero or singular.
    UnsupportedFormatError
        RGB/complex data or a two-file ``.hdr``/``.img`` pair.
    """
    p = Path(path)
    with open_input(p) as fh:
        gz = fh.read(2) == b"\x1f\x8b"
        fh.seek(0)
        reader = Inflater(fh) if gz else fh
        hdr, hsize = _header(reader, p)
        shape = _shape(hdr, p)
        dtype = _dtype(hdr, p)
        nbytes = check_alloc(shape, dtype, str(p))
        if len(shape) > 3 and int(np.prod(shape[3:])) > 1:
            raise InputError(
                f"{p} holds {int(np.prod(shape[3:]))} volumes (shape {shape}); medrecon reads one 3D "
                "image: extract one volume first (e.g. fslroi or nibabel's slicer)"
            )
        ras, source = _affine_ras(hdr, len(shape), p)
        affine = check_affine(LPS_TO_RAS @ ras)
        offset = _data_offset(hdr, hsize, p)
        if not gz:
            size = os.fstat(fh.fileno()).st_size
            if offset + nbytes > size:
                raise InputError(
                    f"{p}: the header declares {nbytes} bytes of voxel data at offset {offset} but "
                    f"the file has {size} bytes; the file is truncated: copy or export it again"
                )
        names = _extensions(reader, offset - hsize, hdr.dtype["datatype"].byteorder, p)
        raw = read_exact(reader, nbytes, "voxel data", p)
    spatial = (tuple(shape[:3]) + (1, 1, 1))[:3]
    array = raw.view(dtype).reshape(spatial, order="F")
    array = to_native(array)
    scaling = _scaling(hdr)
    if scaling is not None:
        array = array.astype(np.float32)
        array *= np.float32(scaling[0])
        array += np.float32(scaling[1])
    meta = {
        "format": "nifti",
        "affine_source": source,
        "sform_code": int(hdr["sform_code"]),
        "qform_code": int(hdr["qform_code"]),
        "description": bytes(hdr["descrip"]).split(b"\0")[0].decode("latin-1").strip(),
        "scaling": scaling,
        "stored_dtype": np.dtype(dtype).newbyteorder("=").name,
    }
    if names:
        meta["names"] = names
    return array, affine, meta


def _storage(array: np.ndarray, is_label: bool) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim != 3:
        raise ValueError(f"array must be 3D (i, j, k), got shape {a.shape}")
    if is_label:
        if a.dtype.kind == "b":
            return a.astype(np.uint8)
        if a.dtype.kind == "f" and not (np.all(np.isfinite(a)) and np.all(a == np.round(a))):
            raise ValueError(f"a label map must hold integers, got {a.dtype} with fractional values")
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        for dt in (np.uint8, np.int16, np.int32):
            if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
                return a.astype(dt, copy=False)
        raise ValueError(f"label values {lo}..{hi} do not fit int32")
    if a.dtype.kind == "b":
        return a.astype(np.uint8)
    if a.dtype in (np.uint8, np.int16, np.float32):
        return a
    if a.dtype.kind in "iu" and a.size and np.iinfo(np.int16).min <= a.min() and a.max() <= np.iinfo(np.int16).max:
        return a.astype(np.int16)
    return a.astype(np.float32)


_CODE_OF = {np.dtype(t): code for code, t in _SCALAR_TYPES.items()}
_CHUNK = 1024**2  # bytes of voxels per write: whole k planes, few enough to stay in the CPU cache


class _Inexact(Exception):
    """The image's values are not exactly the stored integers under the scaling."""


def _qform(ras: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """qfac, zooms and quaternion (b, c, d) of ``ras``, as nibabel's ``set_qform`` makes them.

    A sheared affine gets the closest rotation (polar decomposition); the
    sform keeps it exactly.
    """
    rzs = ras[:3, :3]
    zooms = np.sqrt(np.sum(rzs * rzs, axis=0))
    r = rzs / zooms
    qfac = 1.0 if np.linalg.det(r) > 0 else -1.0
    r[:, -1] *= qfac
    p, _s, qs = np.linalg.svd(r)
    xx, yx, zx, xy, yy, zy, xz, yz, zz = (p @ qs).flat
    # nibabel.quaternions.mat2quat (Bar-Itzhack): the eigenvector of the largest eigenvalue
    k = np.array([
        [xx - yy - zz, 0, 0, 0],
        [yx + xy, yy - xx - zz, 0, 0],
        [zx + xz, zy + yz, zz - xx - yy, 0],
        [yz - zy, zx - xz, xy - yx, xx + yy + zz],
    ]) / 3.0
    vals, vecs = np.linalg.eigh(k)
    quat = vecs[[3, 0, 1, 2], np.argmax(vals)]
    return qfac, zooms, (-quat if quat[0] < 0 else quat)[1:]


def _header_block(shape: tuple[int, ...], dtype: np.dtype, ras: np.ndarray,
                  scaling: tuple[float, float]) -> bytes:
    """Header and empty extension flag: NIfTI-2 when an axis is over 32767 voxels."""
    nifti2 = max(shape) > np.iinfo(np.int16).max
    layout = _NIFTI2 if nifti2 else _NIFTI1
    hdr = np.zeros((), dtype=layout)
    hdr["sizeof_hdr"] = layout.itemsize
    hdr["magic"] = b"n+2" if nifti2 else b"n+1"
    if nifti2:
        hdr["eol_check"] = b"\r\n\x1a\n"
    hdr["dim"] = [3, *shape, 1, 1, 1, 1]
    hdr["datatype"], hdr["bitpix"] = _CODE_OF[np.dtype(dtype).newbyteorder("=")], 8 * dtype.itemsize
    qfac, zooms, quat = _qform(ras)
    hdr["pixdim"] = [qfac, *zooms, 1, 1, 1, 1]
    hdr["vox_offset"] = layout.itemsize + 4
    hdr["scl_slope"], hdr["scl_inter"] = scaling
    hdr["xyzt_units"] = 2 | 8  # mm, seconds
    hdr["qform_code"] = hdr["sform_code"] = 1  # scanner
    hdr["quatern_b"], hdr["quatern_c"], hdr["quatern_d"] = quat
    hdr["qoffset_x"], hdr["qoffset_y"], hdr["qoffset_z"] = ras[:3, 3]
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = ras[:3]
    return hdr.tobytes() + b"\0" * 4


def _slabs(array: np.ndarray, itemsize: int) -> Iterator[slice]:
    plane = max(1, array.shape[0] * array.shape[1] * itemsize)
    step = max(1, _CHUNK // plane)
    for k in range(0, array.shape[2], step):
        yield slice(k, k + step)


def _bytes(slab: np.ndarray) -> memoryview:
    """Give the voxels of a Fortran-ordered slab in file order (i fastest)."""
    return memoryview(slab.T).cast("B")


def _voxel_chunks(data: np.ndarray) -> Iterator[memoryview]:
    """Yield ``data`` as it is stored, little endian, in file order."""
    little = data.dtype.newbyteorder("<")
    for ks in _slabs(data, data.dtype.itemsize):
        slab = np.asfortranarray(data[:, :, ks], dtype=little)
        if slab.size:
            yield _bytes(slab)


def _integer_chunks(data: np.ndarray, stored: np.dtype, slope: float, inter: float) -> Iterator[memoryview]:
    """Yield ``(data - inter) / slope`` as ``stored``; raise :class:`_Inexact` unless every value maps back."""
    ft = data.dtype.type
    with np.errstate(invalid="ignore", over="ignore"):  # NaN, inf or out of range: caught below
        for ks in _slabs(data, data.dtype.itemsize):
            values = data[:, :, ks]
            scaled = np.subtract(values, ft(inter), order="F")
            if slope != 1.0:
                scaled /= ft(slope)
            out = np.empty(values.shape, dtype=stored.newbyteorder("<"), order="F")
            np.copyto(out, scaled, casting="unsafe")
            if slope == 1.0:  # decode as a reader does, into the scratch buffer
                back = np.add(out, ft(inter), out=scaled)
            else:
                back = np.multiply(out, ft(slope), out=scaled)
                back += ft(inter)
            if not np.array_equal(back, values):
                raise _Inexact
            if out.size:
                yield _bytes(out)


def _integer_storage(data: np.ndarray, scaling: Any, stored_dtype: Any) -> tuple[np.dtype, float, float] | None:
    """Return the stored integer type and integer (slope, inter) to try for a float image, or None."""
    if data.dtype.kind != "f" or stored_dtype is None:
        return None
    try:
        stored = np.dtype(stored_dtype)
        slope, inter = (1.0, 0.0) if scaling is None else (float(scaling[0]), float(scaling[1]))
    except (TypeError, ValueError, IndexError):  # not what a reader puts in meta: write float32
        return None
    if stored.kind not in "iu" or stored.newbyteorder("=") not in _CODE_OF:
        return None
    # every reader (float32 or float64) must decode the stored integers to exactly these values
    return (stored, slope, inter) if exact_scaling(stored, slope, inter) else None


def _write_stored(stored: np.ndarray, ras: np.ndarray, path: Path, gz: bool, compresslevel: int,
                  scaling: Any) -> None:
    """Write stored integers as they are, with their (slope, intercept) in the header."""
    slope, inter = (1.0, 0.0) if scaling is None else (float(scaling[0]), float(scaling[1]))
    if stored.ndim != 3 or stored.dtype.kind not in "iu" or stored.dtype.newbyteorder("=") not in _CODE_OF:
        raise ValueError(f"stored values must be a 3D array of integers, got {stored.dtype} {stored.shape}")
    if not exact_scaling(stored.dtype, slope, inter):
        raise ValueError(f"slope {slope} and intercept {inter} of {stored.dtype} are not exact in float32")
    header = _header_block(stored.shape, stored.dtype, ras, (slope, inter))
    with atomic_path(path, suffix=".nii.gz" if gz else ".nii") as tmp:
        _write_file(tmp, gz, compresslevel, header, _voxel_chunks(stored))


def _write_file(tmp: Path, gz: bool, compresslevel: int, header: bytes, chunks: Iterator[Any]) -> None:
    if gz:
        from isal import igzip

        opened = igzip.open(tmp, "wb", compresslevel=compresslevel)
    else:
        opened = open(tmp, "wb")  # noqa: SIM115 - closed by the with below
    with opened as fh:
        fh.write(header)
        for chunk in chunks:
            fh.write(chunk)


def write_nifti(
    array: Any,
    affine_lps: Any,
    path: str | os.PathLike,
    *,
    is_label: bool,
    compresslevel: int = 1,
    scaling: tuple[float, float] | None = None,
    stored_dtype: Any = None,
    as_stored: bool = False,
) -> Path:
    """Write a 3D array as NIfTI with both qform and sform set (codes 1, scanner).

    Parameters
    ----------
    array : (I, J, K) array_like
        Voxels in (i, j, k) order. Label maps are stored as the smallest of
        uint8/int16/int32 holding their values; images as uint8, int16 or
        float32 (other types are converted, losslessly where possible), or as
        their stored integers (see ``stored_dtype``).
    affine_lps : (4, 4) array_like
        Voxel index to LPS millimetres; stored as RAS, as NIfTI requires.
    path : path-like
        Output ``.nii`` or ``.nii.gz`` (gzip-compressed). Written atomically.
    is_label : bool
        True for integer label maps.
    compresslevel : int, optional
        ISA-L gzip level for ``.nii.gz``, 0 (fastest) to 3 (smallest).
    scaling : (slope, intercept), optional
        How a float image's values were made from stored integers (a DICOM
        modality LUT, a NIfTI file's ``scl_slope``/``scl_inter``); None means
        (1, 0). Used only with ``stored_dtype``.
    stored_dtype : dtype, optional
        The integer type the values were stored as (``Volume.meta["stored_dtype"]``).
        When slope and intercept are integers and every value is exactly
        ``stored * slope + intercept``, the file keeps those integers with
        ``scl_slope``/``scl_inter``, as dcm2niix does (half the size of
        float32 for 16-bit data); otherwise it holds float32.
    as_stored : bool, optional
        ``array`` holds the stored integers themselves (a
        :class:`~medrecon.io.stored.StoredVolume`'s ``raw.array``) and ``scaling``
        makes their values: they are written as they are, with ``scl_slope`` and
        ``scl_inter``. The scaling must be exact
        (:func:`~medrecon.io.stored.exact_scaling`).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    GeometryError
        If the affine is not a valid (4, 4) voxel-to-world matrix.
    OutputError
        If the file cannot be written.
    ValueError
        With ``as_stored``: if ``array`` is not integers of a NIfTI type, or the scaling is not exact.
    """
    p = Path(path)
    name = p.name.lower()
    if not NIFTI.writes(name):
        raise UnsupportedFormatError(f"{p}: a NIfTI file name must end in .nii or .nii.gz")
    data = np.asarray(array) if as_stored else _storage(array, is_label)
    ras = LPS_TO_RAS @ check_affine(affine_lps)
    gz = name.endswith(".gz")
    if as_stored:
        _write_stored(data, ras, p, gz, compresslevel, scaling)
        return p
    integers = None if is_label else _integer_storage(data, scaling, stored_dtype)
    with atomic_path(p, suffix=".nii.gz" if gz else ".nii") as tmp:
        try:
            if integers is None:
                raise _Inexact
            stored, slope, inter = integers
            header = _header_block(data.shape, stored, ras, (slope, inter))
            _write_file(tmp, gz, compresslevel, header, _integer_chunks(data, stored, slope, inter))
        except _Inexact:  # written from the start again, as the values are
            header = _header_block(data.shape, data.dtype, ras, (1.0, 0.0))
            _write_file(tmp, gz, compresslevel, header, _voxel_chunks(data))
    return p
