"""Reading and writing images, label maps and meshes.

Entry points: :func:`load` (any image -> :class:`~medrecon.volume.Volume`),
:func:`load_labels` (any label file -> :class:`~medrecon.volume.LabelMap`) and
:func:`save`. Format modules convert to and from medrecon's LPS, (i, j, k)
convention at this edge; nothing past it sees another frame.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from medrecon.errors import InputError, UnsupportedFormatError
from medrecon.volume import LabelMap, Volume

NIFTI = (".nii", ".nii.gz")
NRRD = (".nrrd", ".nhdr")
METAIMAGE = (".mha", ".mhd")


def detect_format(path: str | os.PathLike) -> str:
    """Return ``"dicom"``, ``"nifti"``, ``"nrrd"`` or ``"metaimage"`` for ``path``.

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
    name = p.name.lower()
    if p.is_dir():
        return "dicom"
    if name.endswith(NIFTI):
        return "nifti"
    if name.endswith(NRRD):
        return "nrrd"
    if name.endswith(METAIMAGE):
        return "metaimage"
    from medrecon.io.dicom import looks_like_dicom

    if name.endswith(".dcm") or name == "dicomdir" or looks_like_dicom(p):
        return "dicom"
    raise UnsupportedFormatError(
        f"{p}: unknown file type; medrecon reads DICOM (files or folders), "
        "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd)"
    )


def _read_array(path: Path, fmt: str):
    if fmt == "nifti":
        from medrecon.io.nifti import read_nifti

        return read_nifti(path)
    if fmt == "nrrd":
        from medrecon.io.nrrd import read_nrrd

        return read_nrrd(path)
    if fmt == "metaimage":
        from medrecon.io.metaimage import read_metaimage

        return read_metaimage(path)
    raise UnsupportedFormatError(f"{path}: no reader for format {fmt!r}")


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
    if fmt == "dicom":
        from medrecon.io.dicom import load_dicom

        return load_dicom(p, series=series)
    array, affine, meta = _read_array(p, fmt)
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
    if fmt == "dicom":
        from medrecon.io.dicom_seg import read_seg

        labels = read_seg(p)
        labels = labels.replace(names=pick_names(sidecar=names_for(p), file=labels.names))
    else:
        array, affine, _meta = _read_array(p, fmt)
        table = pick_names(sidecar=names_for(p), file=_meta.get("names"))
        labels = LabelMap(array=array, affine=affine, names=table, source=str(p))
    if names is not None:
        table = read_names(names) if isinstance(names, str | os.PathLike) else dict(names)
        labels = labels.replace(names=table)
    return labels


def save(obj: Volume | LabelMap, path: str | os.PathLike) -> Path:
    """Write a volume or label map to NIfTI (or NRRD by suffix), atomically.

    Label maps also get their ``<stem>.json`` names sidecar. An image whose
    ``meta`` gives ``stored_dtype`` and ``scaling`` (DICOM series, scaled NIfTI)
    keeps its stored integers in NIfTI where that is exact (see
    :func:`~medrecon.io.nifti.write_nifti`).
    """
    p = Path(path)
    name = p.name.lower()
    is_label = isinstance(obj, LabelMap)
    if name.endswith(NIFTI):
        from medrecon.io.nifti import write_nifti

        meta = {} if is_label else obj.meta  # an image keeps its stored integers where it can
        write_nifti(obj.array, obj.affine, p, is_label=is_label, scaling=meta.get("scaling"),
                    stored_dtype=meta.get("stored_dtype"))
    elif name.endswith(".nrrd"):
        from medrecon.io.nrrd import write_nrrd

        write_nrrd(obj.array, obj.affine, p)
    else:
        raise UnsupportedFormatError(f"{p}: medrecon writes .nii, .nii.gz and .nrrd")
    if is_label:
        from medrecon.io.sidecar import sidecar_path, write_names

        write_names(sidecar_path(p), obj.names)
    return p
