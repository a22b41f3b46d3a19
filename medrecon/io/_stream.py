"""Bounded reading of raw and compressed voxel data into exactly-sized buffers.

Format readers validate a header, size the array with
:func:`medrecon.io.limits.check_alloc`, then call :func:`read_exact`: it fills a
buffer of exactly the declared size and never inflates beyond it, so a
compressed stream that would expand to far more than declared (a "zip bomb")
costs no more than the declared size, and a short stream raises
:class:`~medrecon.errors.InputError`.
"""

from __future__ import annotations

import bz2
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from medrecon.errors import InputError, UnsupportedFormatError

CHUNK = 1 << 20  # compressed bytes read per step
OUT_CHUNK = 1 << 23  # most bytes inflated per step: bounds the temporary copy

#: zlib ``wbits`` values: gzip container, zlib container, either (auto-detected).
GZIP, ZLIB, AUTO = 31, 15, 47


def _zlib():
    try:
        from isal import isal_zlib  # ISA-L inflates about twice as fast as zlib

        return isal_zlib
    except ImportError:  # pragma: no cover - isal is a core dependency
        import zlib

        return zlib


class Inflater:
    """Sequential reader of a deflate (gzip/zlib, multi-member) or bzip2 stream.

    Parameters
    ----------
    fh : binary file object
        Positioned at the first compressed byte.
    wbits : int, optional
        :data:`GZIP`, :data:`ZLIB` or :data:`AUTO`; ignored for bzip2.
    bzip2 : bool, optional
        Read a bzip2 stream instead of deflate.
    multi_member : bool, optional
        Read on into further members after the end of the first (gzip and bzip2
        files may be concatenations). ``False`` stops at the end of the first
        stream, whatever bytes follow it (a deflated DICOM data set is one stream).
    """

    def __init__(self, fh: BinaryIO, *, wbits: int = GZIP, bzip2: bool = False,
                 multi_member: bool = True) -> None:
        self._fh = fh
        self._bzip2 = bzip2
        self._multi = multi_member
        self._wbits = wbits
        self._lib = None if bzip2 else _zlib()
        self._d = self._new()
        self._pending = b""

    def _new(self):
        if self._bzip2:
            return bz2.BZ2Decompressor()
        return self._lib.decompressobj(wbits=self._wbits)

    def _decompress(self, data: bytes, limit: int) -> bytes:
        try:
            out = self._d.decompress(data, limit)
        except (OSError, EOFError, ValueError) as exc:  # bz2 errors
            raise InputError(f"corrupt compressed data ({exc}); the file is damaged") from exc
        except Exception as exc:  # zlib.error / isal_zlib.error share no base besides Exception
            if self._lib is not None and isinstance(exc, self._lib.error):
                raise InputError(f"corrupt compressed data ({exc}); the file is damaged") from exc
            raise
        # zlib hands back the input it did not consume; bz2 keeps it internally.
        self._pending = b"" if self._bzip2 else self._d.unconsumed_tail
        return out

    def _needs_input(self) -> bool:
        return not self._pending and (not self._bzip2 or self._d.needs_input)

    def readinto(self, out: Any) -> int:
        """Fill ``out`` (a writable buffer) as far as the stream allows; return bytes written."""
        view = memoryview(out).cast("B")
        pos = 0
        while pos < len(view):
            if self._d.eof:
                if not self._multi:
                    break
                rest = self._d.unused_data or self._fh.read(CHUNK)
                if not rest.strip(b"\0"):  # end of file, or zero padding after the last member
                    break
                self._d = self._new()
                self._pending = rest
            if self._needs_input():
                self._pending = self._fh.read(CHUNK)
                if not self._pending:
                    break
            data = self._decompress(self._pending, min(len(view) - pos, OUT_CHUNK))
            view[pos : pos + len(data)] = data
            pos += len(data)
            del data  # free before the next step allocates its output
        return pos


def open_input(path: Path) -> BinaryIO:
    """Open ``path`` for binary reading, or raise :class:`InputError` saying why not."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot open {path}: {exc.strerror or exc}") from exc


def detached_data(path: Path, name: str, *, resave: str) -> Path:
    """Resolve the separate data file ``name`` that the header ``path`` points at.

    Parameters
    ----------
    path : Path
        The header file (.nhdr, .mhd).
    name : str
        Its data-file field: a path absolute or relative to the header's folder.
    resave : str
        How to re-save as one file, for the error message of a multi-file list.

    Raises
    ------
    UnsupportedFormatError
        For data split over several files.
    InputError
        When the data file does not exist or is not a regular file.
    """
    text = name.strip()
    if text.upper().startswith("LIST") or "%" in text or len(text.split()) > 1:
        raise UnsupportedFormatError(
            f"{path}: image data split over several files ({text!r}) is not supported; {resave}"
        )
    target = Path(text) if Path(text).is_absolute() else path.parent / text
    if not target.is_file():
        raise InputError(f"{path}: its data file {target} does not exist or is not a regular file")
    return target


def readinto(reader: Any, buf: np.ndarray, path: Path) -> int:
    """Fill ``buf`` from ``reader`` (a file or :class:`Inflater`); return the bytes read."""
    view = memoryview(buf).cast("B")
    pos = 0
    try:
        while pos < len(view):
            got = reader.readinto(view[pos:])
            if not got:
                break
            pos += got
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return pos


def read_exact(reader: Any, n: int, what: str, path: Path) -> np.ndarray:
    """Read exactly ``n`` bytes into a new (n,) uint8 array.

    Raises
    ------
    InputError
        If the stream ends early or is corrupt.
    """
    buf = np.empty(n, dtype=np.uint8)
    got = readinto(reader, buf, path)
    if got < n:
        raise InputError(
            f"{path}: file ends after {got} of {n} expected bytes of {what}; "
            "the file is truncated or corrupt: copy or export it again"
        )
    return buf


def skip(reader: Any, n: int, what: str, path: Path) -> None:
    """Consume ``n`` bytes from ``reader`` in bounded steps."""
    scratch = np.empty(min(max(n, 1), CHUNK), dtype=np.uint8)
    while n > 0:
        step = min(n, scratch.size)
        if readinto(reader, scratch[:step], path) < step:
            raise InputError(f"{path}: file ends inside the {what}; it is truncated")
        n -= step


def to_native(array: np.ndarray) -> np.ndarray:
    """Byte-swap a non-native-endian array in place and return a native-typed view."""
    if array.dtype.isnative:
        return array
    return array.byteswap(inplace=True).view(array.dtype.newbyteorder("="))
