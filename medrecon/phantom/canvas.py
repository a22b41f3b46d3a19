"""The drawing surface of the phantom: tissue and label arrays plus in-plane maps.

Arrays are on an axis-aligned grid in LPS millimetres (see
:mod:`medrecon.phantom.shapes`); each voxel holds the structure at its centre.
"""

from __future__ import annotations

import numpy as np

from medrecon.phantom.anatomy import Patient
from medrecon.phantom.shapes import Blob, Grid

_BODY_EXPONENT = 2.3


def _superellipse(u: np.ndarray, v: np.ndarray, e: float) -> np.ndarray:
    return (np.abs(u) ** e + np.abs(v) ** e) ** (1.0 / e)


class Canvas:
    """Tissue and label arrays plus the in-plane maps every layer uses.

    Parameters
    ----------
    patient : Patient
        The anatomy to draw.
    grid : Grid
        Voxel centres, mm.
    z_centres : (nz,) ndarray or None
        Slice centres when ``grid.z`` samples each slice several times.
    """

    def __init__(self, patient: Patient, grid: Grid, z_centres: np.ndarray | None) -> None:
        p = self.p = patient
        self.grid = grid
        self.z_centres = z_centres
        self.tissue = np.zeros(grid.shape, np.uint8)  # air
        self.labels = np.zeros(grid.shape, np.uint8)
        # In-plane maps (the body's cross-section does not change along z).
        plane = Grid(grid.x, grid.y, np.zeros(1))
        dx, dy, _ = p.body_warp.displace(plane)
        x = (grid.x[:, None] + dx[:, :, 0]).astype(np.float32)
        y = (grid.y[None, :] + dy[:, :, 0]).astype(np.float32)
        a, b, e = p.body_a, p.body_b, _BODY_EXPONENT
        self.r_body = _superellipse(x / a, y / b, e)
        self.r_fat = _superellipse(x / (a - p.fat), y / (b - p.fat), e)
        inner_a, inner_b = a - p.fat - p.muscle, b - p.fat - p.muscle
        self.r_cavity = _superellipse(x / inner_a, y / inner_b, e)
        self.rib_band = 4.5 * p.scale / (0.5 * (inner_a + inner_b))
        # Angle from the posterior midline: 0 at the back, pi/2 at the side, pi in front.
        self.phi = np.arctan2(np.abs(x) / a, y / b)
        self.diaphragm = self._diaphragm(grid.x[:, None], grid.y[None, :])

    def _diaphragm(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height (mm) of the diaphragm's upper surface over each (x, y): two domes."""
        p, s = self.p, self.p.scale
        w = 1.0 / (1.0 + np.exp(-x / (20.0 * s)))  # 0 on the right, 1 on the left
        dome = p.dome_right * (1 - w) + p.dome_left * w
        dx = (np.abs(x) - 62.0 * s) / (110.0 * s)
        dy = (y + 10.0 * s) / (110.0 * s)
        # Posterior recesses reach lower than the front.
        return (dome - 45.0 * s * (dx**2 + dy**2) - 30.0 * s * np.clip(dy, 0, None)).astype(np.float32)

    def region(self, lo, hi):
        """(slices, sub-grid, 2D slices) for the world box [lo, hi], or None when outside."""
        found = self.grid.box(lo, hi)
        if found is None:
            return None
        sl, sub = found
        return sl, sub, (sl[0], sl[1])

    def paint(self, sl, mask: np.ndarray, tissue: int, label: int = 0) -> None:
        """Set tissue and label where ``mask`` (shaped like the region ``sl``) holds."""
        self.tissue[sl][mask] = tissue
        self.labels[sl][mask] = label

    def blob_mask(self, blob: Blob, clip: str = "abdomen"):
        """(slices, sub-grid, level) of a blob with its mask clipped to a body compartment."""
        lo, hi = blob.bounds()
        found = self.region(lo, hi)
        if found is None:
            return None
        sl, sub, sl2 = found
        samples = None
        if self.z_centres is not None:
            zc = self.z_centres
            first = max(int(np.searchsorted(zc, sub.z[0], side="right")) - 1, 0)
            last = min(int(np.searchsorted(zc, sub.z[-1], side="left")) + 1, len(zc))
            samples = zc[first:last]
        level = blob.level(sub, z_samples=samples)
        inside = level < 1
        inside &= self.r_cavity[sl2][:, :, None] < 1
        h = self.diaphragm[sl2][:, :, None]
        if clip == "abdomen":
            inside &= sub.z[None, None, :] < h
        elif clip == "thorax":
            inside &= sub.z[None, None, :] > h + 4 * self.p.scale
        return sl, sub, level, inside
