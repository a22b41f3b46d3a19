"""Tiny analytic training volumes (ellipsoid "organs" in a cylinder "body").

For smoke tests and quick experiments where the full phantom generator is too
slow: a water-density body with a liver-like (id 5, 60 HU), spleen-like (id 1,
45 HU) and kidney-like (id 2, 30 HU) ellipsoid, each placed and sized at random
by ``seed``. CT values in HU, LPS frame, (i, j, k) arrays.
"""

from __future__ import annotations

import numpy as np

from medrecon.volume import LabelMap, Volume

TOY_NAMES = {1: "spleen", 2: "kidney_right", 5: "liver"}


def make_toy(seed: int, *, shape: tuple[int, int, int] = (48, 48, 24),
             spacing: tuple[float, float, float] = (4.0, 4.0, 8.0)) -> tuple[Volume, LabelMap]:
    """Make a random toy CT and its labels.

    Parameters
    ----------
    seed : int
        Random seed: placement, sizes, noise.
    shape : tuple of 3 int
        Array shape (i, j, k).
    spacing : tuple of 3 float
        Voxel size in mm.

    Returns
    -------
    (Volume, LabelMap)
        CT in HU (float32) and uint8 labels on the same LPS grid.
    """
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing, dtype=float)
    ext = np.asarray(shape) * sp
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * s - e / 2 for n, s, e in zip(shape, sp, ext, strict=True)],
                        indexing="ij")
    x, y, z = grids
    body = (x / (0.45 * ext[0])) ** 2 + (y / (0.4 * ext[1])) ** 2 <= 1
    image = np.where(body, 0.0, -1000.0)
    labels = np.zeros(shape, np.uint8)
    # liver on the patient's right (-x in LPS), spleen on the left, kidney posterior right
    organs = ((5, 60.0, (-0.2, -0.05, 0.05), (0.17, 0.15, 0.25)),
              (1, 45.0, (0.22, 0.0, 0.1), (0.08, 0.08, 0.15)),
              (2, 30.0, (-0.12, 0.2, -0.15), (0.06, 0.06, 0.12)))
    for label, hu, centre, radii in organs:
        c = (np.asarray(centre) + rng.uniform(-0.03, 0.03, 3)) * ext
        r = np.asarray(radii) * rng.uniform(0.85, 1.15, 3) * ext
        inside = ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1
        inside &= body
        image[inside] = hu
        labels[inside] = label
    image = image + rng.normal(0, 10, shape)
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = -ext / 2 + sp / 2
    return (Volume(image.astype(np.float32), affine, modality="CT", units="HU"),
            LabelMap(labels, affine, names=TOY_NAMES))
