"""An image as its files store it: integers, and the slope and intercept that make its values.

A CT series stores int16 (or uint16) pixels with a modality LUT (RescaleSlope,
RescaleIntercept) that turns them into Hounsfield units. :class:`StoredVolume`
keeps the integers, so that ``medrecon convert`` writes them to NIfTI as they
are, with ``scl_slope``/``scl_inter`` as dcm2niix does, without making the
float32 volume (twice their size) and turning it back into integers. Everything
else works on values: :meth:`StoredVolume.values` gives the
:class:`~medrecon.volume.Volume` the loader gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medrecon.volume import Volume

_EXACT = 2.0**24  # integers up to this size are exact in float32


def rescale_into(stored: np.ndarray, slope: float, intercept: float, dst: np.ndarray) -> None:
    """Write ``stored * slope + intercept`` into the float32 array ``dst``, in float32 arithmetic.

    The one place the modality LUT is applied: the DICOM loader, frame by frame,
    and :meth:`StoredVolume.values`, whole, make the same values bit for bit.
    """
    s, i = np.float32(slope), np.float32(intercept)
    if slope == 1.0:
        np.add(stored, i, out=dst, casting="unsafe")
    else:
        np.multiply(stored, s, out=dst, casting="unsafe")
        if intercept != 0.0:
            dst += i


def exact_scaling(dtype: np.dtype | str, slope: float, intercept: float) -> bool:
    """Tell whether every integer of ``dtype`` maps to an integer float32 holds exactly.

    True for integer slope and intercept with ``|stored * slope + intercept|`` up
    to 2**24 over the whole range of ``dtype`` (CT's int16 with slope 1): a
    reader decoding the integers in float32 or float64 then gets exactly the
    values of :meth:`StoredVolume.values`.
    """
    stored = np.dtype(dtype)
    if stored.kind not in "iu" or not (np.isfinite(slope) and np.isfinite(intercept) and slope != 0):
        return False
    info = np.iinfo(stored)
    return (float(slope).is_integer() and float(intercept).is_integer()
            and max(-info.min, info.max) * abs(slope) + abs(intercept) <= _EXACT)


@dataclass(frozen=True, eq=False)
class StoredVolume:
    """The stored integers of an image and the one (slope, intercept) that makes its values.

    Attributes
    ----------
    raw : Volume
        The stored integers on the image's grid (``raw.array`` (I, J, K) of
        int8/uint8/int16/uint16/int32/uint32, ``raw.units`` empty: they are not
        the values), with the geometry and metadata of the loaded image.
    slope, intercept : float
        The values are ``raw.array * slope + intercept``.
    units : str
        Units of the values, ``"HU"`` for CT.
    """

    raw: Volume
    slope: float
    intercept: float
    units: str = ""

    def __post_init__(self) -> None:
        if self.raw.array.dtype.kind not in "iu":
            raise ValueError(f"stored values must be integers, got {self.raw.array.dtype}")

    @property
    def exact(self) -> bool:
        """True when float32 holds every value exactly (see :func:`exact_scaling`)."""
        return exact_scaling(self.raw.array.dtype, self.slope, self.intercept)

    def values(self) -> Volume:
        """Return the image as values: a float32 :class:`Volume`, as the loader makes it.

        Its ``meta`` gains ``stored_dtype`` and ``scaling`` (slope, intercept).
        """
        raw = self.raw
        array = np.empty(raw.shape, dtype=np.float32, order="F" if raw.array.flags.f_contiguous else "C")
        rescale_into(raw.array, self.slope, self.intercept, array)
        meta = {**raw.meta, "stored_dtype": raw.array.dtype.name, "scaling": (self.slope, self.intercept)}
        return raw.replace(array=array, units=self.units, meta=meta)
