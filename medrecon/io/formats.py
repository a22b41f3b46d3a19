"""The file formats medrecon reads and writes: one table that every caller asks.

Each :class:`ImageFormat` knows its name, its suffixes (compound ones such as
``.nii.gz`` included), how to recognise a file by its first bytes, and its
reader and writer, named as ``"module:function"`` and imported only when a file
of that format is read or written (so that ``import medrecon`` stays fast and
pulls in neither nibabel nor pydicom). :class:`MeshFormat` does the same for
the mesh files medrecon writes. nibabel's ``imageclasses`` (``valid_exts`` on
each class) and ``loadsave.load`` are the model.

Helpers: :func:`format_by_name` (suffix only, no I/O), :func:`format_of` (name,
then content; never raises), :func:`detect_format` (raises), :func:`strip_suffix`,
:func:`image_suffixes`, :func:`writer_for`, :func:`mesh_format_of`.
"""

from __future__ import annotations

import importlib
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medrecon.errors import InputError, UnsupportedFormatError

#: Files looked at when deciding whether a folder holds DICOM (:func:`format_of`).
FOLDER_PROBE = 64


def _head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def _sniff_nifti(path: Path) -> bool:
    head = _head(path, 4096)
    if head[:2] == b"\x1f\x8b":  # gzip: inflate just the header, bounded
        try:
            head = zlib.decompressobj(31).decompress(head, 560)
        except zlib.error:
            return False
    one = len(head) >= 348 and head[344:348] in (b"n+1\0", b"ni1\0")
    two = len(head) >= 12 and head[4:8] in (b"n+2\0", b"ni2\0")
    return one or two


def _sniff_nrrd(path: Path) -> bool:
    return _head(path, 8)[:7] == b"NRRD000"


_MHA_KEY = re.compile(rb"\s*(ObjectType|ObjectSubType|NDims)\s*=", re.IGNORECASE)


def _sniff_metaimage(path: Path) -> bool:
    return _MHA_KEY.match(_head(path, 64)) is not None


def _sniff_dicom(path: Path) -> bool:
    from medrecon.io.dicom_header import looks_like_dicom

    return looks_like_dicom(path)


def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class ImageFormat:
    """An image file format.

    Attributes
    ----------
    name : str
        Short name (``"nifti"``), as :func:`detect_format` returns it.
    title : str
        Name for messages (``"NIfTI"``).
    suffixes : tuple of str
        Lower-case suffixes read, longest first (``(".nii.gz", ".nii")``).
    file_names : tuple of str
        Whole lower-case file names that mean this format (``"dicomdir"``).
    reader : str or None
        ``"module:function"`` reading one file into ``(array, affine, meta)``;
        None for DICOM, which is read as a series by :func:`medrecon.io.dicom.load_dicom`.
    writer : str or None
        ``"module:function"`` called as ``writer(array, affine, path, is_label=...)``.
    write_suffixes : tuple of str
        Suffixes the writer accepts.
    scales_integers : bool
        The writer can store integers with a slope and intercept (``scaling=``, ``stored_dtype=``).
    sniff : callable
        ``sniff(path) -> bool``: the file's first bytes are of this format. Never raises.
    """

    name: str
    title: str
    suffixes: tuple[str, ...]
    sniff: Callable[[Path], bool]
    file_names: tuple[str, ...] = ()
    reader: str | None = None
    writer: str | None = None
    write_suffixes: tuple[str, ...] = ()
    scales_integers: bool = False

    def suffix_of(self, name: str) -> str | None:
        """Return the suffix of ``name`` that is one of this format's, or None."""
        low = name.lower()
        return next((s for s in self.suffixes if low.endswith(s)), None)

    def matches(self, name: str) -> bool:
        """Tell whether the file name ``name`` has one of this format's suffixes or names."""
        return self.suffix_of(name) is not None or name.lower() in self.file_names

    def writes(self, name: str) -> bool:
        """Tell whether this format's writer accepts a file named ``name``."""
        return name.lower().endswith(self.write_suffixes) if self.write_suffixes else False

    def read(self, path: str | os.PathLike) -> tuple[Any, Any, dict[str, Any]]:
        """Read one file: ``(array (I, J, K), affine (4, 4) LPS, meta dict)``.

        Raises
        ------
        UnsupportedFormatError
            If this format has no single-file reader (DICOM).
        """
        if self.reader is None:
            raise UnsupportedFormatError(f"{path}: {self.title} is read as a series, not file by file")
        return _resolve(self.reader)(Path(path))

    def write(self, array: Any, affine: Any, path: str | os.PathLike, *, is_label: bool = False,
              **stored: Any) -> None:
        """Write ``array`` with its LPS ``affine`` to ``path`` (atomically).

        ``stored`` (``scaling``, ``stored_dtype``, ``as_stored``), for formats with
        :attr:`scales_integers`, keeps an image's stored integers with their slope and intercept.

        Raises
        ------
        UnsupportedFormatError
            If medrecon does not write this format.
        """
        if self.writer is None:
            raise UnsupportedFormatError(f"{path}: medrecon does not write {self.title}")
        _resolve(self.writer)(array, affine, Path(path), is_label=is_label, **stored)


@dataclass(frozen=True)
class MeshFormat:
    """A mesh file format medrecon writes (:func:`medrecon.io.mesh_export.write_mesh`).

    Attributes
    ----------
    name : str
        Short name, also the ``--format`` value (``"stl"``).
    title : str
        Name for messages.
    suffixes : tuple of str
        Lower-case suffixes.
    """

    name: str
    title: str
    suffixes: tuple[str, ...]

    def matches(self, name: str) -> bool:
        """Tell whether the file name ``name`` has this format's suffix."""
        return name.lower().endswith(self.suffixes)


#: Image formats in the order a file's content is sniffed.
IMAGE_FORMATS: dict[str, ImageFormat] = {
    f.name: f
    for f in (
        ImageFormat("nifti", "NIfTI", (".nii.gz", ".nii"), _sniff_nifti,
                    reader="medrecon.io.nifti:read_nifti", writer="medrecon.io.nifti:write_nifti",
                    write_suffixes=(".nii.gz", ".nii"), scales_integers=True),
        ImageFormat("nrrd", "NRRD", (".nrrd", ".nhdr"), _sniff_nrrd,
                    reader="medrecon.io.nrrd:read_nrrd", writer="medrecon.io.nrrd:write_nrrd",
                    write_suffixes=(".nrrd",)),
        ImageFormat("metaimage", "MetaImage", (".mha", ".mhd"), _sniff_metaimage,
                    reader="medrecon.io.metaimage:read_metaimage"),
        ImageFormat("dicom", "DICOM", (".dcm",), _sniff_dicom, file_names=("dicomdir",)),
    )
}

#: Mesh formats, in the order ``--format`` lists them (the first is the default).
MESH_FORMATS: dict[str, MeshFormat] = {
    f.name: f
    for f in (
        MeshFormat("stl", "STL (binary)", (".stl",)),
        MeshFormat("obj", "Wavefront OBJ", (".obj",)),
        MeshFormat("ply", "PLY (binary)", (".ply",)),
        MeshFormat("3mf", "3MF", (".3mf",)),
    )
}

DICOM = IMAGE_FORMATS["dicom"]
NIFTI = IMAGE_FORMATS["nifti"]


def format_by_name(name: str) -> ImageFormat | None:
    """Return the image format of a file name by its suffix (no I/O), or None."""
    return next((f for f in IMAGE_FORMATS.values() if f.matches(name)), None)


def sniff_format(path: str | os.PathLike) -> ImageFormat | None:
    """Return the image format of a file by its first bytes, or None. Never raises."""
    p = Path(path)
    return next((f for f in IMAGE_FORMATS.values() if f.sniff(p)), None)


def _folder_has_dicom(folder: Path, probe: int) -> bool:
    seen = 0
    for root, _dirs, files in os.walk(folder):
        for name in sorted(files):
            path = Path(root) / name
            if DICOM.matches(name) or DICOM.sniff(path):
                return True
            seen += 1
            if seen >= probe:
                return False
    return False


def format_of(path: str | os.PathLike, *, probe: int = FOLDER_PROBE) -> ImageFormat | None:
    """Return the image format of ``path``, or None when medrecon cannot read it. Never raises.

    A folder is DICOM when one of its first ``probe`` files (recursively) is; a
    file is known by its suffix, else by its first bytes.
    """
    try:
        p = Path(path)
        if p.is_dir():
            return DICOM if _folder_has_dicom(p, probe) else None
        if not p.is_file():
            return None
        return format_by_name(p.name) or sniff_format(p)
    except (OSError, ValueError):
        return None


def readable_formats() -> str:
    """Name the formats medrecon reads, for messages: ``"DICOM (files or folders), NIfTI (.nii, ...) ..."``."""
    parts = [f"{f.title} ({', '.join(reversed(f.suffixes))})" for f in IMAGE_FORMATS.values() if f is not DICOM]
    return f"{DICOM.title} (files or folders), " + ", ".join(parts[:-1]) + f" and {parts[-1]}"


def detect_format(path: str | os.PathLike) -> str:
    """Return ``"dicom"``, ``"nifti"``, ``"nrrd"`` or ``"metaimage"`` for ``path``.

    Any folder is ``"dicom"`` (the DICOM loader says what it finds there); a
    file is known by its suffix, else by its first bytes.

    Raises
    ------
    InputError
        If the path does not exist.
    UnsupportedFormatError
        If it is none of the supported formats.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p} does not exist")
    if p.is_dir():
        return DICOM.name
    fmt = format_by_name(p.name) or sniff_format(p)
    if fmt is None:
        raise UnsupportedFormatError(f"{p}: unknown file type; medrecon reads {readable_formats()}")
    return fmt.name


def image_suffixes(*, dicom: bool = True) -> tuple[str, ...]:
    """Every image suffix, longest first (``.nii.gz`` before ``.nii``); ``dicom=False`` leaves out ``.dcm``."""
    found = {s for f in IMAGE_FORMATS.values() if dicom or f is not DICOM for s in f.suffixes}
    return tuple(sorted(found, key=lambda s: (-len(s), s)))


def strip_suffix(name: str, *, dicom: bool = True) -> str:
    """``name`` without its image suffix (``ct.nii.gz`` -> ``ct``); unchanged if it has none."""
    low = name.lower()
    suffix = next((s for s in image_suffixes(dicom=dicom) if low.endswith(s)), "")
    return name[: len(name) - len(suffix)]


def writer_for(path: str | os.PathLike) -> ImageFormat:
    """Return the image format that writes ``path``, by its suffix.

    Raises
    ------
    UnsupportedFormatError
        If medrecon writes no image format with that suffix.
    """
    p = Path(path)
    fmt = next((f for f in IMAGE_FORMATS.values() if f.writes(p.name)), None)
    if fmt is None:
        raise UnsupportedFormatError(f"{p}: medrecon writes {', '.join(write_suffixes())}")
    return fmt


def write_suffixes() -> tuple[str, ...]:
    """Suffixes medrecon writes images and label maps to (``.nii.gz``, ``.nii``, ``.nrrd``)."""
    return tuple(s for f in IMAGE_FORMATS.values() for s in f.write_suffixes)


def mesh_suffixes() -> tuple[str, ...]:
    """Suffixes of the mesh formats, in :data:`MESH_FORMATS` order."""
    return tuple(s for f in MESH_FORMATS.values() for s in f.suffixes)


def mesh_format_by_name(name: str) -> MeshFormat | None:
    """Return the mesh format of a file name by its suffix, or None."""
    return next((f for f in MESH_FORMATS.values() if f.matches(name)), None)


def mesh_format_of(path: str | os.PathLike) -> str:
    """Return the mesh format name (``"stl"``) of ``path``, by its suffix.

    Raises
    ------
    UnsupportedFormatError
        If the suffix is not a mesh format medrecon writes.
    """
    p = Path(path)
    fmt = mesh_format_by_name(p.name)
    if fmt is None:
        raise UnsupportedFormatError(
            f"{p}: unknown mesh format {p.suffix!r}; medrecon writes {', '.join(mesh_suffixes())}"
        )
    return fmt.name
