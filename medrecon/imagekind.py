"""What kind of image is this: a CT, another intensity image, or a label map.

The one place that tells them apart from the voxels: the napari reader (Image or
Labels layer, CT display window), ``medrecon mesh`` and ``reconstruct --labels``
(an image given as a label map is refused in seconds instead of meshing
thousands of "organs"), ``segment`` and ``reconstruct`` with a model or preset
(a label map given as the image). Arrays are any shape; only numpy is used.

:func:`classify` looks at a fixed-size, seeded random sample of voxels and of
neighbouring voxel pairs, so it takes milliseconds on a 512 x 512 x 300 CT and
gives the same answer every time. The rules, in order:

- a CT: modality CT, or at least 1 % of the voxels (scanner padding below -1100
  left out) lie within air's -1100 .. -800 HU and 0.1 % reach bone's 300 HU or more;
- another intensity image: an imaging modality other than CT, non-finite or
  non-integral values, negative values (label ids never are), or more than
  :data:`FEW_VALUES` values that change from voxel to voxel: more than
  :data:`MAX_DIFFERING` of the pairs of neighbouring non-zero voxels differ,
  where a label map's organs are regions of one value;
- otherwise a label map. An array of one value is ``"constant"``: neither
  :func:`require_labels` nor :func:`require_image` refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medrecon.errors import ImageKindError

#: Voxels sampled for the value tests (all of them in smaller arrays).
SAMPLE = 100_000
#: Neighbouring pairs sampled per axis for the region test (all of them in smaller arrays).
PAIRS = 100_000
#: Negative values this low are named a Hounsfield-like range in messages.
HU_LIKE = -100
#: DICOM modalities of label data; any other modality is an image.
SEGMENTATION_MODALITIES = ("SEG", "RTSTRUCT")
#: Share of neighbouring non-zero voxel pairs that may differ in a label map.
MAX_DIFFERING = 0.5
#: Neighbouring non-zero pairs needed before the region test says anything.
MIN_PAIRS = 100
#: Up to this many distinct values pass as labels even when they change from voxel
#: to voxel (tissue classes of a noisy image are a label map too).
FEW_VALUES = 32
#: Words in a file name that suggest a label map (napari reader, sample data).
LABEL_WORDS = ("seg", "label", "mask")


@dataclass(frozen=True)
class ImageKind:
    """The kind of an image and why.

    Attributes
    ----------
    kind : {"ct", "intensity", "labels", "constant"}
        A CT in Hounsfield units, another intensity image, a label map, or an
        array of one value (an empty label map or a blank image: either).
    reason : str
        What it looks like, as a phrase for messages: ``"a CT in Hounsfield
        units (air near -1000, bone-like values of 442 and more)"``.
    """

    kind: str
    reason: str

    @property
    def is_labels(self) -> bool:
        """True for a label map."""
        return self.kind == "labels"


def _num(x: float) -> str:
    x = float(x)
    return f"{x:.0f}" if np.isfinite(x) and x == round(x) and abs(x) < 1e15 else f"{x:.4g}"


def _sample(a: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """(values, exact): every voxel of a small array, else :data:`SAMPLE` random ones."""
    if a.size <= SAMPLE:
        return a.reshape(-1), True
    return a[tuple(rng.integers(0, n, SAMPLE) for n in a.shape)], False


def _pairs(a: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Values of neighbouring voxels along each axis: all pairs, or :data:`PAIRS` per axis."""
    first, second = [], []
    for axis, n in enumerate(a.shape):
        if n < 2:
            continue
        if a.size // n * (n - 1) <= PAIRS:
            lo = [slice(None)] * a.ndim
            hi = [slice(None)] * a.ndim
            lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
            first.append(a[tuple(lo)].reshape(-1))
            second.append(a[tuple(hi)].reshape(-1))
            continue
        idx = [rng.integers(0, size - (d == axis), PAIRS) for d, size in enumerate(a.shape)]
        first.append(a[tuple(idx)])
        idx[axis] = idx[axis] + 1
        second.append(a[tuple(idx)])
    if not first:
        return np.empty(0, a.dtype), np.empty(0, a.dtype)
    return np.concatenate(first), np.concatenate(second)


def _ct_reason(values: np.ndarray) -> str | None:
    body = values[values >= -1100]  # scanner padding (-2048, -3024) lies outside the field of view
    if body.size < 100:
        return None
    lo, hi = np.percentile(body, [1, 99.9])
    if -1100 <= lo <= -800 and hi >= 300:
        return f"a CT in Hounsfield units (air near {_num(lo)}, bone-like values of {_num(hi)} and more)"
    return None


def classify(array: np.ndarray, *, modality: str | None = None) -> ImageKind:
    """Tell whether ``array`` is a CT, another intensity image or a label map.

    Parameters
    ----------
    array : ndarray
        Any image or label array (``Volume.array``, ``LabelMap.array``).
    modality : str, optional
        DICOM modality if known. An imaging modality (anything but ``"SEG"`` and
        ``"RTSTRUCT"``) makes it an image: a CT for ``"CT"``, else an intensity
        image; only ``"CT"`` or no modality allows the CT test.

    Returns
    -------
    ImageKind
        The kind and a phrase saying what the array looks like.
    """
    a = np.asarray(array)
    mod = (modality or "").strip().upper()
    if a.size == 0:
        return ImageKind("intensity", "an empty array")
    if a.dtype.kind not in "iufb":
        return ImageKind("intensity", f"an image of {a.dtype.name} values")
    rng = np.random.default_rng(0)
    values, exact = _sample(a, rng)
    if values.min() == values.max() and (exact or a.min() == a.max()):
        return ImageKind("constant", f"a constant array (every voxel is {_num(values[0])})")
    if mod in ("", "CT") and a.dtype.kind != "b" and (reason := _ct_reason(values)):
        return ImageKind("ct", reason)
    if mod and mod not in SEGMENTATION_MODALITIES:
        shown = "".join(c for c in mod if c.isalnum())[:16]  # header text: keep it printable
        return ImageKind("ct", "a CT (modality CT)") if mod == "CT" else ImageKind(
            "intensity", f"an intensity image (modality {shown})")
    if a.dtype.kind == "b":
        return ImageKind("labels", "a binary mask")
    phrase = "an intensity image ("
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            return ImageKind("intensity", f"{phrase}NaN or infinite values)")
        fractional = values[values != np.round(values)]
        if fractional.size:
            return ImageKind("intensity", f"{phrase}non-integral values such as {_num(fractional[0])})")
    low = values.min()
    if low < 0:
        why = "a Hounsfield-like negative range" if low <= HU_LIKE else "where label ids are not negative"
        return ImageKind("intensity", f"{phrase}values down to {_num(low)}, {why})")
    distinct = np.unique(values)
    first, second = _pairs(a, rng)
    both = (first != 0) & (second != 0)
    if distinct.size > FEW_VALUES and int(both.sum()) >= MIN_PAIRS:
        differ = float(np.mean(first[both] != second[both]))
        if differ > MAX_DIFFERING:
            many = f"{distinct.size:,}" if exact else f"at least {distinct.size:,}"
            return ImageKind("intensity", f"{phrase}{many} distinct values that change from voxel to voxel: "
                                          f"{differ:.0%} of neighbouring voxels differ, where a label map's "
                                          "structures are regions of one value)")
    n = int(np.count_nonzero(distinct))
    if n == 0:  # the sample missed the few labelled voxels
        return ImageKind("labels", "a label map (labels in few voxels)")
    many = f"{n:,}" if exact else f"at least {n:,}"
    return ImageKind("labels", f"a label map ({many} label{'s' * (n > 1)} forming regions)")


def looks_like_ct(array: np.ndarray, *, modality: str | None = None) -> bool:
    """Tell whether ``array`` is a CT in Hounsfield units (:func:`classify` says ``"ct"``)."""
    return classify(array, modality=modality).kind == "ct"


def name_suggests_labels(name: str) -> bool:
    """Tell whether a file name says it holds labels (``seg``, ``label`` or ``mask`` in it)."""
    low = name.lower()
    return any(w in low for w in LABEL_WORDS)


def require_labels(array: np.ndarray, *, source: str = "", force: bool = False) -> ImageKind:
    """Refuse an intensity image given as a label map, in milliseconds.

    Parameters
    ----------
    array : ndarray
        The label array as read.
    source : str
        File name for the message.
    force : bool
        Take it as a label map whatever it looks like (``--force-labels``).

    Returns
    -------
    ImageKind
        What :func:`classify` said.

    Raises
    ------
    ImageKindError
        If it does not look like a label map (and not ``force``); the message
        says what it looks like and how to go on.
    """
    kind = classify(array)
    if not (force or kind.kind in ("labels", "constant") or np.asarray(array).size == 0):
        where = f"{source}: " if source else ""
        raise ImageKindError(
            f"{where}this looks like {kind.reason}, not a label map: give it as the image to segment, "
            "or add --force-labels if it really is a label map"
        )
    return kind


def require_image(
    array: np.ndarray, *, source: str = "", modality: str | None = None, force: bool = False
) -> ImageKind:
    """Refuse a label map given as the image to segment.

    Parameters
    ----------
    array : ndarray
        The image array.
    source : str
        File name for the message.
    modality : str, optional
        DICOM modality if known (see :func:`classify`).
    force : bool
        Take it as an image whatever it looks like (``--force-image``).

    Returns
    -------
    ImageKind
        What :func:`classify` said.

    Raises
    ------
    ImageKindError
        If it looks like a label map (and not ``force``).
    """
    kind = classify(array, modality=modality)
    if kind.is_labels and not force:
        where = f"{source}: " if source else ""
        raise ImageKindError(
            f"{where}this looks like {kind.reason}, not an image to segment: mesh it with "
            "'medrecon mesh' or give it as --labels, or add --force-image if it really is an image"
        )
    return kind
