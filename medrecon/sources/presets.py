"""Classical HU-threshold reconstruction presets (bone, skin, lung, airway, ...).

A preset is data (``medrecon/data/presets.json``): a name, a Hounsfield-unit
range, a label id and name, and a list of clean-up steps drawn from the fixed
vocabulary :data:`STEP_OPS`. No code lives in the JSON file.

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
from medrecon.volume import LabelMap, Volume

#: Clean-up operations a preset may list, with their parameters and defaults.
#:
#: * ``fill_holes``: fill what the mask encloses, slice by slice (``plane="axial"``) or
#:   3D cavities only (``"3d"``); with ``min_mean_hu`` a hole is filled only when its
#:   mean HU reaches it (a bone ring around brain or air stays open); with ``max_mm3``
#:   only holes smaller than that (specks that would each be a shell inside the mesh).
#: * ``open`` / ``close``: morphological opening / closing with a box of +-``radius_mm``.
#: * ``keep_largest`` / ``keep_components``: the ``n`` largest pieces / pieces of at
#:   least ``min_mm3``. Pieces are face-connected, as the shells marching cubes makes
#:   from the mask, so no piece under the minimum reaches the mesher.
#: * ``inside_body``: only voxels inside the patient outline (table and air removed).
#: * ``connected_to_top``: only pieces touching the top (head end) slice.
#: * ``away_from_bone``: drop voxels within ``radius_mm`` of bone (>= ``bone_hu``), then
#:   the pieces whose surface lies next to bone for more than ``max_contact`` of it
#:   (marrow between cortices does, a vessel beside the spine does not).
STEP_OPS: Mapping[str, Mapping[str, Any]] = {
    "fill_holes": {"plane": "axial", "min_mean_hu": None, "max_mm3": None},
    "open": {"radius_mm": 1.0},
    "close": {"radius_mm": 1.0},
    "keep_largest": {"n": 1},
    "keep_components": {"min_mm3": 100.0},
    "inside_body": {"body_hu": -200.0},
    "connected_to_top": {},
    "away_from_bone": {"bone_hu": 300.0, "radius_mm": 1.0, "max_contact": 0.3},
}

#: Tissue regions smaller than this fraction of the largest are not "body" (table, cables).
BODY_MIN_FRACTION = 0.05


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
    """

    name: str
    label: int
    label_name: str
    hu_min: float | None
    hu_max: float | None
    steps: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (as in ``presets.json``)."""
        return {
            "name": self.name, "label": self.label, "label_name": self.label_name,
            "hu": [self.hu_min, self.hu_max], "description": self.description,
            "steps": [dict(s) for s in self.steps],
        }


def _parse(entry: Mapping[str, Any]) -> Preset:
    name = str(entry.get("name", "?"))
    try:
        lo, hi = entry["hu"]
        steps = tuple(dict(s) for s in entry.get("steps", ()))
        preset = Preset(
            name=name, label=int(entry["label"]), label_name=str(entry["label_name"]),
            hu_min=None if lo is None else float(lo), hu_max=None if hi is None else float(hi),
            steps=steps, description=str(entry.get("description", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"preset {name!r} is malformed ({exc}); see medrecon/data/presets.json") from exc
    _check_steps(preset.steps, name)
    return preset


def _check_steps(steps: Sequence[Mapping[str, Any]], name: str) -> None:
    for step in steps:
        op = step.get("op")
        if op not in STEP_OPS:
            raise InputError(f"preset {name!r}: unknown step {op!r}; known: {', '.join(STEP_OPS)}")
        unknown = set(step) - {"op"} - set(STEP_OPS[op])
        if unknown:
            raise InputError(f"preset {name!r}: step {op!r} has unknown parameters {sorted(unknown)}")


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


# --- geometry helpers -------------------------------------------------------------
def _axial_axis(volume: Volume) -> int:
    """Array axis closest to the world S (head-foot) direction."""
    return int(np.argmax(np.abs(volume.direction[2])))


def _box(radius_mm: float, spacing: np.ndarray) -> tuple[int, ...]:
    """Odd box size per axis covering +-radius_mm (1 where the voxel is larger)."""
    return tuple(int(2 * np.floor(radius_mm / s + 1e-6) + 1) for s in np.asarray(spacing))


def _morph(mask: np.ndarray, size: tuple[int, ...], *, opening: bool) -> np.ndarray:
    """Binary opening/closing with a box, as separable min/max filters (fast on big volumes).

    ``mode="nearest"`` treats the image as continuing past its border, so a
    thin slab (a 3-slice series) is not eroded from its ends and closing does
    not glue structures to the border.
    """
    from scipy import ndimage

    if all(n == 1 for n in size):
        return mask
    m = mask.view(np.uint8)
    first, second = (ndimage.minimum_filter, ndimage.maximum_filter) if opening else (
        ndimage.maximum_filter, ndimage.minimum_filter)
    return second(first(m, size=size, mode="nearest"), size=size, mode="nearest").view(bool)


def _components(mask: np.ndarray, *, faces: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Label the pieces of ``mask``: face-connected (as marching cubes' shells) or 26-connected."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(3, 1 if faces else 3)
    lab, n = ndimage.label(mask, structure=structure)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    return lab, sizes


def _select(lab: np.ndarray, keep: np.ndarray, n: int) -> np.ndarray:
    lut = np.zeros(n, dtype=bool)
    lut[keep] = True
    lut[0] = False
    return lut[lab]


def _fill_holes(mask: np.ndarray, axis: int | None, hu: np.ndarray | None = None,
                min_mean_hu: float | None = None, max_voxels: float | None = None) -> np.ndarray:
    """Fill the background ``mask`` encloses: in each slice across ``axis``, or in 3D (``None``).

    A hole is a face-connected piece of background not connected to the border
    (in-plane for slices). With ``min_mean_hu``, a hole is filled only when the
    mean of its ``hu`` values reaches it, so a closed bone ring around brain or
    air stays open; with ``max_voxels``, only holes smaller than that are filled.
    """
    from scipy import ndimage

    if axis is None:
        structure = ndimage.generate_binary_structure(3, 1)
    else:
        structure = np.zeros((3, 3, 3), bool)
        centre = [1, 1, 1]
        for ax in range(3):
            if ax != axis:
                for d in (0, 2):
                    idx = list(centre)
                    idx[ax] = d
                    structure[tuple(idx)] = True
        structure[1, 1, 1] = True
    lab, n = ndimage.label(~mask, structure=structure)
    stays_open = np.zeros(n + 1, dtype=bool)
    stays_open[0] = True
    for ax in range(3):
        if ax != axis:
            stays_open[np.take(lab, 0, axis=ax)] = True
            stays_open[np.take(lab, -1, axis=ax)] = True
    if (min_mean_hu is not None and hu is not None) or max_voxels is not None:
        holes = ~stays_open[lab]
        ids = lab[holes]
        count = np.bincount(ids, minlength=n + 1)
        if max_voxels is not None:
            stays_open |= count >= max_voxels
        if min_mean_hu is not None and hu is not None:
            total = np.bincount(ids, weights=hu[holes], minlength=n + 1)
            stays_open |= total < float(min_mean_hu) * count
    return mask | ~stays_open[lab]


def _fill_axial(mask: np.ndarray, axis: int) -> np.ndarray:
    """Fill holes slice by slice: background not connected (in-plane) to a slice's border."""
    return _fill_holes(mask, axis)


def _away_from_bone(mask: np.ndarray, hu: np.ndarray, spacing: np.ndarray, *, bone_hu: float,
                    radius_mm: float, max_contact: float) -> np.ndarray:
    """Drop voxels near bone, then the pieces whose surface mostly lies next to bone.

    Marrow and trabecular bone between cortices are surrounded by the band
    within ``radius_mm`` of bone; a vessel touches it only where it runs beside a
    bone. A piece's contact is the fraction of the voxels just outside it that lie
    in that band.
    """
    from scipy import ndimage

    near = _morph_one(hu >= bone_hu, _box(radius_mm, spacing), grow=True)
    mask = mask & ~near
    lab, sizes = _components(mask)
    if len(sizes) <= 1:
        return mask
    # each voxel just outside a piece, with the id of a piece it touches
    grown = ndimage.maximum_filter(lab, size=3, mode="constant", cval=0)
    shell = (grown > 0) & ~mask
    ids = grown[shell]
    border = np.bincount(ids, minlength=len(sizes))
    touching = np.bincount(ids[near[shell]], minlength=len(sizes))
    keep = np.flatnonzero(touching <= float(max_contact) * np.maximum(border, 1))
    return _select(lab, keep, len(sizes))


#: Voxel size (mm) of the coarse grid the body outline is found on.
BODY_GRID_MM = 4.0


def body_mask(volume: Volume, *, body_hu: float = -200.0) -> np.ndarray:
    """(I, J, K) bool mask of the patient: tissue regions, holes filled slice-wise.

    Found on a coarse grid (about :data:`BODY_GRID_MM` mm voxels) for speed: an
    opening detaches the table and clothing, every region at least 5 % the size
    of the largest is kept (arms beside the trunk stay, the thin table goes)
    and holes are filled slice by slice. Back on the full grid, the outline
    itself comes from the full-resolution threshold: within one coarse voxel of
    the coarse outline a voxel is body when it is tissue (> ``body_hu``);
    deeper inside, every voxel is body (lungs, bowel gas).
    """
    spacing = volume.spacing
    step = np.maximum(1, np.floor(BODY_GRID_MM / spacing + 1e-6)).astype(int)
    hu = np.asarray(volume.array)
    coarse = np.ascontiguousarray(hu[:: step[0], :: step[1], :: step[2]] > body_hu)
    size = tuple(3 if s > 1 else _box(2.0, [sp])[0] for s, sp in zip(step, spacing, strict=True))
    tissue = _morph(coarse, size, opening=True)
    lab, sizes = _components(tissue, faces=False)
    if sizes.max(initial=0) == 0:
        return np.zeros(hu.shape, dtype=bool)
    body = _select(lab, np.flatnonzero(sizes >= BODY_MIN_FRACTION * sizes.max()), len(sizes))
    body = _fill_axial(body, _axial_axis(volume))
    if not np.any(step > 1):
        return body
    rim = tuple(3 if s > 1 else 1 for s in step)
    # 0 outside, 1 near the outline (decided by the full-resolution threshold), 2 inside
    code = _morph_one(body, rim, grow=True).view(np.uint8) + _morph_one(body, rim, grow=False).view(np.uint8)
    full = _upsample(code, step, hu.shape)
    return (full == 2) | ((full == 1) & (hu > body_hu))


def _morph_one(mask: np.ndarray, size: tuple[int, ...], *, grow: bool) -> np.ndarray:
    from scipy import ndimage

    fn = ndimage.maximum_filter if grow else ndimage.minimum_filter
    return fn(mask.view(np.uint8), size=size, mode="nearest").view(bool)


def _upsample(coarse: np.ndarray, step: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour upsampling of a strided ``[::step]`` sample back to ``shape``."""
    out = coarse
    for ax, (n, s, c) in enumerate(zip(shape, step, coarse.shape, strict=True)):
        nearest = np.minimum(np.rint(np.arange(n) / s).astype(int), c - 1)
        out = np.repeat(out, np.bincount(nearest, minlength=c), axis=ax)
    return out


def _bbox(mask: np.ndarray, margin: tuple[int, ...]) -> tuple[slice, ...]:
    out = []
    for ax in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        lo, hi = (hit[0], hit[-1] + 1) if len(hit) else (0, 0)
        out.append(slice(max(0, lo - margin[ax]), min(mask.shape[ax], hi + margin[ax])))
    return tuple(out)


def _step(mask: np.ndarray, step: Mapping[str, Any], volume: Volume, crop: tuple[slice, ...]) -> np.ndarray:
    """Apply one clean-up step to ``mask``, the ``crop`` part of the volume's (C-ordered) grid."""
    op = step["op"]
    params = {**STEP_OPS[op], **{k: v for k, v in step.items() if k != "op"}}
    if op == "fill_holes":
        axis = None if params["plane"] == "3d" else _axial_axis(volume)
        gate, largest = params["min_mean_hu"], params["max_mm3"]
        hu = None if gate is None else np.asarray(volume.array)[crop]
        return _fill_holes(mask, axis, hu, None if gate is None else float(gate),
                           None if largest is None else float(largest) / volume.voxel_volume_mm3)
    if op in ("open", "close"):
        return _morph(mask, _box(float(params["radius_mm"]), volume.spacing), opening=op == "open")
    if op == "keep_largest":
        lab, sizes = _components(mask)
        keep = np.argsort(sizes)[::-1][: int(params["n"])]
        return _select(lab, keep[sizes[keep] > 0], len(sizes))
    if op == "keep_components":
        return _drop_small(mask, float(params["min_mm3"]), volume.voxel_volume_mm3)
    if op == "inside_body":
        return mask & body_mask(volume, body_hu=float(params["body_hu"]))[crop]
    if op == "connected_to_top":
        axis = _axial_axis(volume)
        top = volume.shape[axis] - 1 if volume.direction[2, axis] > 0 else 0
        if not crop[axis].start <= top < crop[axis].stop:
            return np.zeros_like(mask)
        lab, sizes = _components(mask)
        touching = np.unique(np.take(lab, top - crop[axis].start, axis=axis))
        return _select(lab, touching[touching > 0], len(sizes))
    if op == "away_from_bone":
        return _away_from_bone(mask, np.asarray(volume.array)[crop], volume.spacing,
                               bone_hu=float(params["bone_hu"]), radius_mm=float(params["radius_mm"]),
                               max_contact=float(params["max_contact"]))
    raise InputError(f"unknown preset step {op!r}")  # _check_steps rejects these first


def _drop_small(mask: np.ndarray, min_mm3: float, voxel_mm3: float) -> np.ndarray:
    """``mask`` without its face-connected pieces under ``min_mm3``."""
    lab, sizes = _components(mask)
    return _select(lab, np.flatnonzero(sizes >= max(min_mm3 / voxel_mm3, 1)), len(sizes))


def _check_ct(volume: Volume) -> None:
    if volume.modality and volume.modality.upper() != "CT":
        raise InputError(
            f"presets threshold Hounsfield units and need a CT; this is {volume.modality}: "
            "use --model or --labels instead"
        )
    if volume.units and volume.units.upper() != "HU":
        raise InputError(f"presets need values in HU; this volume is in {volume.units!r}")


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
    if low is not None and high is not None and low > high:
        raise InputError(f"HU range {_fmt_range(low, high)} is empty: LOW must not be above HIGH")
    steps = tuple(dict(s) for s in steps)
    _check_steps(steps, name)
    hu = np.asarray(volume.array)
    if not hu.flags.c_contiguous and hu.T.flags.c_contiguous:
        # a Fortran-ordered array (as DICOM loading gives): work on the C-ordered
        # transposed view with the affine's columns permuted to match; no copy
        swapped = volume.replace(array=hu.T, affine=volume.affine[:, [2, 1, 0, 3]])
        return threshold_mask(swapped, low, high, steps=steps, name=name, ct_only=ct_only,
                              progress=progress).T
    mask = np.ones(hu.shape, dtype=bool)
    if low is not None:
        mask &= hu >= low
    if high is not None:
        mask &= hu <= high
    n = len(steps) + 1
    report(progress, f"preset {name}", 1 / n)
    # work inside the bounding box of the thresholded voxels (+ the largest filter reach)
    reach = max([float(s.get("radius_mm", 0.0)) for s in steps] + [0.0]) + BODY_GRID_MM
    crop = _bbox(mask, tuple(int(np.ceil(reach / s)) + 1 for s in volume.spacing))
    sub = np.ascontiguousarray(mask[crop])
    for i, step in enumerate(steps, start=2):
        if not sub.any():
            break
        sub = _step(sub, step, volume, crop)
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
                free = _drop_small(free, _min_piece_mm3(p), volume.voxel_volume_mm3)
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
