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
from medrecon.io.stored import StoredVolume
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

    Names come from ``names`` (a mapping or a JSON file path) when given, else by
    :func:`medrecon.labels.pick_names`: the sidecar ``<stem>.json`` beside the
    file, else the file's own table (TotalSegmentator's NIfTI header extension,
    DICOM SEG segment labels, 3D Slicer's NRRD ``Segment<N>_Name`` fields), else
    ``label_<id>`` on use. Label values are kept as they are in the file.
    """
    from medrecon.io.sidecar import names_for, read_names
    from medrecon.labels import pick_names

    p = Path(path)
    fmt = detect_format(p)
    if fmt == DICOM.name:
        from medrecon.io.dicom_seg import read_seg

        labels = read_seg(p)
        labels = labels.replace(names=pick_names(sidecar=names_for(p), file=labels.names))
    else:
        array, affine, _meta = IMAGE_FORMATS[fmt].read(p)
        table = pick_names(sidecar=names_for(p), file=_meta.get("names"))
        labels = LabelMap(array=array, affine=affine, names=table, source=str(p))
    if names is not None:
        table = read_names(names) if isinstance(names, str | os.PathLike) else dict(names)
        labels = labels.replace(names=table)
    return labels


def save(obj: Volume | LabelMap | StoredVolume, path: str | os.PathLike) -> Path:
    """Write a volume or label map in the format its suffix names (NIfTI or NRRD), atomically.

    Label maps also get their ``<stem>.json`` names sidecar, naming the labels
    present in the array (not a model's or a file's whole class table). An image whose
    ``meta`` gives ``stored_dtype`` and ``scaling`` (DICOM series, scaled NIfTI)
    keeps its stored integers in NIfTI where that is exact (see
    :func:`~medrecon.io.nifti.write_nifti`); a
    :class:`~medrecon.io.stored.StoredVolume` is written from its integers there,
    and as its values elsewhere.
    """
    p = Path(path)
    fmt = writer_for(p)
    if isinstance(obj, StoredVolume):
        if fmt.scales_integers and obj.exact:
            fmt.write(obj.raw.array, obj.raw.affine, p, scaling=(obj.slope, obj.intercept), as_stored=True)
            return p
        obj = obj.values()
    is_label = isinstance(obj, LabelMap)
    # an image keeps its stored integers with slope/intercept where the format can
    stored = {} if is_label or not fmt.scales_integers else {
        "scaling": obj.meta.get("scaling"), "stored_dtype": obj.meta.get("stored_dtype")}
    fmt.write(obj.array, obj.affine, p, is_label=is_label, **stored)
    if is_label:
        from medrecon.io.sidecar import sidecar_path, write_names

        present = set(obj.labels)  # a full class table (TotalSegmentator's 117) names only what is there
        write_names(sidecar_path(p), {k: v for k, v in obj.names.items() if k in present})
    return p
