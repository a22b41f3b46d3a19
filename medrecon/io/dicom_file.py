"""Bounded pydicom access to one DICOM file.

pydicom trusts the lengths a file declares: a corrupt element length (up to
4 GiB) makes it allocate a buffer of that size before the short read is
noticed, and a deflated data set is inflated whole before anything in it can be
checked. Every pydicom read of medrecon goes through this module:
:class:`CappedReader` caps each read at the bytes left in the file,
:func:`open_capped` checks a deflated data set in bounded steps first, and
:func:`read_dataset` parses a whole file (a SEG, an RTSTRUCT) that way.
:func:`describe_error` turns a foreign exception into a printable message.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medrecon.errors import DicomError, ResourceLimitError


def describe_error(exc: BaseException) -> str:
    """``"Type: message"`` of a foreign exception, control characters escaped, at most 300 characters.

    pydicom quotes the corrupt bytes it met; they must not reach a terminal raw.
    """
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(exc))
    return f"{type(exc).__name__}: {text[:300]}"


class CappedReader(io.BufferedReader):
    """A file whose ``read(n)`` never asks for more bytes than remain.

    pydicom reads each element value with ``read(length)``; a corrupt length (up
    to 4 GiB) would otherwise allocate a buffer of that size before the short
    read is noticed.

    Parameters
    ----------
    raw : io.RawIOBase
        The open file.
    size : int
        Its size in bytes.
    """

    def __init__(self, raw: io.RawIOBase, size: int) -> None:
        super().__init__(raw)
        self._size = size

    def read(self, n: int | None = -1) -> bytes:
        """Read at most ``n`` bytes, and never more than remain in the file."""
        if n is not None and n > 0:
            n = min(n, max(0, self._size - self.tell()))
        return super().read(n)


@contextlib.contextmanager
def open_capped(p: Path, size: int) -> Iterator[CappedReader]:
    """Open ``p`` for pydicom: deflated data checked first, reads capped at ``size`` bytes.

    pydicom's warnings are silenced while the handle is open; a corrupt deflated
    stream is a :class:`DicomError`, one that inflates too far a ``ResourceLimitError``.
    """
    from medrecon.errors import InputError
    from medrecon.io.dicom_fast import check_deflated

    try:
        check_deflated(p)
    except ResourceLimitError:
        raise
    except InputError as exc:
        raise DicomError(f"{p}: the deflated data set is corrupt ({describe_error(exc)})") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with CappedReader(io.FileIO(p, "rb"), size) as fh:
            yield fh


def read_dataset(path: str | os.PathLike, *, stop_before_pixels: bool = False,
                 specific_tags: list[str] | None = None) -> Any:
    """Parse a whole DICOM file (a SEG, an RTSTRUCT) with pydicom, bounded by its size.

    Element reads are capped at the bytes left in the file and a deflated data
    set is inflated in bounded steps first (see :func:`open_capped`). Values
    are converted lazily by pydicom: callers must still expect corrupt values.

    Raises
    ------
    DicomError
        If pydicom cannot parse the file.
    ResourceLimitError
        If a deflated data set inflates past ``MEDRECON_MAX_BYTES``.
    """
    import pydicom

    p = Path(path)
    try:
        with open_capped(p, p.stat().st_size) as fh:
            return pydicom.dcmread(fh, force=True, stop_before_pixels=stop_before_pixels,
                                   specific_tags=specific_tags)
    except (DicomError, ResourceLimitError):
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on corrupt files
        raise DicomError(
            f"{p} is not a readable DICOM file ({describe_error(exc)}); it may be truncated or "
            "corrupt: re-export it"
        ) from exc
