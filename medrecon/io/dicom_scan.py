"""Finding DICOM files: a folder (recursively), a single file or a DICOMDIR.

:func:`scan` reads every header once (:func:`medrecon.io.dicom_header.read_headers`)
and returns the frames found plus the files it had to skip.
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from medrecon.errors import DicomError, InputError
from medrecon.io.dicom_header import (
    DICOMDIR_CLASS,
    FrameHeader,
    NotDicomFile,
    looks_like_dicom,
    read_headers,
)

__all__ = ["FrameHeader", "ScanResult", "looks_like_dicom", "scan"]


def _dicomdir_files(path: Path, ds) -> list[Path]:
    root = path.parent
    files = []
    for record in ds.get("DirectoryRecordSequence") or ():
        ref = record.get("ReferencedFileID")
        if not ref:
            continue
        parts = [str(ref)] if isinstance(ref, str) else [str(r) for r in ref]
        files.append(root.joinpath(*parts))
    return files


@dataclass(frozen=True)
class ScanResult:
    """Frames found by :func:`scan`, and the files that were skipped.

    Attributes
    ----------
    frames : list of FrameHeader
        One entry per image frame (and one per non-image object, rows == 0).
    skipped : list of str
        ``"path: reason"`` for files that looked like DICOM but could not be read.
    """

    frames: list[FrameHeader]
    skipped: list[str]


def _candidate_files(p: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(p):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return files


def _what_is(p: Path) -> str:
    """Describe a path that is not a regular file, for messages ("a character device", ...)."""
    try:
        mode = p.stat().st_mode
    except OSError:
        if p.is_symlink():
            return f"a broken link to {os.readlink(p)}"
        return "missing"
    kind = ("a folder" if stat.S_ISDIR(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a named pipe" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    return f"a link to {p.resolve()}, {kind}" if p.is_symlink() else kind


def scan(path: str | os.PathLike) -> ScanResult:
    """Read the headers of every DICOM file under ``path``.

    Parameters
    ----------
    path : path-like
        A folder (searched recursively; files that are not DICOM are ignored), a
        single DICOM file, or a DICOMDIR (the files it references are read).

    Raises
    ------
    InputError
        If the path does not exist or a folder holds no DICOM file.
    DicomError
        If a single file given directly cannot be read.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p} does not exist")
    if not (p.is_file() or p.is_dir()):
        raise InputError(f"{p} is {_what_is(p)}, not a DICOM file or folder")
    if p.is_file():
        frames, ds = read_headers(p)
        if str(ds.get("SOPClassUID", "")) != DICOMDIR_CLASS and "DirectoryRecordSequence" not in ds:
            return ScanResult(frames, [])
        files = _dicomdir_files(p, ds)
        if not files:
            raise DicomError(f"DICOMDIR {p} references no image files")
        files_from_dicomdir = True
    else:
        files = _candidate_files(p)
        files_from_dicomdir = False
    frames: list[FrameHeader] = []
    skipped: list[str] = []
    for f in files:
        if not f.is_file():
            what = _what_is(f)
            if what == "missing" and files_from_dicomdir:
                skipped.append(f"{f}: referenced by the DICOMDIR but missing")
            elif what != "a folder":
                skipped.append(f"{f}: not a regular file ({what})")
            continue
        try:
            found, ds = read_headers(f)
        except NotDicomFile:
            continue  # README, thumbnails and other files beside the images
        except DicomError as exc:
            text = str(exc)  # messages name their file already
            skipped.append(text if text.startswith(str(f)) else f"{f}: {text}")
            continue
        if "DirectoryRecordSequence" in ds:
            continue  # a DICOMDIR inside the folder: its files are found by the walk
        frames.extend(found)
    if not frames:
        hint = f" ({len(skipped)} unreadable: {skipped[0]})" if skipped else ""
        raise InputError(f"no DICOM files found in {p}{hint}")
    if skipped:
        warnings.warn(
            f"{len(skipped)} DICOM file(s) under {p} could not be read and were skipped, "
            f"e.g. {skipped[0]}",
            stacklevel=2,
        )
    return ScanResult(frames, skipped)
