"""npe2 reader: DICOM folders and files, NIfTI, NRRD and MetaImage.

Images become Image layers and label files Labels layers (with organ names),
placed in napari's world = patient LPS millimetres ordered (z, y, x).

DICOM: a folder holding several volume series asks which to open (the choice of
the CLI's ``--series auto`` preselected; without a window to ask in, that choice
is opened and the others are named in a notice); localizers and other
non-volume series are skipped. A single file dropped from a series offers the
whole series. An image opens in the window its DICOM header gives
(WindowCenter/WindowWidth), else in a window for its body part (brain for a
head), else, for a CT, the soft-tissue window.

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
from napari_plugin._layers import image_layer_data, labels_layer_data, window_limits

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

    from napari_plugin._view import attach_current_viewer

    attach_current_viewer()  # orientation and 3D fixes, before the layers go in
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


#: Window (center, width) per DICOM BodyPartExamined, for images whose header gives none.
REGION_WINDOWS = {"HEAD": (40.0, 80.0), "BRAIN": (40.0, 80.0)}


def _read_dicom(p: Path) -> list[tuple]:
    from medrecon.io import load_labels
    from medrecon.io.dicom import list_series, load_dicom, read_modality

    if p.is_file() and read_modality(p) == "SEG":
        return [labels_layer_data(load_labels(p), name=_stem(p))]
    if p.is_file():
        return _read_dicom_file(p)
    series = list_series(p)
    images = [s for s in series if s.volume_like]
    if len(images) <= 1:
        # the loader picks the one volume (or a lone thin stack) and words any error
        volume = load_dicom(p)
        name = _describe(images[0]) if images else (volume.description or _stem(p))
        return [_dicom_layer(volume, images[0] if images else None, name)]
    chosen = _choose_series(p, images, [s for s in series if s not in images])
    if not chosen:
        return [(None,)]  # the user cancelled
    layers = []
    for n, info in enumerate(chosen):
        data, kwargs, kind = _dicom_layer(load_dicom(p, series=info.key), info, _describe(info))
        kwargs["visible"] = n == 0
        layers.append((data, kwargs, kind))
    return layers[1:] + layers[:1]  # the shown series last, so it is the active layer


def _choose_series(p: Path, images: list, skipped: list) -> list:
    """Ask which series to open; without a window to ask in, take ``--series auto``'s choice."""
    from napari.utils.notifications import show_info

    from medrecon.io.dicom_series import select_series

    auto, _ = select_series(images, "auto", source=str(p))
    default = images.index(auto)
    ask = _asker()
    if ask is not None:
        rows = ask.ask_series(p.name, [_describe(s) for s in images], default)
        if rows is None:
            return []
        return [images[r] for r in ([default] if default in rows else []) + [r for r in rows if r != default]]
    text = (f"{p.name} holds {len(images)} volume series; opened '{_describe(auto)}' "
            "(CT first, then thinnest slices, then most slices). Also there: "
            + "; ".join(_describe(s) for s in images if s is not auto))
    if skipped:
        text += f". Skipped {len(skipped)} series (not a volume, or no SeriesInstanceUID): " + "; ".join(
            _describe(s) for s in skipped
        )
    show_info(text)
    return [auto]


def _read_dicom_file(p: Path) -> list[tuple]:
    """One DICOM file: offer the whole series it belongs to, when its folder holds more of it."""
    from napari.utils.notifications import show_info

    from medrecon.io.dicom import list_series, load_dicom

    [own, *_] = list_series(p)
    try:
        siblings = [s for s in list_series(p.parent)
                    if s.uid and s.uid == own.uid and s.volume_like and s.n_slices > own.n_slices]
    except MedreconError:
        siblings = []
    if siblings:
        whole = siblings[0]
        ask = _asker()
        answer = ask.ask_whole_series(p.name, _describe(whole)) if ask is not None else False
        if answer is None:
            return [(None,)]
        if answer:
            return [_dicom_layer(load_dicom(p.parent, series=whole.key), whole, _describe(whole))]
        if ask is None:
            show_info(f"{p.name} is one slice of the series {_describe(whole)}; "
                      f"open its folder {p.parent.name} to see all of it")
    return [_dicom_layer(load_dicom(p), own, _stem(p))]


def _dicom_layer(volume, info, name: str) -> tuple:
    """Build the Image ``LayerDataTuple`` of a DICOM volume, in its window (see :func:`dicom_window`)."""
    frames = getattr(info, "frames", ()) if info is not None else ()
    window = dicom_window(frames[0].path) if frames else None
    return image_layer_data(volume, name=name, window=window)


def dicom_window(path: str | os.PathLike) -> tuple[float, float] | None:
    """Contrast limits from a DICOM file's header: its window, else its body part's; or ``None``.

    The first WindowCenter/WindowWidth pair is used (the modality's own units:
    HU for CT); without one, :data:`REGION_WINDOWS` by BodyPartExamined.
    """
    from medrecon.io.dicom_file import read_dataset

    try:
        ds = read_dataset(path, stop_before_pixels=True,
                          specific_tags=["WindowCenter", "WindowWidth", "BodyPartExamined"])
        center, width = (_first(ds.get(tag)) for tag in ("WindowCenter", "WindowWidth"))
        region = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    except (MedreconError, ValueError, TypeError):
        return None
    if center is not None and width is not None and width > 0:
        return window_limits(center, width)
    if region in REGION_WINDOWS:
        return window_limits(*REGION_WINDOWS[region])
    return None


def _first(value) -> float | None:
    """First number of a (possibly multi-valued) DICOM decimal string, or ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, str | bytes) or not hasattr(value, "__len__"):
        return float(value)
    return float(value[0]) if len(value) else None


def _asker():
    """Return the module that asks questions in a window (:mod:`._qt._series_dialog`), or ``None``.

    ``None`` when no window of this Qt application is on screen (scripts, tests).
    """
    try:
        from qtpy.QtWidgets import QApplication
    except Exception:  # noqa: BLE001 - no Qt: nobody to ask
        return None
    app = QApplication.instance()
    if app is None or not any(w.isVisible() for w in app.topLevelWidgets()):
        return None
    from napari_plugin._qt import _series_dialog

    return _series_dialog


def _describe(info) -> str:
    number = getattr(info, "number", None)
    desc = (getattr(info, "description", "") or "").strip() or str(getattr(info, "modality", ""))
    head = f"{number}: " if number not in (None, "") else ""
    return f"{head}{desc} ({info.n_slices} slices)"


def _stem(p: Path) -> str:
    return strip_suffix(p.name)
