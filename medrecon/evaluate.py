"""Comparing two label maps organ by organ: Dice, 95 % Hausdorff distance, surface Dice.

All three come from MONAI (:class:`~monai.metrics.DiceMetric`,
:class:`~monai.metrics.HausdorffDistanceMetric` with ``percentile=95``,
:class:`~monai.metrics.SurfaceDiceMetric`) and distances are in millimetres,
using the voxel spacing of the grid. Each organ is evaluated inside the
bounding box of its voxels in either map (plus a margin), which gives the same
numbers as the whole grid at a fraction of the cost.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping

import numpy as np

from medrecon.errors import EmptySegmentationError, GeometryError, require
from medrecon.labels import name_key
from medrecon.volume import LabelMap

#: Tolerance of the normalised surface Dice, in mm.
NSD_TOLERANCE_MM = 2.0


def _crop(a: np.ndarray, b: np.ndarray, margin: int = 2):
    both = a | b
    idx = [np.flatnonzero(both.any(axis=tuple(j for j in range(3) if j != i))) for i in range(3)]
    box = tuple(slice(max(0, ix[0] - margin), ix[-1] + 1 + margin) for ix in idx)
    return a[box], b[box]


def organ_scores(pred: np.ndarray, gt: np.ndarray, spacing, *,
                 tolerance_mm: float = NSD_TOLERANCE_MM) -> dict[str, float]:
    """Dice, HD95 (mm) and normalised surface Dice of two boolean masks.

    Parameters
    ----------
    pred, gt : (I, J, K) ndarray of bool
        Masks on one grid.
    spacing : (3,) array_like
        Voxel size in mm along i, j, k.
    tolerance_mm : float
        Surface-Dice tolerance.

    Returns
    -------
    dict
        ``dice`` in [0, 1]; ``hd95_mm`` and ``nsd`` are NaN when either mask is empty
        (``dice`` is then 0, or 1 when both are empty).
    """
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if not pred.any() or not gt.any():
        empty = not pred.any() and not gt.any()
        return {"dice": 1.0 if empty else 0.0, "hd95_mm": math.nan, "nsd": math.nan}
    p, g = _crop(pred, gt)
    yp = torch.from_numpy(np.stack([~p, p])[None].astype(np.float32))
    yg = torch.from_numpy(np.stack([~g, g])[None].astype(np.float32))
    sp = [float(s) for s in spacing]
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal argument
        warnings.simplefilter("ignore", FutureWarning)
        dice = float(compute_dice(yp, yg, include_background=False)[0, 0])
        hd = float(compute_hausdorff_distance(yp, yg, include_background=False, percentile=95,
                                              spacing=sp)[0, 0])
        nsd = float(compute_surface_dice(yp, yg, class_thresholds=[tolerance_mm],
                                         include_background=False, spacing=sp)[0, 0])
    return {"dice": dice, "hd95_mm": hd, "nsd": nsd}


def evaluate(pred: LabelMap, gt: LabelMap, *, names: Mapping[int, str] | None = None,
             labels: Iterable[int] | str | None = None) -> dict:
    """Per-organ Dice, HD95 and surface Dice of a prediction against ground truth.

    Organs are matched by name when both maps name their labels (the vocabulary's
    name rule, :func:`medrecon.labels.name_key`: ``"Kidney Left"`` is
    ``kidney_left``), so a prediction with TotalSegmentator's ids meets a truth
    with other ids; by id when either map has no names, or with ``names`` (one
    table for both). The result says which (``"matched_by"``).

    Parameters
    ----------
    pred, gt : LabelMap
        On the same grid (same shape, affines within 1e-3 mm).
    names : Mapping[int, str], optional
        Label id -> name for both maps (they share ids); default: each map's own names.
    labels : iterable of int or "predicted", optional
        Ground-truth label ids to score; ``"predicted"``: the prediction's labels
        (named or present); default: every id present in ``gt``.

    Returns
    -------
    dict
        ``{"organs": [{"name", "label", "dice", "hd95_mm", "nsd"}, ...], "mean_dice",
        "matched_by", "spacing_mm", "nsd_tolerance_mm"}``; Dice in [0, 1], distances
        in mm, NaN written as ``None`` for JSON. Matched by name, ``label`` is the
        ground truth's id and ``pred_label`` the prediction's (None where the other
        map lacks the organ).

    Raises
    ------
    GeometryError
        If the two maps are on different grids.
    EmptySegmentationError
        If there is nothing to score.
    """
    require("monai.metrics", extra="ml", feature="evaluation metrics", package="monai")
    if not pred.same_grid(gt):
        raise GeometryError(
            f"prediction grid {pred.shape} and ground-truth grid {gt.shape} differ (or their "
            "affines do): resample one onto the other first, e.g. labels.resample_like(gt)"
        )
    by_name = not names and bool(pred.names) and bool(gt.names)
    if by_name:
        pairs = _pairs_by_name(pred, gt, labels)
    else:
        table = dict(pred.names)
        table.update(gt.names)
        if names:
            table.update({int(k): str(v) for k, v in names.items()})
        if labels == "predicted":
            ids = sorted(set(pred.names) | set(pred.labels))
        else:
            ids = sorted(int(i) for i in labels) if labels is not None else gt.labels
        pairs = [(table.get(label, f"label_{label}"), label, label) for label in ids]
    if not pairs:
        raise EmptySegmentationError("the ground truth holds no labels to evaluate against")
    p = np.asarray(pred.array)
    g = np.asarray(gt.array)
    organs = []
    for name, label, pred_label in pairs:
        scores = organ_scores(_mask(p, pred_label), _mask(g, label), gt.spacing)
        entry = {"name": name, "label": label}
        if by_name:
            entry["pred_label"] = pred_label
        entry.update({k: (None if math.isnan(v) else round(v, 5)) for k, v in scores.items()})
        organs.append(entry)
    mean = float(np.mean([o["dice"] for o in organs]))
    return {"organs": organs, "mean_dice": round(mean, 5), "matched_by": "name" if by_name else "id",
            "spacing_mm": [round(float(s), 5) for s in gt.spacing],
            "nsd_tolerance_mm": NSD_TOLERANCE_MM}


def _mask(array: np.ndarray, label: int | None) -> np.ndarray:
    return np.zeros(array.shape, bool) if label is None else array == label


def _pairs_by_name(pred: LabelMap, gt: LabelMap,
                   labels: Iterable[int] | str | None) -> list[tuple[str, int | None, int | None]]:
    """(name, ground-truth id, prediction id) of each organ to score, matched by name key."""
    pred_ids = {name_key(pred.name_of(i)): i for i in sorted(set(pred.names) | set(pred.labels))}
    gt_ids = {name_key(gt.name_of(i)): i for i in sorted(set(gt.names) | set(gt.labels))}
    if labels == "predicted":
        return [(pred.name_of(i), gt_ids.get(key), i) for key, i in pred_ids.items()]
    ids = sorted(int(i) for i in labels) if labels is not None else gt.labels
    return [(gt.name_of(i), i, pred_ids.get(name_key(gt.name_of(i)))) for i in ids]


def format_table(result: Mapping) -> str:
    """Plain-text table of an :func:`evaluate` result, with how the organs were matched."""
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    by_name = result.get("matched_by") == "name"
    pred = f" {'pred':>5}" if by_name else ""
    lines = [f"{'label':>5}{pred}  {'name':<24} {'Dice':>7} {'HD95 mm':>8} {'NSD':>6}"]
    for o in result["organs"]:
        pred = f" {num(o.get('pred_label'), 'd'):>5}" if by_name else ""
        lines.append(f"{num(o['label'], 'd'):>5}{pred}  {o['name'][:24]:<24} {num(o['dice'], '.4f'):>7} "
                     f"{num(o['hd95_mm'], '.2f'):>8} {num(o['nsd'], '.3f'):>6}")
    lines.append(f"{'':>5}{' ' * 6 if by_name else ''}  {'mean Dice':<24} {result['mean_dice']:>7.4f}")
    if "matched_by" in result:
        lines.append("organs matched by name (label: the ground truth's id, pred: the prediction's)" if by_name
                     else "organs matched by label id")
    return "\n".join(lines)
