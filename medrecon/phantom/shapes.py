"""Implicit shapes evaluated on an axis-aligned grid in millimetres.

The phantom is drawn on a *canonical* grid whose array axes are the LPS world
axes (x = patient left, y = posterior, z = superior), each given by a 1-D vector
of ascending voxel-centre coordinates in mm. Shapes are evaluated only inside
their bounding boxes, with broadcasting (``x[:, None, None]``, ...), so the
cost grows with the organ, not with the field of view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """Voxel-centre coordinates (mm) of an axis-aligned grid, one vector per axis.

    Attributes
    ----------
    x, y, z : (N,) ndarray of float64
        Ascending coordinates along the LPS x, y and z axes, mm.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """(len(x), len(y), len(z))."""
        return (len(self.x), len(self.y), len(self.z))

    def box(self, lo, hi) -> tuple[tuple[slice, slice, slice], Grid] | None:
        """Index slices and sub-grid of the voxels inside ``[lo, hi]`` (mm), or None."""
        slices = []
        for axis, a, b in zip((self.x, self.y, self.z), lo, hi, strict=True):
            start = int(np.searchsorted(axis, a, side="left"))
            stop = int(np.searchsorted(axis, b, side="right"))
            if stop <= start:
                return None
            slices.append(slice(start, stop))
        sl = tuple(slices)
        return sl, Grid(self.x[sl[0]], self.y[sl[1]], self.z[sl[2]])  # type: ignore[return-value]

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the coordinate vectors shaped for broadcasting to (nx, ny, nz)."""
        return self.x[:, None, None], self.y[None, :, None], self.z[None, None, :]


@dataclass(frozen=True)
class Warp:
    """A smooth random displacement field: a sum of plane waves (mm).

    ``d(p) = sum_k amp_k * sin(wave_k . p + phase_k)``; it is evaluated
    analytically, so it is cheap and identical on any grid.
    """

    wave: np.ndarray  # (K, 3) rad / mm
    phase: np.ndarray  # (K,)
    amp: np.ndarray  # (K, 3) mm

    @property
    def max_mm(self) -> float:
        """Upper bound of the displacement length, mm."""
        return float(np.sum(np.linalg.norm(self.amp, axis=1)))

    def displace(self, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Displacement (dx, dy, dz), each broadcastable to ``grid.shape``, mm."""
        x, y = grid.x[:, None], grid.y[None, :]
        out = [np.zeros((1, 1, 1), np.float32) for _ in range(3)]
        for w, ph, a in zip(self.wave, self.phase, self.amp, strict=True):
            # sin(u + v) = sin u cos v + cos u sin v with u in-plane and v along z:
            # two 2D and two 1D sines instead of a 3D one.
            u = w[0] * x + w[1] * y + ph
            v = w[2] * grid.z
            su, cu = np.sin(u).astype(np.float32)[:, :, None], np.cos(u).astype(np.float32)[:, :, None]
            sv, cv = np.sin(v).astype(np.float32)[None, None, :], np.cos(v).astype(np.float32)[None, None, :]
            s = su * cv + cu * sv
            for c in range(3):
                out[c] = out[c] + np.float32(a[c]) * s
        return out[0], out[1], out[2]


def random_warp(
    rng: np.random.Generator,
    *,
    amplitude_mm: float,
    wavelength_mm: tuple[float, float] = (80.0, 220.0),
    waves: int = 3,
) -> Warp:
    """Draw a :class:`Warp` with ``waves`` plane waves of the given total amplitude."""
    directions = rng.normal(size=(waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    lengths = rng.uniform(*wavelength_mm, size=waves)
    wave = directions * (2 * np.pi / lengths)[:, None]
    amp = rng.normal(size=(waves, 3))
    amp *= amplitude_mm / max(np.sum(np.linalg.norm(amp, axis=1)), 1e-9)
    return Warp(wave=wave, phase=rng.uniform(0, 2 * np.pi, size=waves), amp=amp)


def rotation(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """(3, 3) rotation matrix from angles about x, then y, then z (radians)."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


@dataclass(frozen=True)
class Blob:
    """A warped superellipsoid: ``(sum |q_i / r_i|^e)^(1/e) <= 1`` with ``q = R^T (p + d(p) - c)``.

    Attributes
    ----------
    center : (3,) ndarray
        Centre, mm.
    radii : (3,) ndarray
        Semi-axes along the blob's own axes, mm.
    rot : (3, 3) ndarray
        Columns: the blob's axes in world coordinates.
    exponent : float
        2 for an ellipsoid; larger is boxier.
    warp : Warp or None
        Smooth deformation applied to the sampling positions.
    """

    center: np.ndarray
    radii: np.ndarray
    rot: np.ndarray
    exponent: float = 2.0
    warp: Warp | None = None

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned world box (lo, hi) that contains the blob, mm."""
        half = np.abs(self.rot) @ np.asarray(self.radii, float)
        if self.exponent > 2:
            half = half * np.sqrt(3)  # a boxy blob reaches its corners
        pad = self.warp.max_mm if self.warp is not None else 0.0
        return self.center - half - pad, self.center + half + pad

    def level(self, grid: Grid, *, z_samples: np.ndarray | None = None) -> np.ndarray:
        """Normalised radius on ``grid`` (< 1 inside, 1 on the surface), float32.

        With ``z_samples`` (ascending heights, mm, bracketing ``grid.z``), the
        level is evaluated at those heights only and interpolated linearly
        along z: accurate for this smooth function and much cheaper when
        ``grid.z`` samples each slice several times.
        """
        if z_samples is not None and len(z_samples) < len(grid.z):
            coarse = self.level(Grid(grid.x, grid.y, np.asarray(z_samples, float)))
            return _interp_z(coarse, np.asarray(z_samples, float), grid.z)
        x, y, z = grid.axes()
        px = (x - self.center[0]).astype(np.float32)
        py = (y - self.center[1]).astype(np.float32)
        pz = (z - self.center[2]).astype(np.float32)
        if self.warp is not None:
            dx, dy, dz = self.warp.displace(grid)
            px, py, pz = px + dx, py + dy, pz + dz
        r = self.rot.astype(np.float32)
        total = np.zeros(grid.shape, np.float32)
        for axis in range(3):
            q = px * r[0, axis] + py * r[1, axis] + pz * r[2, axis]
            q = np.abs(q) / np.float32(self.radii[axis])
            total += q**2 if self.exponent == 2 else q ** np.float32(self.exponent)
        return total ** np.float32(1.0 / self.exponent)


def _interp_z(values: np.ndarray, z_from: np.ndarray, z_to: np.ndarray) -> np.ndarray:
    """Linearly interpolate (nx, ny, len(z_from)) values to heights ``z_to`` (extrapolating at the ends)."""
    if len(z_from) == 1:
        return np.repeat(values, len(z_to), axis=2)
    upper = np.clip(np.searchsorted(z_from, z_to), 1, len(z_from) - 1)
    lower = upper - 1
    w = ((z_to - z_from[lower]) / (z_from[upper] - z_from[lower])).astype(np.float32)
    return values[:, :, lower] * (1 - w) + values[:, :, upper] * w
