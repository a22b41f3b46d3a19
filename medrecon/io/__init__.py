"""Reading and writing images, label maps and meshes.

Entry points: :func:`load` (any image -> :class:`~medrecon.volume.Volume`),
:func:`load_labels` (any label file -> :class:`~medrecon.volume.LabelMap`) and
:func:`save`. Which formats exist, their suffixes, sniffers, readers and writers:
:mod:`medrecon.io.formats`. Format modules convert to and from medrecon's LPS, (i, j, k)
convention at this edge; nothing past it sees another frame.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from medrecon.io.formats import DICOM, IMAGE_FORMATS, detect_format, writer_for
from medrecon.volume import LabelMap, Volume

__all__ = ["detect_format", "load", "load_labels", "save"]


def load(path: str | os.PathLike, *, series: str | None = None) -> Volume:
    """Load an image as a :class:`Volume` in LPS millimetres.

    Parameters
    ----------
    path : path-like
        DICOM folder, file or DICOMDIR; NIfTI; NRRD; MetaImage.
    series : str, optional
        For DICOM input holding several series: a SeriesInstanceUID, a series
        number, or ``"auto"``.
    """
    p = Path(path)
    fmt = detect_format(p)
    if fmt == DICOM.name:
        from medrecon.io.dicom import load_dicom

        return load_dicom(p, series=series)
    array, affine, meta = IMAGE_FORMATS[fmt].read(p)
    meta = dict(meta)
    return Volume(
        array=array,
        affine=affine,
        modality=str(meta.pop("modality", "")),
        units=str(meta.pop("units", "")),
        description=str(meta.pop("description", "")),
        source=str(p),
        meta=meta,
    )


def load_labels(
    path: str | os.PathLike,
    *,
    names: Mapping[int, str] | str | os.PathLike | None = None,
) -> LabelMap:
    """Load a label map with its names.

    Names come from ``names`` (a mapping or a JSON file path), else from the
    sidecar ``<stem>.json`` beside the file, else from names stored in the file
    (3D Slicer segmentation NRRD fields), else ``label_<id>`` on use.
    """
    from medrecon.io.sidecar import names_for, read_names

    p = Path(path)
    fmt = detect_format(p)
    if fmt == DICOM.name:
        from medrecon.io.dicom_seg import read_seg

        labels = read_seg(p)
    else:
        array, affine, _meta = IMAGE_FORMATS[fmt].read(p)
        # A sidecar wins over names stored in the file (3D Slicer's Segment*_Name fields).
        table = names_for(p) or dict(_meta.get("names") or {})
        labels = LabelMap(array=array, affine=affine, names=table, source=str(p))
    if names is not None:
        table = read_names(names) if isinstance(names, str | os.PathLike) else dict(names)
        labels = labels.replace(names=table)
    return labels


def save(obj: Volume | LabelMap, path: str | os.PathLike) -> Path:
    """Write a volume or label map in the format its suffix names (NIfTI or NRRD), atomically.

    Label maps also get their ``<stem>.json`` names sidecar.
    """
    p = Path(path)
    is_label = isinstance(obj, LabelMap)
    writer_for(p).write(obj.array, obj.affine, p, is_label=is_label)
    if is_label:
        from medrecon.io.sidecar import sidecar_path, write_names

        write_names(sidecar_path(p), obj.names)
    return p
