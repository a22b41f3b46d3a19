"""The Segment widget's plain parts (no Qt): layers in, :mod:`medrecon.edit` out, a Labels layer edited.

The edits are medrecon's; here they are fed from napari layers and their
results written back into the Labels layer through napari's own undo history
(:meth:`napari.layers.Labels.data_setitem` on the voxels that changed, one
history item per edit), so that Ctrl+Z on the layer undoes a threshold, a
grow or a fill as it undoes a brush stroke. Sizes are millimetres and points
LPS millimetres, as everywhere in medrecon.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from medrecon.errors import GeometryError, InputError
from medrecon.imagekind import looks_like_ct
from medrecon.progress import ProgressFn, report
from medrecon.volume import LabelMap, Volume
from napari_plugin._geometry import (
    array_axis_across,
    from_layer_array,
    layer_affine,
    to_layer_array,
)
from napari_plugin._layers import META_KEY, labels_layer_data

#: Name and colour (RGBA) of the threshold preview layer.
PREVIEW_NAME = "threshold preview"
PREVIEW_COLOUR = (1.0, 0.85, 0.0, 1.0)


def is_ct(volume: Volume) -> bool:
    """Tell whether ``volume`` is a CT in HU (HU presets are offered for CTs only)."""
    if volume.units:
        return volume.units.upper() == "HU"
    return looks_like_ct(volume.array, modality=volume.modality or None)


def intensity_range(volume: Volume) -> tuple[float, float]:
    """Lowest and highest finite value of ``volume``, in its own units (HU, MR scanner units...)."""
    values = np.asarray(volume.array)
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
    if values.size == 0:
        raise InputError(f"image {volume.description!r} has no finite value to threshold")
    return float(values.min()), float(values.max())


def ct_presets() -> list[tuple[str, float | None, float | None]]:
    """(name, low HU, high HU) of each bundled preset, the starting points of a CT threshold."""
    from medrecon.sources.presets import load_presets

    return [(p.name, p.hu_min, p.hu_max) for p in load_presets().values()]


def present_labels(layer: Any) -> list[int]:
    """Return the label ids (not 0) in a Labels layer's data, ascending."""
    data = np.asarray(layer.data)
    if data.dtype.kind in "ub" and data.dtype.itemsize <= 2:
        ids = np.flatnonzero(np.bincount(data.ravel()))  # far faster than np.unique
    else:
        ids = np.unique(data)
    return [int(i) for i in ids if i != 0]


def check_same_grid(labels: LabelMap, image: Volume) -> None:
    """Raise :class:`~medrecon.errors.GeometryError` unless ``labels`` lie on ``image``'s voxel grid."""
    if labels.shape != image.shape or not np.allclose(labels.affine, image.affine, atol=1e-3):
        raise GeometryError(
            f"labels {labels.shape} and image {image.shape} are not on one voxel grid; "
            "make a Labels layer on the image with 'New labels'"
        )


def threshold_labels(
    labels: LabelMap,
    image: Volume,
    *,
    low: float | None,
    high: float | None,
    label: int,
    inside: int | None = None,
) -> LabelMap:
    """Give ``label`` to the voxels with ``low <= value <= high`` (inside label ``inside``, if given).

    The comparison is :func:`medrecon.edit.threshold`'s; other voxels keep their labels.
    """
    from medrecon import edit

    check_same_grid(labels, image)
    mask = edit.threshold(image, low=low, high=high,
                          inside=None if inside is None else labels.array == inside)
    array = np.array(labels.array)
    array[mask] = label
    return labels.replace(array=array)


def call_edit(
    fn: Callable[..., Any],
    *args: Any,
    stage: str,
    with_progress: bool = False,
    progress: ProgressFn | None = None,
    **kwargs: Any,
) -> Any:
    """Run one edit in a worker: report ``stage``, then ``fn(*args, **kwargs)`` (with ``progress`` if it takes one)."""
    report(progress, stage, 0.0)
    if with_progress:
        kwargs["progress"] = progress
    result = fn(*args, **kwargs)
    report(progress, stage, 1.0)
    return result


def write_labels(layer: Any, labels: LabelMap | np.ndarray) -> int:
    """Write an edit's result into a Labels layer as one undoable step; return the voxels changed.

    Only the voxels that differ are written, through ``layer.data_setitem``
    (napari's undo history). Meshes kept from an earlier reconstruction of the
    layer are dropped, since they no longer match it.

    Parameters
    ----------
    layer : napari.layers.Labels
        3D layer holding the labels the edit started from.
    labels : LabelMap or (I, J, K) ndarray of int
        The whole edited label array, on the layer's grid.
    """
    array = labels.array if isinstance(labels, LabelMap) else np.asarray(labels)
    new = to_layer_array(array)
    data = np.asarray(layer.data)
    if new.shape != data.shape:
        raise GeometryError(f"the edit gave shape {new.shape}, the layer {layer.name!r} has {data.shape}")
    info = np.iinfo(data.dtype)
    if new.size and (new.min() < info.min or new.max() > info.max):
        raise InputError(f"label ids up to {new.max()} do not fit layer {layer.name!r} ({data.dtype}); "
                         "use smaller label ids")
    changed = np.nonzero(data != new)
    if changed[0].size == 0:
        return 0
    if not data.flags.writeable:  # layers opened by the reader view a read-only LabelMap
        layer.data = np.array(data)  # napari keeps the undo history when data is replaced
    with layer.block_history():
        layer.data_setitem(changed, new[changed])
    meta = layer.metadata.get(META_KEY)
    if isinstance(meta, dict):
        meta.pop("organ_meshes", None)
    return int(changed[0].size)


def new_labels_data(image: Volume, *, name: str) -> tuple:
    """Build an empty Labels ``LayerDataTuple`` on ``image``'s voxel grid (uint16 ids)."""
    empty = LabelMap(array=np.zeros(image.shape, np.uint16), affine=image.affine)
    data, kwargs, kind = labels_layer_data(empty, name=name)
    return np.array(data), kwargs, kind  # a writable copy to paint on


def preview_data(image: Volume) -> tuple:
    """Build an empty threshold-preview Labels ``LayerDataTuple`` on ``image``'s grid (one colour)."""
    from napari.utils.colormaps import DirectLabelColormap

    kwargs = {
        "name": PREVIEW_NAME,
        "affine": layer_affine(image.affine),
        "units": "mm",
        "opacity": 0.6,
        "colormap": DirectLabelColormap(color_dict={1: np.array(PREVIEW_COLOUR), None: np.zeros(4)}),
        "metadata": {META_KEY: {"kind": "preview"}},
    }
    # np.zeros maps untouched pages lazily: only the previewed slices use memory
    return np.zeros(image.shape[::-1], np.uint8), kwargs, "labels"


def displayed_slice(viewer: Any, image_layer: Any, image: Volume) -> tuple[int, int] | None:
    """Return the (i, j, k) axis and index of ``image``'s slice shown in 2D, or ``None`` (3D, off it)."""
    if viewer.dims.ndisplay != 2 or len(viewer.dims.not_displayed) != 1 or image_layer.ndim != 3:
        return None
    axis = array_axis_across(image.affine, int(viewer.dims.not_displayed[0]))
    where = image_layer.world_to_data(viewer.dims.point)  # (k, j, i) data coordinates
    index = int(np.round(where[2 - axis]))
    return (axis, index) if 0 <= index < image.shape[axis] else None


def show_preview(layer: Any, mask: np.ndarray | None, where: tuple[int, int] | None,
                 shown: tuple[int, int] | None) -> tuple[int, int] | None:
    """Draw the 2D ``mask`` at slice ``where`` of the preview layer, clearing slice ``shown``.

    Returns the slice now drawn (``None`` when nothing is).
    """
    array = from_layer_array(layer.data)  # a writable view of the preview's own array
    if shown is not None:
        array[_slice(*shown)] = 0
    if mask is None or where is None:
        layer.refresh()
        return None
    array[_slice(*where)] = mask
    layer.refresh()
    return where


def _slice(axis: int, index: int) -> tuple:
    key: list[Any] = [slice(None)] * 3
    key[axis] = index
    return tuple(key)
