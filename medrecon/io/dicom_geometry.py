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
  and last slice. Otherwise it is resampled (linearly, along the normal) to the
  median spacing, with a warning; when a gap exceeds :data:`MAX_GAP_RATIO` x the
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
            f"{frame.path}: ImageOrientationPatient {list(o)} is not two orthogonal "
            "directions; the file's geometry is corrupt"
        )
    row, col = row / nr, col / nc
    return row, col, np.cross(row, col)


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
        raise DicomError(f"{first.path}: PixelSpacing {first.pixel_spacing} must be positive")
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
            count = int(round(length / median)) + 1
            target = proj[0] + np.arange(count) * (length / (count - 1))
            notes.append(
                f"uneven slice spacing ({steps.min():.3f}..{worst:.3f} mm, a missing slice?): "
                f"resampled to {count} slices {length / (count - 1):.3f} mm apart"
            )
            step = length / (count - 1)
            shape = (first.cols, first.rows, count)
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
    source[:3, 3] = ipp[0]
    affine = source.copy()
    if tilt_deg:
        affine[:3, 2] = normal * step
        centre = (np.asarray(shape) - 1) / 2
        affine[:3, 3] = source[:3, :3] @ centre + source[:3, 3] - affine[:3, :3] @ centre
    return StackPlan(
        frames=ordered, positions=proj, duplicates=tuple(duplicates), source_affine=source,
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
