"""Volume-preserving smoothing: Taubin's windowed-sinc low-pass filter.

The filter is the one 3D Slicer applies to segmentations
(``vtkWindowedSincPolyDataFilter``, after Taubin, Zhang and Golub, "Optimal
surface smoothing as filter design", 1996): vertex positions are passed through a
polynomial of the umbrella Laplacian ``K = I - W`` (``W`` averages each vertex's
neighbours) that approximates a low-pass filter with a Nuttall-windowed sinc,
evaluated with the Chebyshev recurrence. Low frequencies, hence volume and
shape, are kept; the voxel staircase is removed.

Strength mapping (Slicer's "smoothing factor" ``s`` in [0, 1]):
``pass_band = 10 ** (-4 * s)`` with 20 iterations, as Slicer's closed-surface
conversion does. Slicer's default ``s = 0.5`` (pass band 0.01) is our default.
``s = 0`` leaves the mesh unchanged. One deliberate difference: the filter's
unit response at the pass band is solved to :data:`TOLERANCE` instead of VTK's
1e-3, which keeps the volume of thin structures better; with
``tolerance=VTK_TOLERANCE`` :func:`windowed_sinc` reproduces VTK's output.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from medrecon.errors import InputError
from medrecon.triangles import TriangleMesh

#: Slicer's default smoothing factor for segmentation closed surfaces.
SLICER_DEFAULT_SMOOTHING = 0.5
#: Iterations of the Chebyshev recurrence (Slicer's choice).
ITERATIONS = 20
#: How close to 1 the response at the pass band is solved. VTK (hence Slicer)
#: stops at 1e-3; that small error in the pass band shrinks thin structures
#: visibly (a 3 mm-voxel rib: -21 % volume instead of -9 %), so we solve it tightly.
TOLERANCE = 1e-9
#: Shells with fewer vertices are checked for collapse after smoothing.
SMALL_SHELL = 2000
#: VTK's tolerance, to reproduce Slicer's output exactly.
VTK_TOLERANCE = 1e-3


def pass_band(factor: float) -> float:
    """Slicer's mapping from smoothing factor ``s`` in (0, 1] to the filter pass band."""
    return 10.0 ** (-4.0 * factor)


def _nuttall(n: int) -> np.ndarray:
    t = np.pi * np.arange(n + 1) / (n + 1)
    return 0.355768 + 0.487396 * np.cos(t) + 0.144232 * np.cos(2 * t) + 0.012604 * np.cos(3 * t)


def sinc_coefficients(
    band: float, iterations: int = ITERATIONS, *, tolerance: float = TOLERANCE
) -> np.ndarray:
    """Chebyshev coefficients of the windowed-sinc filter for pass band ``band``.

    The cut-off is shifted (Newton's method, kept in a bracket of the first
    solution) so that the filter's response at the pass band is exactly 1: that
    is what keeps the volume.

    Returns
    -------
    (iterations + 1,) ndarray of float64
    """
    if not 0.0 < band < 2.0:
        raise ValueError(f"pass band must be in (0, 2), got {band}")
    n = int(iterations)
    if n < 2:
        raise ValueError(f"windowed-sinc smoothing needs at least 2 iterations, got {iterations}")
    w = _nuttall(n)
    i = np.arange(1, n + 1)
    theta = math.acos(1.0 - 0.5 * band)  # angle of the pass band on the Chebyshev axis
    cos_at = np.cos(i * theta)

    def coeffs(th: float) -> np.ndarray:
        return np.r_[w[0] * th / np.pi, 2.0 * w[1:] * np.sin(i * th) / (i * np.pi)]

    # The response at the pass band rises from about 1/2 (sigma = 0) to 1, then ripples
    # about 1 by ~1e-6: plain Newton, asked for 1e-9, lands in the ripple and may leap
    # anywhere (the coefficients then blow up, e.g. at s = 0.1 and 0.3). So the first
    # crossing of 1 is bracketed on a fine grid and Newton's steps are kept inside the
    # bracket (bisection where one would leave it); from sigma = 0, as in VTK.
    grid = np.linspace(0.0, np.pi - theta, 4097)
    at = theta + grid[:, None]
    rise = w[0] * at[:, 0] / np.pi + (2.0 * w[1:] * np.sin(i * at) / (i * np.pi)) @ cos_at
    above = np.flatnonzero(rise >= 1.0)  # the last point (cut-off at pi) passes everything: 1
    lo, hi = 0.0, float(grid[above[0]] if len(above) else grid[-1])
    sigma = 0.0
    for _ in range(200):
        c = coeffs(theta + sigma)
        f = c[0] + np.dot(c[1:], cos_at)
        if abs(f - 1.0) < tolerance or hi - lo < 1e-15:
            break
        if f < 1.0:
            lo = sigma
        else:
            hi = sigma
        # derivative of f with respect to sigma
        dc = np.r_[w[0] / np.pi, 2.0 * w[1:] * np.cos(i * (theta + sigma)) / np.pi]
        df = dc[0] + np.dot(dc[1:], cos_at)
        step = sigma - (f - 1.0) / df if df != 0.0 else lo
        sigma = step if lo < step < hi else 0.5 * (lo + hi)
    return coeffs(theta + sigma)


def _umbrella(faces: np.ndarray, n_vertices: int) -> sparse.csr_matrix:
    """(V, V) averaging operator W: (W x)_i is the mean of x over i's edge neighbours.

    Every triangle edge enters once per adjacent face; on a closed manifold mesh
    (what marching cubes gives) each neighbour is thus counted exactly twice,
    which leaves the mean unchanged. Building the matrix from coordinates merges
    the two entries into one (with twice the weight, exactly), so the 20 products
    of the filter touch half as many entries, and it needs no argsort.
    """
    a = faces.ravel()
    b = faces[:, [1, 2, 0]].ravel()
    rows = np.concatenate([a, b])
    cols = np.concatenate([b, a])
    counts = np.bincount(rows, minlength=n_vertices)
    weights = np.divide(1.0, counts, out=np.zeros(n_vertices), where=counts > 0)
    return sparse.csr_matrix((weights[rows], (rows, cols)), shape=(n_vertices, n_vertices))


def windowed_sinc(
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    band: float,
    iterations: int = ITERATIONS,
    tolerance: float = TOLERANCE,
    _w: sparse.csr_matrix | None = None,
) -> np.ndarray:
    """Smoothed copy of ``vertices``.

    Parameters
    ----------
    vertices : (V, 3) ndarray of float
        Positions in mm.
    faces : (F, 3) ndarray of int
        Triangles.
    band : float
        Pass band in (0, 2); smaller smooths more.
    iterations : int
        Order of the filter polynomial.
    tolerance : float
        Accuracy of the unit response at the pass band (:data:`VTK_TOLERANCE`
        reproduces VTK and Slicer).

    Returns
    -------
    (V, 3) ndarray of float64
    """
    x0 = np.asarray(vertices, dtype=np.float64)
    w = _umbrella(np.asarray(faces, dtype=np.int64), len(x0)) if _w is None else _w
    isolated = np.asarray(w.sum(axis=1)).ravel() == 0
    c = sinc_coefficients(band, iterations, tolerance=tolerance)
    # centre the coordinates: the recurrence is linear, so this only helps rounding
    centre = x0.mean(axis=0)
    x0 = x0 - centre
    # Chebyshev polynomials of M = I - K/2 = (I + W)/2: T0 = x, T1 = M x, Tn+1 = 2 M Tn - Tn-1
    t_prev = x0
    t_cur = 0.5 * (x0 + w @ x0)
    out = c[0] * x0 + c[1] * t_cur
    for n in range(2, len(c)):
        t_next = w @ t_cur
        t_next += t_cur
        t_next -= t_prev
        out += c[n] * t_next
        t_prev, t_cur = t_cur, t_next
    out[isolated] = x0[isolated]
    return out + centre


def smooth(mesh: TriangleMesh, factor: float = SLICER_DEFAULT_SMOOTHING) -> TriangleMesh:
    """Smooth ``mesh`` with Slicer's strength ``factor`` in [0, 1] (a new mesh).

    Parameters
    ----------
    mesh : TriangleMesh
        Surface in mm; only vertex positions change.
    factor : float
        0 returns ``mesh`` itself, unchanged; 0.5 is Slicer's default; 1 is the strongest.

    Notes
    -----
    Shells that would lose more than half their volume (a few voxels, which
    have no low-frequency shape to keep) are left unsmoothed.
    """
    if not 0.0 <= factor <= 1.0:
        raise InputError(f"smoothing factor must be in [0, 1] (3D Slicer's scale), got {factor}")
    if factor == 0.0 or len(mesh.faces) == 0:
        return mesh
    faces = np.asarray(mesh.faces, dtype=np.int64)
    before = np.asarray(mesh.vertices, dtype=np.float64)
    w = _umbrella(faces, len(before))
    after = windowed_sinc(before, faces, band=pass_band(factor), _w=w)
    # A shell of a few voxels has no low frequencies left to keep and would
    # collapse to a point: such shells keep their raw shape instead.
    n_comp, comp = connected_components(w, directed=False)
    if np.bincount(comp, minlength=n_comp).min() >= SMALL_SHELL:
        return TriangleMesh(after, faces)
    shell = comp[faces[:, 0]]
    v0, v1 = (_shell_volumes(x, faces, shell, comp.max() + 1) for x in (before, after))
    collapsed = (v1 < 0.5 * v0) | (np.sign(v1) != np.sign(v0))
    if np.any(collapsed):
        revert = collapsed[comp]
        after[revert] = before[revert]
    return TriangleMesh(after, faces)


def _shell_volumes(vertices: np.ndarray, faces: np.ndarray, shell: np.ndarray, n: int) -> np.ndarray:
    tri = vertices[faces] - vertices.mean(axis=0)
    six_v = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2]))
    return np.bincount(shell, weights=six_v, minlength=n) / 6.0
