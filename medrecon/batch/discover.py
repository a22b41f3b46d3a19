"""Finding the studies of a batch: folders of DICOM files, image files, or a list.

Rules, applied to every folder under the input (hidden ones skipped):

- a folder holding DICOM files (``.dcm`` or files with a DICOM header) is one
  study, its series chosen by the ``--series`` rule (default ``auto``);
- each NIfTI/NRRD/MetaImage file is one study, unless a ``<stem>.json`` names
  sidecar marks it as a label map;
- an empty folder (no files, no sub-folders) is a study too, so that a study
  whose export went wrong shows up as a failure instead of vanishing.

A ``.csv`` (column ``path``, optional ``id``) or text list (one path per line,
``#`` comments) names the studies instead; relative paths are relative to the
list's folder. Each study's output folder is its path relative to the input,
file suffixes removed, each part made safe with :func:`medrecon.atomic.safe_name`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from medrecon.atomic import safe_name
from medrecon.errors import InputError
from medrecon.io.formats import DICOM, format_by_name, strip_suffix
from medrecon.io.sidecar import has_sidecar

LIST_SUFFIXES = (".csv", ".txt", ".lst")


@dataclass(frozen=True)
class Study:
    """One study of a batch.

    Attributes
    ----------
    key : str
        Output folder relative to the batch output, POSIX separators.
    source : str
        DICOM folder or image file to reconstruct.
    kind : {"dicom", "image", "empty", "listed"}
        How it was found.
    """

    key: str
    source: str
    kind: str


def _strip_suffix(name: str) -> str:
    return strip_suffix(name, dicom=False)


def _is_image_file(name: str) -> bool:
    fmt = format_by_name(name)
    return fmt is not None and fmt is not DICOM


def _has_dicom(folder: Path, files: list[str]) -> bool:
    for name in files:
        if _is_image_file(name) or name.lower().endswith((".json", ".txt", ".csv", ".md")):
            continue
        if DICOM.matches(name) or DICOM.sniff(folder / name):
            return True
    return False


def _key(parts: list[str]) -> str:
    return "/".join(safe_name(p) for p in parts if p not in ("", "."))


def _unique(studies: list[Study]) -> list[Study]:
    seen: set[str] = set()
    out = []
    for s in studies:
        key, n = s.key, 1
        while key.lower() in seen:
            n += 1
            key = f"{s.key}_{n}"
        seen.add(key.lower())
        out.append(Study(key, s.source, s.kind))
    return out


def discover_studies(
    root: str | os.PathLike,
    *,
    exclude: str | os.PathLike | None = None,
) -> list[Study]:
    """List the studies under ``root`` (a folder, an image file or a study list).

    Parameters
    ----------
    root : path-like
        Input folder, single image file, or ``.csv``/``.txt`` list of studies.
    exclude : path-like, optional
        A folder not to search (the batch's own output folder, if inside ``root``).

    Returns
    -------
    list of Study
        Sorted by key; keys are unique.

    Raises
    ------
    InputError
        If ``root`` does not exist or no study is found.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root} does not exist")
    if root.is_file():
        if root.name.lower().endswith(LIST_SUFFIXES):
            return read_study_list(root)
        return [Study(safe_name(_strip_suffix(root.name)), str(root), "image")]
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[Study] = []
    for dirpath, dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (skip is None or (folder / d).resolve() != skip))
        files = sorted(f for f in filenames if not f.startswith("."))
        rel = folder.relative_to(root).parts
        if not files and not dirnames and not filenames and rel:
            found.append(Study(_key(list(rel)) or safe_name(root.name), str(folder), "empty"))
            continue
        for name in files:
            path = folder / name
            if _is_image_file(name) and not has_sidecar(path):
                found.append(Study(_key([*rel, _strip_suffix(name)]), str(path), "image"))
        if _has_dicom(folder, files):
            found.append(Study(_key(list(rel)) or safe_name(root.resolve().name), str(folder), "dicom"))
    if not found:
        raise InputError(f"no studies found under {root}: expected folders of DICOM files or "
                         "NIfTI/NRRD/MetaImage files (or a .csv/.txt list of them)")
    return _unique(sorted(found, key=lambda s: s.key))


def read_study_list(path: str | os.PathLike) -> list[Study]:
    """Studies named in a CSV (``path`` column, optional ``id``) or text list (one path a line).

    Raises
    ------
    InputError
        If the list is unreadable, has no ``path`` column, or is empty.
    """
    p = Path(path)
    base = p.parent
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the study list {p}: {exc}") from exc
    rows: list[tuple[str, str | None]] = []
    if p.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "path" not in fields:
            raise InputError(f"{p}: a study list CSV needs a 'path' column (optional 'id'); "
                             f"found columns {fields}")
        for row in reader:
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            if row.get("path"):
                rows.append((row["path"], row.get("id") or None))
    else:
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                rows.append((line, None))
    studies = []
    for entry, ident in rows:
        src = Path(entry).expanduser()
        src = src if src.is_absolute() else base / src
        if ident:
            key = _key(ident.replace("\\", "/").split("/"))
        else:
            try:
                parts = list(src.resolve().relative_to(base.resolve()).parts)
            except ValueError:
                parts = [src.name]
            parts[-1] = _strip_suffix(parts[-1])
            key = _key(parts)
        studies.append(Study(key or "study", str(src), "listed"))
    if not studies:
        raise InputError(f"{p} lists no studies")
    return _unique(studies)
