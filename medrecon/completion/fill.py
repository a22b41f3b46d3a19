"""Turn per-label inside scores into one label map that keeps the drawing.

Arrays have the slice axis last: (I, J, K).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from medrecon.completion.sdf import LabelScore
from medrecon.completion.sparse import Annotation


def assemble(
    sparse: np.ndarray,
    scores: Iterable[LabelScore],
    annotations: Mapping[int, Annotation],
) -> np.ndarray:
    """Label every voxel with the label of highest positive score; keep drawn slices.

    Parameters
    ----------
    sparse : (I, J, K) ndarray of int
        The drawn labels (slice axis last).
    scores : iterable of LabelScore
        Inside scores per label (positive inside), each in its box.
    annotations : mapping of int to Annotation
        Where each label was drawn.

    Returns
    -------
    (I, J, K) ndarray, dtype of ``sparse``
        On a label's drawn slices that label is exactly as drawn, on the slices
        known to lack it (annotated slices outside its drawn range) it is absent,
        and every drawn voxel keeps its drawn label.
    """
    sparse = np.asarray(sparse)
    best = np.zeros(sparse.shape, np.float32)
    out = np.zeros_like(sparse)
    for item in scores:
        ann = annotations[item.label]
        bi, bj, bk = item.box
        score = np.array(item.score, dtype=np.float32, copy=True)
        for p in ann.present:
            if bk.start <= p < bk.stop:
                drawn = sparse[bi, bj, p] == item.label
                score[:, :, p - bk.start] = np.where(drawn, np.inf, -np.inf)
        for p in ann.absent:
            if bk.start <= p < bk.stop:
                score[:, :, p - bk.start] = -np.inf
        region_best = best[item.box]
        region_out = out[item.box]
        win = score > region_best
        region_out[win] = item.label
        region_best[win] = score[win]
    drawn = sparse != 0
    out[drawn] = sparse[drawn]
    return out
