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

from medrecon.errors import GeometryError, MedreconError
from medrecon.io.formats import DICOM, format_of, readable_formats, strip_suffix
from napari_plugin._layers import image_layer_data, labels_layer_data

PathLike = str | os.PathLike
ReaderFn = Callable[[PathLike | Sequence[PathLike]], list[tuple]]


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
        return read_layers if format_of(Path(path)) else None
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


def read_path(p: Path) -> list[tuple]:
    """Read a DICOM folder or file, NIfTI, NRRD or MetaImage into ``LayerDataTuple``s.

    Raises
    ------
    MedreconError
        Anything that makes the path unreadable, with the CLI's message.
    """
    fmt = format_of(p)
    if fmt is None:
        from medrecon.errors import UnsupportedFormatError

        raise UnsupportedFormatError(f"{p}: not a file medrecon reads ({readable_formats()})")
    if fmt is DICOM:
        return _read_dicom(p)
    return [read_file_layer(p)]


def read_file_layer(p: Path) -> tuple:
    """Read one NIfTI/NRRD/MetaImage file as an Image or a Labels ``LayerDataTuple``.

    A names sidecar makes it a label map; otherwise :func:`medrecon.imagekind.classify`
    decides (a label-like file name alone does not make a CT a label map).
    """
    from medrecon.imagekind import classify, name_suggests_labels
    from medrecon.io import load, load_labels
    from medrecon.io.sidecar import has_sidecar

    stem = _stem(p)
    if has_sidecar(p) or name_suggests_labels(stem):
        try:
            labels = load_labels(p)
        except GeometryError:
            pass  # non-integer values: an image with a label-like name after all
        else:
            if has_sidecar(p) or classify(labels.array).is_labels:
                return labels_layer_data(labels, name=stem)
    volume = load(p)
    if classify(volume.array, modality=volume.modality).is_labels:
        # read again as labels to get names stored in the file (Slicer segment names)
        return labels_layer_data(load_labels(p), name=stem)
    return image_layer_data(volume, name=stem)


def _read_dicom(p: Path) -> list[tuple]:
    from medrecon.io import load_labels
    from medrecon.io.dicom import list_series, load_dicom, read_modality

    if p.is_file() and read_modality(p) == "SEG":
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


def _stem(p: Path) -> str:
    return strip_suffix(p.name)
