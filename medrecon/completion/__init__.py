"""Shape completion: fill organs between the slices a user drew.

:func:`complete` takes a sparse :class:`~medrecon.volume.LabelMap` (each organ
drawn on a few slices, the other slices 0) and returns the filled label map on
the same grid. Two methods:

* ``"sdf"`` - signed-distance interpolation between drawn slices (the classical
  baseline, :mod:`medrecon.completion.sdf`);
* ``"network"`` - the image-to-shape network (:mod:`medrecon.completion.shape_net`):
  a shared 2D CNN encodes the drawn slices, fully connected layers fuse them into
  a latent code, a 3D transposed-convolution decoder turns it into an occupancy
  grid in the organ's box, refined with the image and the SDF interpolation.

Drawn slices are ground truth and are kept exactly. Arrays follow medrecon's
(i, j, k) order; slices are taken across ``axis`` (2: the k axis).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from medrecon.completion.fill import assemble
from medrecon.completion.sdf import sdf_scores
from medrecon.completion.sparse import annotations, drawn_axes, every_nth, per_label, plane_name
from medrecon.errors import InputError
from medrecon.progress import ProgressFn, report
from medrecon.volume import LabelMap, Volume

METHODS = ("network", "sdf")

__all__ = ["METHODS", "complete", "every_nth", "per_label"]


def complete(
    sparse: LabelMap,
    *,
    image: Volume | None = None,
    method: str = "network",
    model: str = "default",
    axis: int = 2,
    slices: Iterable[int] | None = None,
    stop_at_drawn: bool = False,
    progress: ProgressFn | None = None,
) -> LabelMap:
    """Fill every drawn label between (and a little beyond) its drawn slices.

    Parameters
    ----------
    sparse : LabelMap
        Labels drawn on some slices across ``axis``; other slices are 0.
    image : Volume, optional
        The image the labels were drawn on (CT in HU). Used by the network
        method; resampled onto the label grid if it lies on another one.
    method : {"network", "sdf"}
        Image-to-shape network or signed-distance interpolation.
    model : str
        ``"default"`` (the committed shape model) or a checkpoint folder/file.
    axis : int
        Array axis across which the slices were drawn.
    slices : iterable of int, optional
        Slices the user annotated, including ones left empty on purpose. Default:
        the slices holding any label.
    stop_at_drawn : bool
        End every organ at its first and last drawn slice. By default an organ
        extends up to one typical gap beyond them (it rarely ends exactly there).
    progress : ProgressFn, optional
        Called with (stage, fraction).

    Returns
    -------
    LabelMap
        Same grid, dtype and names as ``sparse``. Each label is exactly as drawn
        on its drawn slices and absent from annotated slices outside its drawn
        range; every drawn voxel keeps its label. Organs are assumed contiguous
        along ``axis``.

    Raises
    ------
    EmptySegmentationError
        If nothing is drawn.
    InputError
        If the labels were drawn on slices across another axis than ``axis``
        (the message names their plane and the axis to pass).
    ModelError
        If the shape model cannot be loaded.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if axis not in (0, 1, 2, -1, -2, -3):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    axis %= 3
    report(progress, "completion: reading annotations", 0.0)
    _check_plane(sparse, axis)
    array = np.moveaxis(np.asarray(sparse.array), axis, 2)
    spacing = np.asarray(sparse.spacing)[[a for a in range(3) if a != axis] + [axis]]
    anns = annotations(sparse, axis=axis, slices=slices)
    if method == "sdf":
        scores = sdf_scores(array, anns, spacing=spacing)
    else:
        from medrecon.completion.shape_net import load_shape_model, network_scores

        img = None
        if image is not None:
            img_vol = image if image.same_grid(sparse) else image.resample_like(sparse)
            img = np.moveaxis(np.asarray(img_vol.array, dtype=np.float32), axis, 2)
        net = load_shape_model(model)
        scores = network_scores(array, anns, spacing=spacing, image=img, model=net, progress=progress)
    report(progress, "completion: assembling labels", 0.95)
    out = assemble(array, scores, anns)
    if stop_at_drawn:
        for label, ann in anns.items():
            beyond = out == label
            beyond[:, :, ann.present[0]:ann.present[-1] + 1] = False
            out[beyond] = 0
    report(progress, "completion: done", 1.0)
    return sparse.replace(array=np.moveaxis(out, 2, axis), source="")


def _check_plane(sparse: LabelMap, axis: int) -> None:
    """Refuse labels drawn on slices across another axis: completing them across ``axis`` fails."""
    found = drawn_axes(np.asarray(sparse.array))
    if found and axis not in found:
        other = min(found)
        raise InputError(
            f"the labels were drawn on {plane_name(sparse.affine, other)} slices (across array axis "
            f"{other}), not across axis {axis} ({plane_name(sparse.affine, axis)}): complete with "
            f"axis={other} (--axis {other})"
        )
