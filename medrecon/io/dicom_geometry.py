"""Slice geometry of one DICOM stack: order, spacing, gaps, duplicates, gantry tilt.

Everything is derived from ImagePositionPatient (IPP) and ImageOrientationPatient
(IOP) in DICOM's LPS frame, never from InstanceNumber, file names or
SliceThickness. Output grids use medrecon's (i, j, k) order: i along a row
(IOP's row direction, step = PixelSpacing[1]), j down a column (IOP's column
direction, step = PixelSpacing[0]), k along the slice normal
``row x column`` in increasing position.

Rules (chosen to match what established converters such as dcm2niix do):

* **Duplicates**: frames whose positions along the normal differ by less than
  :data:`DUPLICATE_MM` are duplicates. The first is kept; the loader checks that
  the others hold the same pixels and refuses the series otherwise.
* **Uneven spacing**: the stack is even when every slice lies within
  ``EVEN_TOLERANCE x`` the median spacing of the straight line through the first
  and last slice. Otherwise the output grid is the one of the longest run of
  regularly spaced slices (its step and phase), so the slices on it keep their
  values: missing slices inside the stack are interpolated from their neighbours;
  slices off the grid only at the ends are stacked unchanged onto the next grid
  positions, as dcm2niix stacks them, when none moves by more than half a step;
  any other layout is resampled linearly onto that grid (as dcm2niix's equalised
  output is). One note says which. When a gap exceeds :data:`MAX_GAP_RATIO` x the
  median spacing the series is refused (a missing block of slices, not a gap worth
  interpolating across).
* **Gantry tilt**: when the slice positions drift in-plane by more than a tenth of
  a pixel over the stack, the stack is sheared; it is resampled onto an
  orthogonal grid of the same shape, centred on the same point, with a warning.
  Positions that are not on one line (different fields of view) are refused.
* **Oblique** stacks keep their full affine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medrecon.errors import DicomError
from medrecon.io.dicom_header import FrameHeader

DUPLICATE_MM = 0.01
EVEN_TOLERANCE = 0.05
MAX_GAP_RATIO = 3.0
TILT_PIXELS = 0.1


@dataclass(frozen=True)
class StackPlan:
    """How to turn a stack of frames into a regular 3D grid.

    Attributes
    ----------
    frames : tuple of FrameHeader
        Frames to read, in increasing position along the normal (duplicates removed).
    positions : (N,) ndarray of float64
        Their positions along the normal, mm.
    duplicates : tuple of (FrameHeader, FrameHeader)
        (kept, dropped) pairs with different SOP instances; their pixels must match.
    source_affine : (4, 4) ndarray
        Voxel-to-LPS affine of the stack as read (after even resampling; sheared
        when the gantry is tilted).
    affine : (4, 4) ndarray
        Voxel-to-LPS affine of the output grid (orthogonal unless oblique IOP).
    shape : tuple of 3 int
        Output shape (i, j, k).
    target_positions : (K,) ndarray or None
        Positions along the normal to resample to, when spacing is uneven.
    tilt_deg : float
        Gantry tilt measured from the positions (0 when none was corrected).
    warnings : tuple of str
        What was corrected, to warn about and to record.
    """

    frames: tuple[FrameHeader, ...]
    positions: np.ndarray
    duplicates: tuple[tuple[FrameHeader, FrameHeader], ...]
    source_affine: np.ndarray
    affine: np.ndarray
    shape: tuple[int, int, int]
    target_positions: np.ndarray | None = None
    tilt_deg: float = 0.0
    warnings: tuple[str, ...] = field(default=())

    @property
    def resample_even(self) -> bool:
        """True when slices must be interpolated to even spacing."""
        return self.target_positions is not None

    @property
    def tilted(self) -> bool:
        """True when the sheared stack must be resampled onto an orthogonal grid."""
        return self.tilt_deg != 0.0


def _directions(frame: FrameHeader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    o = np.asarray(frame.orientation, dtype=np.float64)
    row, col = o[:3], o[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if nr < 1e-6 or nc < 1e-6 or abs(np.dot(row / nr, col / nc)) > 1e-2:
        raise DicomError(
            f"{frame.path}: ImageOrientationPatient [{', '.join(f'{v:g}' for v in o)}] is not two orthogonal "
            "directions; the file's geometry is corrupt"
        )
    row, col = row / nr, col / nc
    return row, col, np.cross(row, col)


@dataclass(frozen=True)
class _Grid:
    """An uneven stack put on the grid of its longest regular run."""

    step: float
    placed: np.ndarray  # where each slice goes, mm along the normal
    target: np.ndarray | None  # grid positions to interpolate to (None: the slices fill the grid)
    note: str


def _longest_run(steps: np.ndarray, median: float) -> tuple[int, int]:
    """First and last slice index of the longest run of steps equal to ``median`` (within tolerance)."""
    near = np.abs(steps - median) <= EVEN_TOLERANCE * median
    best, start = (0, 0), None
    for i, ok in enumerate(np.append(near, False)):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def _regular_grid(proj: np.ndarray, median: float) -> _Grid:
    """Put slices with uneven spacing on one regular grid, changing as few of them as possible.

    The grid is the one of the longest run of regularly spaced slices (its step and
    its phase). Slices on it keep their values; a missing slice inside the stack is
    interpolated from its neighbours; slices off the grid only at the ends are stacked
    onto the next grid positions with their values unchanged, as dcm2niix stacks them,
    when that moves none by more than half a step; anything else is resampled linearly
    onto the grid.
    """
    n = len(proj)
    a, b = _longest_run(np.diff(proj), median)
    step = float(proj[b] - proj[a]) / (b - a) if b > a else median
    anchor = float(proj[a])
    tol = EVEN_TOLERANCE * step
    k = (proj - anchor) / step
    ki = np.rint(k).astype(int)
    on = np.abs(k - ki) * step <= tol
    on_idx = np.flatnonzero(on)
    lo, hi = int(on_idx[0]), int(on_idx[-1])
    ends_only = bool(on[lo:hi + 1].all())
    moved = ki.astype(float)
    if ends_only:  # stack the end slices onto the next grid positions, as dcm2niix does
        moved[hi + 1:] = ki[hi] + np.arange(1, n - hi)
        moved[:lo] = ki[lo] - np.arange(lo, 0, -1)
    shift = np.abs(moved - k) * step
    full = np.arange(int(moved[0]), int(moved[-1]) + 1)
    if ends_only and shift.max() <= step / 2 and np.all(np.diff(moved) > 0):
        placed = anchor + moved * step
        missing = len(full) - n
        parts = []
        off = np.flatnonzero(~on)
        # dcm2niix stacks every slice one step after the previous one from the first slice on
        as_dcm2niix = " (as dcm2niix stacks it)" if off.size and off[0] > hi else ""
        if off.size == 1:
            j = int(off[0])
            which, near = ("last", j - 1) if j == n - 1 else ("first", j + 1)
            parts.append(
                f"the {which} slice is {abs(proj[j] - proj[near]):.2f} mm from its neighbour where "
                f"the others are {step:.2f} mm apart: kept unchanged one step away, "
                f"{shift[j]:.2f} mm from its recorded position{as_dcm2niix}"
            )
        elif off.size:
            parts.append(
                f"{off.size} end slices lie off the {step:.2f} mm grid of the others: kept unchanged "
                f"on the next grid positions, up to {shift.max():.2f} mm from their recorded "
                f"positions{as_dcm2niix.replace(' it)', ' them)')}"
            )
        if not parts and not missing:  # uneven only within the tolerance of one grid
            parts.append(f"slice positions deviate by up to {shift.max():.2f} mm from a regular "
                         f"{step:.2f} mm grid: placed on it")
        if missing:
            gaps = np.diff(placed)
            at = int(np.argmax(gaps))
            parts.append(
                f"{missing} slice{'s' if missing > 1 else ''} missing (a gap of {gaps[at]:.2f} mm "
                f"between the slices at {placed[at]:.2f} and {placed[at + 1]:.2f} mm along the "
                f"normal, where the spacing is {step:.2f} mm): interpolated from their neighbours, "
                "the other slices unchanged"
            )
        target = anchor + full * step if missing else None
        return _Grid(step=step, placed=placed, target=target, note="; ".join(parts))
    # irregular inside the stack: resample onto the run's grid, without extrapolating
    placed = np.where(on, anchor + ki * step, proj)
    if np.any(np.diff(placed) <= 0):  # two slices within the tolerance of one grid position
        placed = proj
    first_k = int(np.ceil((proj[0] - anchor - tol) / step))
    last_k = int(np.floor((proj[-1] - anchor + tol) / step))
    target = anchor + np.arange(first_k, last_k + 1) * step
    steps = np.diff(proj)
    return _Grid(step=step, placed=placed, target=target, note=(
        f"slice spacing varies ({steps.min():.2f} to {steps.max():.2f} mm): resampled linearly "
        f"to {len(target)} slices {step:.3f} mm apart, the spacing of the longest regular run; "
        f"{int(on.sum())} of {n} slices lie on that grid and are copied, not interpolated"
    ))


def plan_stack(frames: Sequence[FrameHeader]) -> StackPlan:
    """Order the frames of one part and work out the output grid.

    Parameters
    ----------
    frames : sequence of FrameHeader
        Frames of one size and orientation, each with position and pixel spacing.

    Raises
    ------
    DicomError
        For conflicting layouts: absurd gaps, positions off one line, missing
        geometry.
    """
    if not frames:
        raise DicomError("no image frames to load")
    first = frames[0]
    if any(f.position is None or f.orientation is None or f.pixel_spacing is None for f in frames):
        raise DicomError(
            f"{first.path}: frames without ImagePositionPatient / ImageOrientationPatient / "
            "PixelSpacing cannot be placed in space"
        )
    row, col, normal = _directions(first)
    dy, dx = (float(v) for v in first.pixel_spacing)  # type: ignore[misc]
    if dx <= 0 or dy <= 0:
        raise DicomError(f"{first.path}: PixelSpacing [{dy:g}, {dx:g}] must be positive")
    ipp = np.asarray([f.position for f in frames], dtype=np.float64)
    proj = ipp @ normal
    order = np.argsort(proj, kind="stable")
    kept: list[int] = []
    duplicates = []
    for idx in order:
        if kept and abs(proj[idx] - proj[kept[-1]]) < DUPLICATE_MM:
            a, b = frames[kept[-1]], frames[idx]
            if not (a.sop_uid and a.sop_uid == b.sop_uid and a.frame == b.frame):
                duplicates.append((a, b))
            continue
        kept.append(int(idx))
    notes = []
    n_dropped = len(order) - len(kept)
    if n_dropped:
        notes.append(f"dropped {n_dropped} duplicate slice(s) at repeated positions")
    ipp, proj = ipp[kept], proj[kept]
    ordered = tuple(frames[i] for i in kept)
    n = len(kept)
    in_plane = np.column_stack([row * dx, col * dy])
    target = None
    placed = proj  # positions the slices take on the output grid (moved onto it when uneven)
    origin_shift = 0.0  # from the first slice to the first grid position, mm along the stack
    tilt_deg = 0.0
    if n == 1:
        step = first.spacing_between or first.thickness or 1.0
        kvec = normal * step
        shape = (first.cols, first.rows, 1)
    else:
        steps = np.diff(proj)
        median = float(np.median(steps))
        length = float(proj[-1] - proj[0])
        even_step = length / (n - 1)
        deviation = np.abs(proj - (proj[0] + even_step * np.arange(n)))
        if deviation.max() > EVEN_TOLERANCE * median + 1e-4:
            worst = float(steps.max())
            if worst > MAX_GAP_RATIO * median:
                raise DicomError(
                    f"{first.path}: the series has a gap of {worst:.2f} mm between slices at "
                    f"{proj[np.argmax(steps)]:.2f} and {proj[np.argmax(steps) + 1]:.2f} mm, over "
                    f"{MAX_GAP_RATIO:g}x the usual {median:.2f} mm: slices are missing; "
                    "re-export the complete series"
                )
            grid = _regular_grid(proj, median)
            notes.append(grid.note)
            step, placed = grid.step, grid.placed
            target = grid.target
            origin_shift = (grid.target if grid.target is not None else grid.placed)[0] - proj[0]
            shape = (first.cols, first.rows,
                     len(grid.target) if grid.target is not None else n)
        else:
            step = even_step
            shape = (first.cols, first.rows, n)
        # in-plane drift of the positions along the stack = gantry tilt
        slope = (ipp[-1] - ipp[0]) / length  # LPS mm per mm along the normal
        drift = slope - normal
        off_line = ipp - (ipp[0] + np.outer(proj - proj[0], slope))
        if np.abs(off_line).max() > 0.5 * min(dx, dy):
            raise DicomError(
                f"{first.path}: slice positions are not on one line (in-plane offsets up to "
                f"{np.abs(off_line).max():.2f} mm): the series mixes fields of view; "
                "load the parts separately"
            )
        if np.linalg.norm(drift) * length > TILT_PIXELS * min(dx, dy):
            tilt_deg = float(np.degrees(np.arctan(np.linalg.norm(drift))))
            kvec = slope * step
            notes.append(
                f"gantry tilt of {tilt_deg:.2f} degrees: resampled onto an orthogonal grid"
            )
        else:
            kvec = normal * step
    source = np.eye(4)
    source[:3, :2] = in_plane
    source[:3, 2] = kvec
    source[:3, 3] = ipp[0] + kvec / step * origin_shift
    affine = source.copy()
    if tilt_deg:
        affine[:3, 2] = normal * step
        centre = (np.asarray(shape) - 1) / 2
        affine[:3, 3] = source[:3, :3] @ centre + source[:3, 3] - affine[:3, :3] @ centre
    return StackPlan(
        frames=ordered, positions=placed, duplicates=tuple(duplicates), source_affine=source,
        affine=affine, shape=shape, target_positions=target, tilt_deg=tilt_deg,
        warnings=tuple(notes),
    )


def resample_even(stack: np.ndarray, positions: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Linearly interpolate a (K, J, I) stack from ``positions`` to ``target`` (mm).

    Parameters
    ----------
    stack : (N, rows, cols) ndarray of float32
        Slices in increasing position.
    positions : (N,) ndarray
        Their positions along the normal, mm, increasing.
    target : (K,) ndarray
        Positions to produce, within ``positions[0]..positions[-1]``.

    Returns
    -------
    (K, rows, cols) ndarray of float32
    """
    fractional = np.interp(target, positions, np.arange(len(positions), dtype=np.float64))
    out = np.empty((len(target),) + stack.shape[1:], dtype=np.float32)
    for t, f in enumerate(fractional):
        lo = min(int(np.floor(f)), len(positions) - 2)
        w = np.float32(f - lo)
        np.multiply(stack[lo], 1 - w, out=out[t])
        out[t] += w * stack[lo + 1]
    return out
