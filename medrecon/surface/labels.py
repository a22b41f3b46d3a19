"""One surface per label of a label map: bounding boxes in one pass, crops, threads."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from medrecon.errors import EmptySegmentationError, InputError
from medrecon.progress import ProgressFn, report
from medrecon.surface.extract import bounding_box, mask_surface, resolve_engine
from medrecon.triangles import TriangleMesh
from medrecon.volume import LabelMap


def label_surfaces(
    labels: LabelMap,
    *,
    organs: Iterable[int | str] | None = None,
    iso_spacing: float | None = None,
    detail_mm: Mapping[int, float] | None = None,
    workers: int = 1,
    engine: str = "auto",
    progress: ProgressFn | None = None,
) -> dict[int, TriangleMesh]:
    """One closed marching-cubes surface per label, in LPS mm with outward winding.

    Parameters
    ----------
    labels : LabelMap
        Integer label map with its affine.
    organs : iterable of int or str, optional
        Label ids or names to extract (default: every label present).
    iso_spacing : float, optional
        Resample each mask to cubic voxels of this size (mm) before extraction.
    detail_mm : mapping of int to float, optional
        Label id -> size (mm) of the voxel blocks that label's surface is
        extracted from (see :func:`medrecon.surface.extract.mask_surface`);
        labels not in it are extracted at single voxels. Ignored with ``iso_spacing``.
    workers : int
        Threads extracting labels concurrently (0: one per CPU core).
    engine : {"auto", "skimage", "vtk"}
        Marching-cubes implementation; ``"auto"`` picks VTK's flying edges when
        installed, which gives the same surface as scikit-image, faster.
    progress : ProgressFn, optional
        Called with ``("surfaces", fraction)``.

    Returns
    -------
    dict of int to TriangleMesh
        Label id -> surface, in ascending id order.

    Raises
    ------
    EmptySegmentationError
        If the label map is empty or a requested organ has no voxels.
    """
    boxes = label_boxes(labels, organs)
    engine = resolve_engine(engine)
    return surfaces_in_boxes(labels, boxes, iso_spacing=iso_spacing, detail_mm=detail_mm, workers=workers,
                             engine=engine, progress=progress)


def surfaces_in_boxes(
    labels: LabelMap,
    boxes: dict[int, tuple[slice, slice, slice]],
    *,
    iso_spacing: float | None = None,
    detail_mm: Mapping[int, float] | None = None,
    workers: int = 1,
    engine: str = "auto",
    progress: ProgressFn | None = None,
) -> dict[int, TriangleMesh]:
    """:func:`label_surfaces` for labels whose bounding boxes are already known."""
    engine = resolve_engine(engine)
    array = np.asarray(labels.array)
    ids = sorted(boxes)
    workers = (os.cpu_count() or 1) if workers == 0 else max(1, int(workers))
    detail = {} if iso_spacing is not None or detail_mm is None else dict(detail_mm)

    def one(label: int) -> TriangleMesh:
        sub = array[boxes[label]] == label
        shift = np.eye(4)
        shift[:3, 3] = [s.start for s in boxes[label]]
        return mask_surface(sub, labels.affine @ shift, iso_spacing=iso_spacing, detail_mm=detail.get(label),
                            engine=engine)

    out: dict[int, TriangleMesh] = {}
    report(progress, "surfaces", 0.0)
    if workers == 1 or len(ids) == 1:
        for n, label in enumerate(ids):
            out[label] = one(label)
            report(progress, "surfaces", (n + 1) / len(ids))
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {label: pool.submit(one, label) for label in ids}
            for n, label in enumerate(ids):
                out[label] = futures[label].result()
                report(progress, "surfaces", (n + 1) / len(ids))
    return out


def label_boxes(
    labels: LabelMap, organs: Iterable[int | str] | None = None
) -> dict[int, tuple[slice, slice, slice]]:
    """Bounding boxes (i, j, k slices) of the requested labels, in one pass over the array.

    Parameters
    ----------
    labels : LabelMap
    organs : iterable of int or str, optional
        Label ids or names (default: every label present).

    Returns
    -------
    dict of int to tuple of 3 slices
        In ascending label order.

    Raises
    ------
    EmptySegmentationError
        If nothing is labelled or a requested organ has no voxels.
    InputError
        If a requested name is not in the label table.
    """
    array = np.asarray(labels.array)
    if array.dtype.kind not in "iu":
        array = array.astype(np.int64)
    if array.dtype.kind == "i" and array.size and (lowest := int(array.min())) < 0:
        warnings.warn(f"the label map has negative values (down to {lowest}); organ ids are "
                      "positive, so those voxels are treated as background", UserWarning,
                      stacklevel=2)
    if array.size and int(array.max()) > 65535:
        # sparse huge ids: one box per present id rather than a list up to the maximum
        present = {}
        for label in np.unique(array):
            if label > 0:
                present[int(label)] = bounding_box(array == label)
    else:
        # find_objects skips labels < 1 and needs no temporary copy of the array;
        # run it on the box around all labels (cheap to find) rather than the whole field
        outer = bounding_box(array)
        present = {}
        if outer is not None:
            crop = array[outer]
            if int(crop.max()) == 1 and (crop.dtype.kind == "u" or int(crop.min()) >= 0):
                present = {1: outer}  # a binary mask: one label, and its box is the outer box
            else:
                from scipy import ndimage

                present = {
                    n + 1: tuple(slice(o.start + b.start, o.start + b.stop) for o, b in zip(outer, box, strict=True))
                    for n, box in enumerate(ndimage.find_objects(crop))
                    if box is not None
                }
    if not present:
        raise EmptySegmentationError(
            "the label map holds no labelled voxels; check that the right file was given"
        )
    if organs is None:
        return dict(sorted(present.items()))
    out = {}
    for key in organs:
        try:
            label = labels.label_of(key)
        except KeyError as exc:
            raise InputError(str(exc.args[0])) from None
        if label not in present:
            raise EmptySegmentationError(
                f"organ {key!r} (label {label}) has no voxels in this label map; "
                f"present labels: {', '.join(map(str, present))}"
            )
        out[label] = present[label]
    return dict(sorted(out.items()))


def select_labels(labels: LabelMap, organs: Iterable[int | str] | None) -> list[int]:
    """Resolve ``organs`` (ids or names; None = all present) to sorted label ids.

    Raises
    ------
    EmptySegmentationError
        If nothing is labelled or a requested organ has no voxels.
    InputError
        If a requested name is not in the label table.
    """
    return list(label_boxes(labels, organs))
