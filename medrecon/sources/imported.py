"""Import existing segmentations as a :class:`~medrecon.volume.LabelMap` on the image grid.

Sources, told apart by :func:`detect_label_source`:

- label images (NIfTI, NRRD, MetaImage) through :func:`medrecon.io.load_labels`,
  names from ``names`` or the ``<stem>.json`` sidecar;
- DICOM SEG through :func:`medrecon.io.dicom_seg.read_seg`;
- DICOM RTSTRUCT: closed planar contours (LPS mm, read and checked by
  :func:`medrecon.io.rtstruct.read_structure_set`) rasterised slice by slice onto
  the image grid, holes by the even-odd rule;
- TotalSegmentator output folders: one binary ``<name>.nii.gz`` per structure,
  ids from the TotalSegmentator ``total`` class map.

Ids and names follow :mod:`medrecon.labels`: SEG segment numbers and label-map
values are kept; RTSTRUCT ROIs and per-structure masks (names only) get the
vocabulary id of a known name, else ids from :data:`~medrecon.labels.FIRST_NEW_LABEL`
up. When the grids differ, labels are resampled onto the image (nearest neighbour).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medrecon.errors import EmptySegmentationError, GeometryError, InputError
from medrecon.imagekind import require_labels
from medrecon.io.dicom import read_modality
from medrecon.io.formats import DICOM, NIFTI, format_by_name, strip_suffix
from medrecon.labels import assign_ids, total_class_map
from medrecon.progress import ProgressFn, report
from medrecon.text import sanitize_text
from medrecon.volume import LabelMap, Volume


def _names_table(names: Mapping[int, str] | str | os.PathLike | None) -> dict[int, str]:
    if names is None:
        return dict(total_class_map())
    if isinstance(names, str | os.PathLike):
        from medrecon.io.sidecar import read_names

        return read_names(names)
    return {int(k): str(v) for k, v in names.items()}




def _dicom_in_folder(folder: Path) -> list[tuple[Path, str]]:
    found = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and not NIFTI.matches(p.name):
            modality = read_modality(p)
            if modality:
                found.append((p, modality))
    return found


def detect_label_source(path: str | os.PathLike) -> str:
    """``"image"``, ``"seg"``, ``"rtstruct"`` or ``"totalseg_folder"`` for ``path``.

    Raises
    ------
    InputError
        If the path does not exist or holds no segmentation medrecon can read.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p} does not exist")
    if p.is_dir():
        dicom = [(f, m) for f, m in _dicom_in_folder(p) if m in ("SEG", "RTSTRUCT")]
        if dicom:
            return dicom[0][1].lower()
        if any(NIFTI.matches(f.name) for f in p.iterdir()):
            return "totalseg_folder"
        raise InputError(f"{p}: a folder of labels must hold DICOM SEG/RTSTRUCT files or one "
                         "<structure>.nii.gz per structure (TotalSegmentator output)")
    if format_by_name(p.name) not in (None, DICOM):
        return "image"
    modality = read_modality(p)
    if modality in ("SEG", "RTSTRUCT"):
        return modality.lower()
    if modality:
        raise InputError(f"{p} is a DICOM {sanitize_text(modality)[:16]} image, not a segmentation: give it as the "
                         "input image, or give a DICOM SEG / RTSTRUCT / label image as --labels")
    return "image"


def read_totalseg_folder(
    folder: str | os.PathLike,
    *,
    names: Mapping[int, str] | str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
) -> LabelMap:
    """Combine TotalSegmentator's one-mask-per-structure output into one label map.

    Parameters
    ----------
    folder : path-like
        Folder of binary masks ``<structure>.nii.gz`` on one grid.
    names : mapping or JSON path, optional
        Id -> name table; default TotalSegmentator's ``total`` class map.

    Returns
    -------
    LabelMap
        (I, J, K) uint16 labels on the masks' grid; empty masks are left out.
    """
    from medrecon.io import load_labels

    files = sorted(f for f in Path(folder).iterdir() if NIFTI.matches(f.name))
    if not files:
        raise InputError(f"{folder} holds no .nii.gz masks")
    stems = [strip_suffix(f.name) for f in files]
    ids = dict(zip(stems, assign_ids(stems, vocabulary=_names_table(names), source=str(folder)), strict=True))
    ref: LabelMap | None = None
    masks: list[tuple[int, str, np.ndarray]] = []
    for n, (f, stem) in enumerate(zip(files, stems, strict=True)):
        lm = load_labels(f, names={})
        if ref is None:
            ref = lm
        elif not lm.same_grid(ref):
            lm = lm.resample_like(ref)
        mask = np.asarray(lm.array) > 0
        if mask.any():
            masks.append((*ids[stem], mask))
        report(progress, "import labels", (n + 1) / len(files))
    return _paint(masks, ref.affine, ref.shape, source=str(folder))


def _paint(masks: list[tuple[int, str, np.ndarray]], affine, shape, *, source: str) -> LabelMap:
    # larger structures first, so that organs inside a body outline stay visible
    out = np.zeros(shape, dtype=np.uint16)
    table: dict[int, str] = {}
    for label, name, mask in sorted(masks, key=lambda m: -int(m[2].sum())):
        out[mask] = label
        table[label] = name
    return LabelMap(out, affine, names=table, source=source)


def read_rtstruct(
    path: str | os.PathLike,
    image: Volume,
    *,
    names: Mapping[int, str] | str | os.PathLike | None = None,
) -> LabelMap:
    """Rasterise an RT Structure Set's closed planar contours onto ``image``'s grid.

    Each contour is mapped to voxel indices of ``image``; it must lie in one
    image plane (within half a voxel). Its interior, by voxel centres, is
    filled with :func:`skimage.draw.polygon`; contours of one structure in one
    plane combine by the even-odd rule, so inner contours cut holes.

    Parameters
    ----------
    path : path-like
        RTSTRUCT file.
    image : Volume
        The image the contours were drawn on (its LPS affine places them).
    names : mapping or JSON path, optional
        Id -> name table for the ROI names; default TotalSegmentator's.

    Returns
    -------
    LabelMap
        (I, J, K) uint16 labels on ``image``'s grid; names are the (sanitised) ROI
        names, or the table's names where they match.

    Raises
    ------
    GeometryError
        If no contour lies in a plane of the image grid.
    """
    from skimage.draw import polygon

    from medrecon.io.limits import check_alloc
    from medrecon.io.rtstruct import read_structure_set

    roi_names, rois = read_structure_set(path)
    ids = dict(zip(roi_names, assign_ids(list(roi_names.values()), vocabulary=_names_table(names),
                                         source=str(path)), strict=True))
    shape = image.shape
    inv = np.linalg.inv(image.affine)
    # one 2D mask per (ROI, plane) touched: memory follows the contours the file holds
    check_alloc((max(1, sum(len(c) for _n, c, _t in rois)), *sorted(shape)[1:]), np.bool_, str(path))
    planes: dict[int, dict[tuple[int, int], np.ndarray]] = {}
    placed = skipped = other_types = 0
    for number, contours, open_types in rois:
        other_types += open_types
        roi_planes = planes.setdefault(number, {})
        for pts in contours:
            ijk = pts @ inv[:3, :3].T + inv[:3, 3]
            axis = int(np.argmin(np.ptp(ijk, axis=0)))
            index = float(np.mean(ijk[:, axis]))
            if (np.ptp(ijk[:, axis]) > 0.5 or abs(index - round(index)) > 0.5 - 1e-6 or index < -0.5
                    or round(index) >= shape[axis]):
                skipped += 1
                continue
            a, b = [ax for ax in range(3) if ax != axis]
            rr, cc = polygon(ijk[:, a], ijk[:, b], shape=(shape[a], shape[b]))
            key = (axis, int(round(index)))
            plane = roi_planes.get(key)
            if plane is None:
                plane = roi_planes[key] = np.zeros((shape[a], shape[b]), dtype=bool)
            plane[rr, cc] ^= True  # even-odd: an inner contour is a hole
            placed += 1
    if placed == 0:
        if other_types and not skipped:
            raise GeometryError(f"{path}: none of its contours is CLOSED_PLANAR ({other_types} points or "
                                "open contours); medrecon fills closed planar contours only")
        raise GeometryError(
            f"{path}: none of its {skipped} contours lies in a plane of the image grid; "
            "was the structure set drawn on this series?"
        )
    sizes = {n: sum(int(m.sum()) for m in pl.values()) for n, pl in planes.items()}
    out = np.zeros(shape, dtype=np.uint16)
    painted: dict[int, str] = {}
    # larger structures first, so that organs inside a body outline stay visible
    for number in sorted((n for n in sizes if sizes[n]), key=lambda n: -sizes[n]):
        label, name = ids[number]
        for (axis, index), plane in planes[number].items():
            sel: list = [slice(None)] * 3
            sel[axis] = index
            out[tuple(sel)][plane] = label
        painted[label] = name
    if not painted:
        raise EmptySegmentationError(f"{path}: its contours enclose no voxel centre of the image")
    return LabelMap(out, image.affine, names=painted, source=str(path))


def import_labels(
    path: str | os.PathLike,
    *,
    image: Volume | None = None,
    names: Mapping[int, str] | str | os.PathLike | None = None,
    force_labels: bool = False,
    progress: ProgressFn | None = None,
) -> LabelMap:
    """Read an existing segmentation and put it on ``image``'s grid.

    Parameters
    ----------
    path : path-like
        Label image, DICOM SEG, RTSTRUCT, or a TotalSegmentator output folder.
    image : Volume, optional
        The image the labels belong to. Needed for RTSTRUCT; when given, the
        result is resampled onto its grid (nearest neighbour) if the grids differ.
    names : mapping or JSON path, optional
        Label id -> name table (e.g. TotalSegmentator's class map JSON).
    force_labels : bool
        Take a label image as a label map even when it looks like an intensity
        image (see :func:`medrecon.imagekind.require_labels`).

    Returns
    -------
    LabelMap
        Integer labels with names, on ``image``'s grid when ``image`` is given.

    Raises
    ------
    ImageKindError
        If a label image looks like an intensity image (and not ``force_labels``).
    """
    p = Path(path)
    kind = detect_label_source(p)
    report(progress, "import labels", 0.0)
    if kind == "rtstruct":
        if image is None:
            raise InputError(f"{p} is an RTSTRUCT: its contours need the image they were drawn on")
        rt = p if p.is_file() else next(f for f, m in _dicom_in_folder(p) if m == "RTSTRUCT")
        labels = read_rtstruct(rt, image, names=names)
    elif kind == "totalseg_folder":
        labels = read_totalseg_folder(p, names=names, progress=progress)
    elif kind == "seg":
        from medrecon.io.dicom_seg import read_seg

        seg = p if p.is_file() else next(f for f, m in _dicom_in_folder(p) if m == "SEG")
        labels = read_seg(seg)
        if names is not None:
            labels = labels.replace(names=_names_table(names))
    else:
        from medrecon.io import load_labels

        table = None if names is None else _names_table(names)
        labels = load_labels(p, names=table)
        require_labels(labels.array, source=str(p), force=force_labels)
    labels = labels.replace(names={k: sanitize_text(v) or f"label_{k}" for k, v in labels.names.items()})
    if image is not None and not labels.same_grid(image):
        had_voxels = bool(np.any(labels.array))
        labels = labels.resample_like(image)
        if had_voxels and not np.any(labels.array):
            raise EmptySegmentationError(
                f"{p}: its labels do not overlap the image (no labelled voxel lies on its grid); "
                "were they made on this series?"
            )
    report(progress, "import labels", 1.0)
    return labels


@dataclass(frozen=True)
class ImportedSource:
    """A segmentation the user already has, as a label source.

    Attributes
    ----------
    path : path-like
        Label image, DICOM SEG, RTSTRUCT, or a TotalSegmentator output folder.
    names : mapping or JSON path, optional
        Label id -> name table (e.g. TotalSegmentator's class map JSON).
    force_labels : bool
        Accept a label image that looks like an intensity image.
    """

    kind: ClassVar[str] = "imported"

    path: str | os.PathLike
    names: Mapping[int, str] | str | os.PathLike | None = None
    force_labels: bool = False

    def segment(self, volume: Volume, *, progress: ProgressFn | None = None) -> LabelMap:
        """Read the labels onto ``volume``'s grid (see :func:`import_labels`)."""
        return import_labels(self.path, image=volume, names=self.names,
                             force_labels=self.force_labels, progress=progress)

    def describe(self) -> dict[str, Any]:
        """Kind, name (the file's name), version (``None``) and format (see :func:`detect_label_source`)."""
        return {"kind": self.kind, "name": Path(self.path).name, "version": None,
                "format": detect_label_source(self.path)}
