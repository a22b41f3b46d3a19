"""Classical HU-threshold reconstruction presets (bone, skin, lung, airway, ...).

A preset is data (``medrecon/data/presets.json``): a name, a Hounsfield-unit
range, a label id and name, and a list of clean-up steps drawn from the fixed
vocabulary :data:`~medrecon.sources.mask_steps.STEP_OPS`. No code lives in the JSON file.

This is what InVesalius and 3D Slicer users do for skulls, bones and airways:
it needs no trained model and works on any CT whose values are in HU.
:func:`threshold_mask` is the one threshold implementation: presets, custom
ranges (``bone:250..3000``, a bare ``250..3000``) and interactive threshold
tools all call it.

Arrays are in medrecon's (i, j, k) order on an LPS affine (see
:mod:`medrecon.volume`); "axial" and "top" are found from the affine, so
flipped or permuted volumes give the same result.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, ClassVar

import numpy as np

from medrecon.errors import EmptySegmentationError, InputError
from medrecon.progress import ProgressFn, report
from medrecon.sources.mask_steps import (
    BODY_GRID_MM,
    BODY_MIN_FRACTION,
    STEP_OPS,
    apply_step,
    body_mask,
    bounding_box,
    check_steps,
    drop_small,
)
from medrecon.volume import LabelMap, Volume

__all__ = [
    "BODY_GRID_MM", "BODY_MIN_FRACTION", "STEP_OPS", "Preset", "PresetSource", "apply_presets",
    "body_mask", "custom_threshold", "get_preset", "load_presets", "parse_hu_range", "preset_mask",
    "check_range", "in_range", "threshold_mask", "with_threshold",
]


@dataclass(frozen=True)
class Preset:
    """One threshold preset.

    Attributes
    ----------
    name : str
        Preset name used on the command line (``--preset bone``).
    label : int
        Label id given to the result (TotalSegmentator id, or >= 200 for new ones).
    label_name : str
        Structure name of the result; names the mesh file.
    hu_min, hu_max : float or None
        Inclusive HU range; ``None`` leaves that end open.
    steps : tuple of dict
        Clean-up operations, in order (see :data:`STEP_OPS`).
    description : str
        One line for ``medrecon presets``.
    detail_mm : float or None
        Finest detail the preset's mesh needs (mm): its surface is extracted
        from blocks of voxels about this size (see
        :func:`medrecon.surface.extract.mask_surface`), which keeps large,
        convoluted surfaces (soft tissue, fat) to a face count a print needs.
        None extracts at the scan's voxels.
    """

    name: str
    label: int
    label_name: str
    hu_min: float | None
    hu_max: float | None
    steps: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    description: str = ""
    detail_mm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (as in ``presets.json``)."""
        return {
            "name": self.name, "label": self.label, "label_name": self.label_name,
            "hu": [self.hu_min, self.hu_max], "description": self.description,
            "steps": [dict(s) for s in self.steps], "detail_mm": self.detail_mm,
        }


def _parse(entry: Mapping[str, Any]) -> Preset:
    name = str(entry.get("name", "?"))
    try:
        lo, hi = entry["hu"]
        steps = tuple(dict(s) for s in entry.get("steps", ()))
        detail = entry.get("detail_mm")
        preset = Preset(
            name=name, label=int(entry["label"]), label_name=str(entry["label_name"]),
            hu_min=None if lo is None else float(lo), hu_max=None if hi is None else float(hi),
            steps=steps, description=str(entry.get("description", "")),
            detail_mm=None if detail is None else float(detail),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"preset {name!r} is malformed ({exc}); see medrecon/data/presets.json") from exc
    if preset.detail_mm is not None and not (np.isfinite(preset.detail_mm) and preset.detail_mm > 0):
        raise InputError(f"preset {name!r}: detail_mm must be a positive size in mm or null, "
                         f"got {preset.detail_mm}; see medrecon/data/presets.json")
    check_steps(preset.steps, name)
    return preset


@functools.lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    text = resources.files("medrecon.data").joinpath("presets.json").read_text(encoding="utf-8")
    return json.loads(text)


@functools.lru_cache(maxsize=1)
def load_presets() -> dict[str, Preset]:
    """All bundled presets, by name, in file order."""
    return {p.name: p for p in (_parse(e) for e in _data()["presets"])}


_NUMBER = r"[+-]?\d+(?:\.\d+)?"
_RANGE = re.compile(rf"(?P<lo>{_NUMBER})?\.\.(?P<hi>{_NUMBER})?")
_RANGE_HELP = "write LOW..HIGH in HU, e.g. 250..3000, 250.. or ..-400"


def parse_hu_range(text: str) -> tuple[float | None, float | None]:
    """Parse ``"LOW..HIGH"`` (Hounsfield units; either end may be left out: open).

    Raises
    ------
    InputError
        If ``text`` is not such a range, has no bound, or LOW is above HIGH.
    """
    m = _RANGE.fullmatch(str(text).replace(" ", ""))
    if m is None:
        raise InputError(f"bad HU range {text!r}: {_RANGE_HELP}")
    lo, hi = (None if v is None else float(v) for v in m.group("lo", "hi"))
    if lo is None and hi is None:
        raise InputError(f"HU range {text!r} has no bound: {_RANGE_HELP}")
    if lo is not None and hi is not None and lo > hi:
        raise InputError(f"HU range {text!r} is empty: LOW must not be above HIGH")
    return lo, hi


def _fmt_range(lo: float | None, hi: float | None) -> str:
    return f"{'' if lo is None else f'{lo:g}'}..{'' if hi is None else f'{hi:g}'}"


def custom_threshold(low: float | None, high: float | None) -> Preset:
    """Return a plain ``low..high`` HU threshold as a preset (named ``"LOW..HIGH"``).

    Its label, name and clean-up steps are the ``"threshold"`` entry of
    ``presets.json`` (inside the body, no debris).
    """
    entry = _data()["threshold"]
    name = _fmt_range(low, high)
    base = _parse({**entry, "name": name, "hu": [low, high]})
    if low is not None and high is not None and low > high:
        raise InputError(f"HU range {name!r} is empty: LOW must not be above HIGH")
    return replace(base, description=f"{name} HU: {base.description}")


def get_preset(name: str | Preset) -> Preset:
    """Look up a preset by name (case-insensitive), with an optional HU range.

    ``"bone"`` is the bundled preset; ``"bone:250"`` (new LOW),
    ``"bone:250..2000"`` or ``"bone:..2000"`` the same preset with its range
    changed (a bound left out keeps the preset's own), named by that spelling
    (``"bone:250..2000"``); a bare ``"250..3000"`` is a custom threshold (see
    :func:`custom_threshold`; a bound left out is open).

    Raises
    ------
    InputError
        If there is no such preset (the message lists the known ones) or the
        range is malformed.
    """
    if isinstance(name, Preset):
        return name
    presets = load_presets()
    text = str(name).strip()
    key, sep, rng = (part.strip() for part in text.partition(":"))
    key = key.lower()
    if not sep and ".." in key:
        return custom_threshold(*parse_hu_range(key))
    if re.fullmatch(_NUMBER, key):
        raise InputError(f"{text!r} is not a preset: {_RANGE_HELP}, or NAME:LOW to change a preset's LOW")
    if key not in presets:
        raise InputError(f"unknown preset {key!r}; known presets: {', '.join(presets)} "
                         "(run  medrecon presets  for details)")
    p = presets[key]
    if not sep:
        return p
    if re.fullmatch(_NUMBER, rng):
        lo, hi = float(rng), None
    else:
        lo, hi = parse_hu_range(rng)
    lo = p.hu_min if lo is None else lo
    hi = p.hu_max if hi is None else hi
    if lo is not None and hi is not None and lo > hi:
        raise InputError(f"preset {text!r} has an empty HU range {_fmt_range(lo, hi)}: LOW must not be above HIGH")
    if (lo, hi) == (p.hu_min, p.hu_max):
        return p
    return replace(p, name=f"{p.name}:{_fmt_range(lo, hi)}", hu_min=lo, hu_max=hi)


def with_threshold(preset: str | None, threshold: str) -> str:
    """Return the preset spelling that ``--preset PRESET --threshold LOW..HIGH`` asks for.

    With no preset the range is a custom threshold (``"250..3000"``); with one
    preset it replaces that preset's range (``"bone:250..3000"``).

    Raises
    ------
    InputError
        If the range is malformed, several presets are given, or the preset
        already carries a range.
    """
    threshold = str(threshold).strip()
    if not preset or not preset.strip():
        lo, hi = (float(threshold), None) if re.fullmatch(_NUMBER, threshold) else parse_hu_range(threshold)
        return custom_threshold(lo, hi).name
    names = [n.strip() for n in preset.split(",") if n.strip()]
    if len(names) != 1:
        raise InputError("--threshold sets the range of one preset; for several write "
                         "--preset NAME:LOW..HIGH,NAME:LOW..HIGH instead")
    if ":" in names[0] or ".." in names[0]:
        raise InputError(f"--preset {names[0]} already gives a range: drop --threshold or the range")
    return get_preset(f"{names[0]}:{threshold}").name


def _check_ct(volume: Volume) -> None:
    if volume.modality and volume.modality.upper() != "CT":
        raise InputError(
            f"presets threshold Hounsfield units and need a CT; this is {volume.modality}: "
            "use --model or --labels instead"
        )
    if volume.units and volume.units.upper() != "HU":
        raise InputError(f"presets need values in HU; this volume is in {volume.units!r}")


def check_range(low: float | None, high: float | None, *, units: str = "HU ") -> None:
    """Raise :class:`InputError` when ``low`` is above ``high`` (an empty range)."""
    if low is not None and high is not None and low > high:
        raise InputError(f"{units}range {_fmt_range(low, high)} is empty: LOW must not be above HIGH")


def in_range(values: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    """``low <= values <= high`` as a bool array; ``None`` leaves that end open.

    The comparison every threshold makes (presets, custom ranges, a slice preview).
    """
    mask = np.ones(values.shape, dtype=bool)
    if low is not None:
        mask &= values >= low
    if high is not None:
        mask &= values <= high
    return mask


def threshold_mask(
    volume: Volume,
    low: float | None,
    high: float | None,
    *,
    steps: Sequence[Mapping[str, Any]] = (),
    name: str = "threshold",
    ct_only: bool = True,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Voxels with ``low <= HU <= high``, then the clean-up ``steps`` in order.

    The one threshold implementation: presets, custom ranges and interactive
    threshold tools all call it.

    Parameters
    ----------
    volume : Volume
        CT with (I, J, K) values in Hounsfield units.
    low, high : float or None
        Inclusive HU range; ``None`` leaves that end open.
    steps : sequence of dict
        Clean-up operations from :data:`STEP_OPS`, e.g.
        ``[{"op": "keep_components", "min_mm3": 200}]``; none by default.
    name : str
        What the progress messages and errors call this threshold.
    ct_only : bool
        Refuse a volume that is not a CT in HU (presets). ``False`` thresholds
        any intensities (an MR in scanner units); steps that name HU then
        compare those values.

    Returns
    -------
    (I, J, K) ndarray of bool
        The voxels kept, on the volume's grid.

    Raises
    ------
    InputError
        If the volume is not a CT in HU (with ``ct_only``), ``low`` is above ``high``
        or a step is unknown.
    """
    if ct_only:
        _check_ct(volume)
    check_range(low, high, units="HU " if ct_only else "")
    steps = tuple(dict(s) for s in steps)
    check_steps(steps, name)
    hu = np.asarray(volume.array)
    if not hu.flags.c_contiguous and hu.T.flags.c_contiguous:
        # a Fortran-ordered array (as DICOM loading gives): work on the C-ordered
        # transposed view with the affine's columns permuted to match; no copy
        swapped = volume.replace(array=hu.T, affine=volume.affine[:, [2, 1, 0, 3]])
        return threshold_mask(swapped, low, high, steps=steps, name=name, ct_only=ct_only,
                              progress=progress).T
    mask = in_range(hu, low, high)
    n = len(steps) + 1
    report(progress, f"preset {name}", 1 / n)
    # work inside the bounding box of the thresholded voxels (+ the largest filter reach)
    reach = max([float(s.get("radius_mm", 0.0)) for s in steps] + [0.0]) + BODY_GRID_MM
    crop = bounding_box(mask, tuple(int(np.ceil(reach / s)) + 1 for s in volume.spacing))
    sub = np.ascontiguousarray(mask[crop])
    for i, step in enumerate(steps, start=2):
        if not sub.any():
            break
        sub = apply_step(sub, step, volume, crop)
        report(progress, f"preset {name}: {step['op']}", i / n)
    out = np.zeros(hu.shape, dtype=bool)
    out[crop] = sub
    return out


def preset_mask(volume: Volume, preset: str | Preset, *, progress: ProgressFn | None = None) -> np.ndarray:
    """Threshold ``volume`` by a preset and run its clean-up steps (see :func:`threshold_mask`).

    Parameters
    ----------
    volume : Volume
        CT with (I, J, K) values in Hounsfield units.
    preset : str or Preset
        Preset or its name, optionally with a range (``"bone:250"``, ``"250..3000"``).

    Returns
    -------
    (I, J, K) ndarray of bool
        The structure's voxels, on the volume's grid.
    """
    p = get_preset(preset)
    return threshold_mask(volume, p.hu_min, p.hu_max, steps=p.steps, name=p.name, progress=progress)


def _min_piece_mm3(preset: Preset) -> float:
    """Return the smallest piece a preset keeps (its last ``keep_components``), 0 if none."""
    sizes = [float(s.get("min_mm3", STEP_OPS["keep_components"]["min_mm3"]))
             for s in preset.steps if s["op"] == "keep_components"]
    return sizes[-1] if sizes else 0.0


def apply_presets(
    volume: Volume,
    presets: str | Preset | Sequence[str | Preset],
    *,
    progress: ProgressFn | None = None,
) -> LabelMap:
    """Label map of one or more presets on the volume's grid.

    Where presets overlap, the one listed first keeps the voxel. A comma-separated
    string (``"bone,lung"``) lists several.

    Raises
    ------
    EmptySegmentationError
        If a preset finds no voxels (wrong units, or the structure is not in the scan).
    """
    if isinstance(presets, str):
        presets = [s for s in presets.split(",") if s.strip()]
    elif isinstance(presets, Preset):
        presets = [presets]
    chosen = [get_preset(p) for p in presets]
    if not chosen:
        raise InputError("no preset given; known presets: " + ", ".join(load_presets()))
    _check_distinct_labels(chosen)
    out = np.zeros_like(np.asarray(volume.array), dtype=np.uint8)  # same memory order as the image
    names: dict[int, str] = {}
    for i, p in enumerate(chosen):
        sub = None if progress is None else (
            lambda s, f, i=i: report(progress, s, (i + f) / len(chosen)))
        mask = preset_mask(volume, p, progress=sub)
        if not mask.any():
            lo = "-inf" if p.hu_min is None else f"{p.hu_min:g}"
            hi = "inf" if p.hu_max is None else f"{p.hu_max:g}"
            raise EmptySegmentationError(
                f"preset {p.name!r} found no voxels in {lo}..{hi} HU after clean-up: check that the "
                f"image is a CT in Hounsfield units (values here span {float(np.min(volume.array)):g}"
                f"..{float(np.max(volume.array)):g}) and that it shows the {p.label_name}"
            )
        if p.label > 255 and out.dtype == np.uint8:
            out = out.astype(np.uint16)
        if i > 0:
            free = mask & (out == 0)
            if not np.array_equal(free, mask) and _min_piece_mm3(p) > 0:
                # what earlier presets left may fall apart into debris under the minimum
                free = drop_small(free, _min_piece_mm3(p), volume.voxel_volume_mm3)
            mask = free
        out[mask] = p.label
        names[p.label] = p.label_name
    return LabelMap(array=out, affine=volume.affine, names=names, source=f"preset:{','.join(p.name for p in chosen)}")


def _check_distinct_labels(chosen: Sequence[Preset]) -> None:
    seen: dict[int, str] = {}
    for p in chosen:
        if p.label in seen:
            raise InputError(f"presets {seen[p.label]!r} and {p.name!r} both make label {p.label} "
                             f"({p.label_name}); list only one of them")
        seen[p.label] = p.name


@dataclass(frozen=True)
class PresetSource:
    """One or more HU-threshold presets as a label source.

    Attributes
    ----------
    presets : tuple of str
        Preset names, first listed wins where they overlap; a comma-separated
        string (``"bone,lung"``) is split. A name may carry a range
        (``"bone:250"``, ``"bone:250..2000"``) and a bare ``"250..3000"`` is a
        custom threshold (see :func:`get_preset`). Unknown names and malformed
        ranges raise :class:`~medrecon.errors.InputError` at once, before any
        image is read.
    """

    kind: ClassVar[str] = "preset"

    presets: tuple[str, ...]

    def __post_init__(self) -> None:
        given = self.presets.split(",") if isinstance(self.presets, str) else self.presets
        chosen = [get_preset(str(n).strip()) for n in given if str(n).strip()]
        if not chosen:
            raise InputError("no preset given; known presets: " + ", ".join(load_presets()))
        _check_distinct_labels(chosen)
        object.__setattr__(self, "presets", tuple(p.name for p in chosen))

    def segment(self, volume: Volume, *, progress: ProgressFn | None = None) -> LabelMap:
        """Label ``volume`` (a CT in HU) with the presets (see :func:`apply_presets`)."""
        return apply_presets(volume, self.presets, progress=progress)

    def describe(self) -> dict[str, Any]:
        """Kind, name (the preset names), version (``None``) and each preset's definition."""
        return {"kind": self.kind, "name": ",".join(self.presets), "version": None,
                "presets": [get_preset(n).to_dict() for n in self.presets]}
