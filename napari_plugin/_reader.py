"""npe2 reader: DICOM folders and files, NIfTI, NRRD and MetaImage.

Images become Image layers and label files Labels layers (with organ names),
placed in napari's world = patient LPS millimetres ordered (z, y, x). A DICOM
folder holding several volume series opens one Image layer per series (the
layer list is the series picker: the first is shown, the others start hidden);
localizers and other non-volume series are skipped with a notice.

:func:`napari_get_reader` returns ``None`` for paths it does not handle and
never raises. Errors while reading a path it accepted are shown as napari
notifications with medrecon's message (the same text as the CLI).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medrecon.errors import GeometryError, MedreconError
from napari_plugin._layers import image_layer_data, labels_layer_data

PathLike = str | os.PathLike
ReaderFn = Callable[[PathLike | Sequence[PathLike]], list[tuple]]

_LABEL_WORDS = ("seg", "label", "mask")
#: At most this many distinct values for an integer image to be taken as a label map.
MAX_LABELS = 255
#: Files looked at when deciding whether a folder holds DICOM.
_DIR_PROBE = 64


def napari_get_reader(path: PathLike | Sequence[PathLike]) -> ReaderFn | None:
    """Return :func:`read_layers` if medrecon can read ``path``, else ``None``.

    Parameters
    ----------
    path : path-like or list of one path-like
        A DICOM folder or file, or a NIfTI, NRRD or MetaImage file.
    """
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        return read_layers if _format_of(Path(path)) else None
    except Exception:  # noqa: BLE001 - a reader hook must never raise
        return None


def read_layers(path: PathLike | Sequence[PathLike]) -> list[tuple]:
    """Read ``path`` into napari ``LayerDataTuple``s.

    On a medrecon error the message is shown as a napari error notification
    and the null-layer sentinel ``[(None,)]`` is returned, so that napari adds
    nothing and does not pile a second, less helpful error on top.
    """
    from napari.utils.notifications import show_error

    p = Path(path[0] if isinstance(path, list | tuple) else path)
    try:
        return read_path(p)
    except MedreconError as exc:
        show_error(str(exc))
        return [(None,)]


def _format_of(p: Path) -> str | None:
    """``"dicom"``, ``"nifti"``, ``"nrrd"``, ``"metaimage"`` or ``None`` (not ours)."""
    from medrecon.io import METAIMAGE, NIFTI, NRRD

    name = p.name.lower()
    if p.is_dir():
        return "dicom" if _folder_has_dicom(p) else None
    if not p.is_file():
        return None
    for fmt, suffixes in (("nifti", NIFTI), ("nrrd", NRRD), ("metaimage", METAIMAGE)):
        if name.endswith(suffixes):
            return fmt
    from medrecon.io.dicom import looks_like_dicom

    return "dicom" if looks_like_dicom(p) else None


def _folder_has_dicom(folder: Path) -> bool:
    from medrecon.io.dicom import looks_like_dicom

    seen = 0
    for root, _dirs, files in os.walk(folder):
        for f in sorted(files):
            if looks_like_dicom(Path(root) / f):
                return True
            seen += 1
            if seen >= _DIR_PROBE:
                return False
    return False


def read_path(p: Path) -> list[tuple]:
    """Read a DICOM folder or file, NIfTI, NRRD or MetaImage into ``LayerDataTuple``s.

    Raises
    ------
    MedreconError
        Anything that makes the path unreadable, with the CLI's message.
    """
    fmt = _format_of(p)
    if fmt is None:
        from medrecon.errors import UnsupportedFormatError

        raise UnsupportedFormatError(f"{p}: not a DICOM, NIfTI, NRRD or MetaImage file")
    if fmt == "dicom":
        return _read_dicom(p)
    return [read_file_layer(p)]


def read_file_layer(p: Path) -> tuple:
    """Read one NIfTI/NRRD/MetaImage file as an Image or a Labels ``LayerDataTuple``."""
    from medrecon.io import load, load_labels
    from medrecon.io.sidecar import sidecar_path

    stem = _stem(p)
    if sidecar_path(p).is_file() or any(w in stem.lower() for w in _LABEL_WORDS):
        try:
            return labels_layer_data(load_labels(p), name=stem)
        except GeometryError:
            pass  # non-integer values: an image with a label-like name after all
    volume = load(p)
    if looks_like_labels(volume.array):
        # read again as labels to get names stored in the file (Slicer segment names)
        return labels_layer_data(load_labels(p), name=stem)
    return image_layer_data(volume, name=stem)


def looks_like_labels(array: np.ndarray) -> bool:
    """Tell whether ``array`` is non-negative integers with at most :data:`MAX_LABELS` values.

    Parameters
    ----------
    array : ndarray
        Any image array. Float arrays are images, even when their values happen
        to be whole numbers (CT stored with a rescale slope is read as float).
    """
    a = np.asarray(array)
    if a.dtype.kind not in "iub" or a.size == 0:
        return False
    # a strided sample rejects a CT quickly before the full unique count
    sample = a.reshape(-1)[:: max(1, a.size // 200_000)]
    if np.unique(sample).size > MAX_LABELS:
        return False
    return bool(a.min() >= 0) and np.unique(a).size <= MAX_LABELS + 1


def _read_dicom(p: Path) -> list[tuple]:
    from medrecon.io import load_labels
    from medrecon.io.dicom import list_series, load_dicom

    if p.is_file() and _dicom_modality(p) == "SEG":
        return [labels_layer_data(load_labels(p), name=_stem(p))]
    series = list_series(p)
    images = [s for s in series if s.volume_like]
    if len(images) <= 1:
        # the loader picks the one volume (or a lone thin stack) and words any error
        volume = load_dicom(p)
        name = _describe(images[0]) if images else (volume.description or _stem(p))
        return [image_layer_data(volume, name=name)]
    images.sort(key=lambda s: -int(s.n_slices))
    layers = []
    for n, info in enumerate(images):
        data, kwargs, kind = image_layer_data(load_dicom(p, series=info.key), name=_describe(info))
        kwargs["visible"] = n == 0
        layers.append((data, kwargs, kind))
    _notify_series(p, images, [s for s in series if s not in images])
    return layers


def _notify_series(p: Path, images: list, skipped: list) -> None:
    from napari.utils.notifications import show_info

    text = (
        f"{p.name} holds {len(images)} volume series, opened as layers "
        f"(only '{_describe(images[0])}' is visible): " + "; ".join(_describe(s) for s in images)
    )
    if skipped:
        text += f". Skipped {len(skipped)} series (not a volume, or no SeriesInstanceUID): " + "; ".join(
            _describe(s) for s in skipped
        )
    show_info(text)


def _describe(info) -> str:
    number = getattr(info, "number", None)
    desc = (getattr(info, "description", "") or "").strip() or str(getattr(info, "modality", ""))
    head = f"{number}: " if number not in (None, "") else ""
    return f"{head}{desc} ({info.n_slices} slices)"


def _dicom_modality(p: Path) -> str:
    import pydicom

    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["Modality"], force=True)
    except Exception:  # noqa: BLE001 - unreadable headers are the loader's to report
        return ""
    return str(getattr(ds, "Modality", "")).upper()


def _stem(p: Path) -> str:
    name = p.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
