"""Images and label maps that always carry their geometry.

World frame: **LPS** millimetres (DICOM patient coordinates: +x patient Left,
+y Posterior, +z Superior). Array axis order: **(i, j, k)**; ``affine @ [i, j,
k, 1]`` is the LPS position of the centre of voxel ``[i, j, k]``. Other frames
(NIfTI's RAS, napari's (z, y, x)) are converted at the edges only, with
:data:`LPS_TO_RAS`.

Both :class:`Volume` and :class:`LabelMap` are frozen: their arrays are
read-only views and every operation returns a new object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from medrecon.errors import GeometryError

#: Converts LPS world coordinates to RAS (and back: it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Axis-code labels of the LPS frame, (negative end, positive end) per world axis.
LPS_LABELS = (("R", "L"), ("A", "P"), ("I", "S"))


def check_affine(affine: Any) -> np.ndarray:
    """Validate a voxel-to-world matrix and return it as a (4, 4) float64 array.

    Raises
    ------
    GeometryError
        If the matrix is not (4, 4), not finite, not affine, or singular.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise GeometryError(f"affine must be (4, 4), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GeometryError("affine holds NaN or infinite values: the file's geometry is corrupt")
    if not np.allclose(a[3], [0, 0, 0, 1]):
        raise GeometryError(f"affine's last row must be [0, 0, 0, 1], got {a[3].tolist()}")
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    if np.any(spacing <= 1e-6) or abs(np.linalg.det(a[:3, :3])) <= 1e-9 * np.prod(spacing):
        raise GeometryError(
            f"affine is singular (voxel spacing {spacing.round(6).tolist()} mm): "
            "the file's spacing or orientation fields are zero or degenerate"
        )
    return a


def axis_codes(affine: Any) -> str:
    """Three LPS-frame letters saying where each array axis points, e.g. ``"LPS"``.

    nibabel's ``ornt2axcodes(io_orientation(affine))`` with :data:`LPS_LABELS`,
    without importing nibabel (~0.2 s): the rotation closest to the affine's
    direction columns (polar decomposition), then each axis, strongest first,
    takes the world axis it moves along most.
    """
    rzs = np.asarray(affine, dtype=np.float64)[:3, :3]
    zooms = np.linalg.norm(rzs, axis=0)
    zooms[zooms == 0] = 1.0
    p, s, qs = np.linalg.svd(rzs / zooms)
    keep = s > s.max() * 3 * np.finfo(s.dtype).eps
    r = p[:, keep] @ qs[keep]
    codes = ["?", "?", "?"]
    for axis in np.argsort(np.min(-(r**2), axis=0), kind="stable"):
        column = r[:, axis]
        if np.allclose(column, 0):
            continue
        world = int(np.argmax(np.abs(column)))
        codes[axis] = LPS_LABELS[world][1 if column[world] > 0 else 0]
        r[world, :] = 0
    return "".join(codes)


def _frozen(array: Any) -> np.ndarray:
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, eq=False)
class _Grid:
    """A 3D array on a grid placed in LPS millimetres by an affine."""

    array: np.ndarray
    affine: np.ndarray

    _order = 1  # interpolation order used by resampling

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise GeometryError(f"array must be 3D (i, j, k), got shape {array.shape}")
        object.__setattr__(self, "array", _frozen(array))
        affine = check_affine(self.affine)
        affine.flags.writeable = False
        object.__setattr__(self, "affine", affine)

    # --- geometry -----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (i, j, k)."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """(3,) voxel size in mm along i, j, k."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """(3,) LPS position in mm of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """(3, 3) unit column vectors: the LPS direction of the i, j, k axes."""
        return self.affine[:3, :3] / self.spacing

    @property
    def orientation(self) -> str:
        """Three-letter LPS-frame codes of where each array axis points, e.g. ``"LPS"``."""
        return axis_codes(self.affine)

    @property
    def is_oblique(self) -> bool:
        """True when some array axis is not parallel to a world axis."""
        d = np.abs(self.direction)
        return bool(np.any((d > 1e-4) & (d < 1 - 1e-4)))

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm^3."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def voxel_to_world(self, ijk: Any) -> np.ndarray:
        """Map (N, 3) voxel indices (may be fractional) to (N, 3) LPS mm."""
        p = np.asarray(ijk, dtype=np.float64)
        return p @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, xyz: Any) -> np.ndarray:
        """Map (N, 3) LPS mm to (N, 3) fractional voxel indices."""
        inv = np.linalg.inv(self.affine)
        p = np.asarray(xyz, dtype=np.float64)
        return p @ inv[:3, :3].T + inv[:3, 3]

    @property
    def ras_affine(self) -> np.ndarray:
        """The voxel-to-RAS affine, as NIfTI stores it."""
        return LPS_TO_RAS @ self.affine

    # --- derived objects -----------------------------------------------------------
    def replace(self, **changes: Any):
        """Return a copy with some fields replaced (``array``, ``affine``, metadata)."""
        return dataclasses.replace(self, **changes)

    def reorient(self, codes: str = "LPS"):
        """Return the same image with its array axes permuted and flipped to ``codes``.

        Parameters
        ----------
        codes : str
            Three letters from the LPS frame, one per array axis, e.g. ``"LPS"``
            or ``"RAS"``. Oblique data is brought to the closest orientation; its
            affine stays exact.
        """
        import nibabel.orientations as nio

        codes = codes.upper()
        if len(codes) != 3:
            raise ValueError(f"orientation codes must have 3 letters, got {codes!r}")
        current = nio.io_orientation(self.affine)
        target = nio.axcodes2ornt(tuple(codes), LPS_LABELS)
        transform = nio.ornt_transform(current, target)
        array = nio.apply_orientation(np.asarray(self.array), transform)
        affine = self.affine @ nio.inv_ornt_aff(transform, self.shape)
        return self.replace(array=np.ascontiguousarray(array), affine=affine)

    def resample_to(
        self,
        affine: Any,
        shape: tuple[int, int, int],
        *,
        fill: float | None = None,
    ):
        """Resample onto another grid (same world frame).

        Images are interpolated linearly and label maps by nearest neighbour.

        Parameters
        ----------
        affine : (4, 4) array_like
            Target voxel-to-LPS matrix in mm.
        shape : tuple of 3 int
            Target array shape.
        fill : float, optional
            Value outside the source field of view. Default: the array minimum for
            images (air in CT), 0 (background) for label maps.
        """
        from scipy import ndimage

        target = check_affine(affine)
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be 3 positive ints, got {shape}")
        m = np.linalg.inv(self.affine) @ target
        src = np.asarray(self.array)
        if self._order == 0:
            cval = 0 if fill is None else fill
            out = ndimage.affine_transform(
                src, m[:3, :3], offset=m[:3, 3], output_shape=shape, order=0,
                mode="constant", cval=cval, output=src.dtype,
            )
        else:
            cval = float(src.min()) if fill is None and src.size else (fill or 0.0)
            out = ndimage.affine_transform(
                src.astype(np.float32, copy=False), m[:3, :3], offset=m[:3, 3],
                output_shape=shape, order=1, mode="constant", cval=cval,
            )
        return self.replace(array=out, affine=target)

    def resample_like(self, other: _Grid, **kwargs: Any):
        """Resample onto the grid of ``other`` (a Volume or LabelMap)."""
        return self.resample_to(other.affine, other.shape, **kwargs)

    def resample_spacing(self, spacing: Any, **kwargs: Any):
        """Resample to a new voxel size (mm), keeping direction and field of view.

        Parameters
        ----------
        spacing : float or (3,) array_like
            New voxel size in mm along i, j, k.
        """
        new = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
        if np.any(~np.isfinite(new)) or np.any(new <= 0):
            raise ValueError(f"spacing must be positive and finite, got {new.tolist()}")
        old = self.spacing
        extent = np.asarray(self.shape) * old
        shape = np.maximum(1, np.round(extent / new)).astype(int)
        affine = self.affine.copy()
        affine[:3, :3] = self.direction * new
        # keep the centre of the field of view where it was
        centre = self.voxel_to_world((np.asarray(self.shape) - 1) / 2)
        affine[:3, 3] = centre - affine[:3, :3] @ ((shape - 1) / 2)
        return self.resample_to(affine, tuple(shape), **kwargs)

    def same_grid(self, other: _Grid, *, atol: float = 1e-3) -> bool:
        """Tell whether ``other`` has the same shape and an affine within ``atol`` mm."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol))


@dataclass(frozen=True, eq=False)
class Volume(_Grid):
    """An intensity image: (i, j, k) voxel array + voxel-to-LPS affine (mm) + metadata.

    Attributes
    ----------
    array : (I, J, K) ndarray
        Voxel values, e.g. float32 Hounsfield units for CT. Read-only.
    affine : (4, 4) ndarray of float64
        Voxel index to LPS world position in mm.
    modality : str
        DICOM modality (``"CT"``, ``"MR"``) or ``""`` when unknown.
    units : str
        Units of the values, ``"HU"`` for CT after the modality LUT.
    series_uid, description, source : str
        SeriesInstanceUID, SeriesDescription and the path it came from.
    meta : Mapping
        Anything else worth carrying (read-only).
    """

    modality: str = ""
    units: str = ""
    series_uid: str = ""
    description: str = ""
    source: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))


@dataclass(frozen=True, eq=False)
class LabelMap(_Grid):
    """Integer organ labels on a grid + voxel-to-LPS affine + label id -> name table.

    Resampling a label map is always nearest-neighbour.

    Attributes
    ----------
    array : (I, J, K) ndarray of integers
        0 is background. Read-only.
    affine : (4, 4) ndarray of float64
        Voxel index to LPS world position in mm.
    names : Mapping[int, str]
        Label id -> structure name (ids and names: see :mod:`medrecon.labels`).
    source : str
        The path it came from.
    """

    names: Mapping[int, str] = field(default_factory=dict)
    source: str = ""

    _order = 0

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.dtype.kind not in "iub":
            if array.dtype.kind == "f" and array.size and np.all(np.isfinite(array)) and np.all(
                array == np.round(array)
            ):
                array = array.astype(_label_dtype(array))
            else:
                raise GeometryError(
                    f"label map must hold integers, got {array.dtype} with non-integer values: "
                    "is this an image rather than a segmentation?"
                )
        if array.dtype.kind == "b":
            array = array.astype(np.uint8)
        object.__setattr__(self, "array", array)
        super().__post_init__()
        names = {int(k): str(v) for k, v in dict(self.names).items()}
        object.__setattr__(self, "names", MappingProxyType(names))

    @property
    def labels(self) -> list[int]:
        """Sorted non-zero label ids present in the array."""
        array = np.asarray(self.array)
        if array.dtype.kind == "u" and array.dtype.itemsize <= 2:  # a count per id: no sort
            ids = np.flatnonzero(np.bincount(array.ravel(), minlength=1))
        else:
            ids = np.unique(array)
        return [int(i) for i in ids if i != 0]

    def name_of(self, label: int) -> str:
        """Name of ``label`` from the table, else ``label_<id>``."""
        return self.names.get(int(label), f"label_{int(label)}")

    def label_of(self, key: int | str) -> int:
        """Resolve a label id or a structure name to a label id."""
        if isinstance(key, str) and not key.strip().lstrip("-").isdigit():
            for k, v in self.names.items():
                if v == key:
                    return k
            raise KeyError(f"no label named {key!r}; known: {', '.join(sorted(self.names.values()))}")
        return int(key)

    def mask(self, label: int) -> np.ndarray:
        """(I, J, K) bool array of the voxels of ``label``."""
        return np.asarray(self.array) == label


def _label_dtype(array: np.ndarray) -> np.dtype:
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    for dt in (np.uint8, np.int16, np.int32, np.int64):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    raise GeometryError(f"label values {lo}..{hi} do not fit an integer type")
