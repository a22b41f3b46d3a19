"""Classical HU-threshold reconstruction presets (bone, skin, lung, airway, ...).

A preset is data (``medrecon/data/presets.json``): a name, a Hounsfield-unit
range, a label id and name, and a list of clean-up steps drawn from the fixed
vocabulary :data:`STEP_OPS`. No code lives in the JSON file.

This is what InVesalius and 3D Slicer users do for skulls, bones and airways:
it needs no trained model and works on any CT whose values are in HU.

Arrays are in medrecon's (i, j, k) order on an LPS affine (see
:mod:`medrecon.volume`); "axial" and "top" are found from the affine, so
flipped or permuted volumes give the same result.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar

import numpy as np

from medrecon.errors import EmptySegmentationError, InputError
from medrecon.progress import ProgressFn, report
from medrecon.volume import LabelMap, Volume

#: Clean-up operations a preset may list, with their parameters and defaults.
STEP_OPS: Mapping[str, Mapping[str, Any]] = {
    "fill_holes": {"plane": "axial"},  # "axial": slice by slice; "3d": enclosed cavities only
    "open": {"radius_mm": 1.0},
    "close": {"radius_mm": 1.0},
    "keep_largest": {"n": 1},
    "keep_components": {"min_mm3": 100.0},
    "inside_body": {"body_hu": -200.0},
    "connected_to_top": {},
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
    for step in preset.steps:
        op = step.get("op")
        if op not in STEP_OPS:
            raise InputError(f"preset {name!r}: unknown step {op!r}; known: {', '.join(STEP_OPS)}")
        unknown = set(step) - {"op"} - set(STEP_OPS[op])
        if unknown:
            raise InputError(f"preset {name!r}: step {op!r} has unknown parameters {sorted(unknown)}")
    return preset


@functools.lru_cache(maxsize=1)
def load_presets() -> dict[str, Preset]:
    """All bundled presets, by name, in file order."""
    text = resources.files("medrecon.data").joinpath("presets.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return {p.name: p for p in (_parse(e) for e in data["presets"])}


def get_preset(name: str | Preset) -> Preset:
    """Look up a preset by name (case-insensitive).

    Raises
    ------
    InputError
        If there is no such preset; the message lists the known ones.
    """
    if isinstance(name, Preset):
        return name
    presets = load_presets()
    key = str(name).strip().lower()
    if key not in presets:
        raise InputError(f"unknown preset {name!r}; known presets: {', '.join(presets)} "
                         "(run  medrecon presets  for details)")
    return presets[key]


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


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    return lab, sizes


def _select(lab: np.ndarray, keep: np.ndarray, n: int) -> np.ndarray:
    lut = np.zeros(n, dtype=bool)
    lut[keep] = True
    lut[0] = False
    return lut[lab]


def _fill_axial(mask: np.ndarray, axis: int) -> np.ndarray:
    """Fill holes slice by slice: background not connected (in-plane) to a slice's border."""
    from scipy import ndimage

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
    border = np.zeros(n + 1, dtype=bool)
    border[0] = True
    for ax in range(3):
        if ax != axis:
            border[np.take(lab, 0, axis=ax)] = True
            border[np.take(lab, -1, axis=ax)] = True
    return mask | ~border[lab]


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
    lab, sizes = _components(tissue)
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
    """Apply one clean-up step to ``mask``, the ``crop`` part of the volume's grid."""
    from scipy import ndimage

    op = step["op"]
    params = {**STEP_OPS[op], **{k: v for k, v in step.items() if k != "op"}}
    if op == "fill_holes":
        if params["plane"] == "3d":
            return ndimage.binary_fill_holes(mask)
        return _fill_axial(mask, _axial_axis(volume))
    if op in ("open", "close"):
        return _morph(mask, _box(float(params["radius_mm"]), volume.spacing), opening=op == "open")
    if op == "keep_largest":
        lab, sizes = _components(mask)
        keep = np.argsort(sizes)[::-1][: int(params["n"])]
        return _select(lab, keep[sizes[keep] > 0], len(sizes))
    if op == "keep_components":
        lab, sizes = _components(mask)
        min_voxels = float(params["min_mm3"]) / volume.voxel_volume_mm3
        return _select(lab, np.flatnonzero(sizes >= max(min_voxels, 1)), len(sizes))
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
    raise InputError(f"unknown preset step {op!r}")  # _parse rejects these first


def _check_ct(volume: Volume) -> None:
    if volume.modality and volume.modality.upper() != "CT":
        raise InputError(
            f"presets threshold Hounsfield units and need a CT; this is {volume.modality}: "
            "use --model or --labels instead"
        )
    if volume.units and volume.units.upper() != "HU":
        raise InputError(f"presets need values in HU; this volume is in {volume.units!r}")


def preset_mask(volume: Volume, preset: str | Preset, *, progress: ProgressFn | None = None) -> np.ndarray:
    """Threshold ``volume`` by a preset and run its clean-up steps.

    Parameters
    ----------
    volume : Volume
        CT with (I, J, K) values in Hounsfield units.
    preset : str or Preset
        Preset or its name.

    Returns
    -------
    (I, J, K) ndarray of bool
        The structure's voxels, on the volume's grid.
    """
    p = get_preset(preset)
    _check_ct(volume)
    hu = np.asarray(volume.array)
    if not hu.flags.c_contiguous and hu.T.flags.c_contiguous:
        # a Fortran-ordered array (as DICOM loading gives): work on the C-ordered
        # transposed view with the affine's columns permuted to match; no copy
        swapped = volume.replace(array=hu.T, affine=volume.affine[:, [2, 1, 0, 3]])
        return preset_mask(swapped, p, progress=progress).T
    mask = np.ones(hu.shape, dtype=bool)
    if p.hu_min is not None:
        mask &= hu >= p.hu_min
    if p.hu_max is not None:
        mask &= hu <= p.hu_max
    n = len(p.steps) + 1
    report(progress, f"preset {p.name}", 1 / n)
    # work inside the bounding box of the thresholded voxels (+ the largest filter reach)
    reach = max([float(s.get("radius_mm", 0.0)) for s in p.steps] + [0.0]) + BODY_GRID_MM
    crop = _bbox(mask, tuple(int(np.ceil(reach / s)) + 1 for s in volume.spacing))
    sub = np.ascontiguousarray(mask[crop])
    for i, step in enumerate(p.steps, start=2):
        if not sub.any():
            break
        sub = _step(sub, step, volume, crop)
        report(progress, f"preset {p.name}: {step['op']}", i / n)
    out = np.zeros(hu.shape, dtype=bool)
    out[crop] = sub
    return out


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
        if i == 0:
            out[mask] = p.label
        else:
            out[mask & (out == 0)] = p.label
        names[p.label] = p.label_name
    return LabelMap(array=out, affine=volume.affine, names=names, source=f"preset:{','.join(p.name for p in chosen)}")


@dataclass(frozen=True)
class PresetSource:
    """One or more HU-threshold presets as a label source.

    Attributes
    ----------
    presets : tuple of str
        Preset names, first listed wins where they overlap; a comma-separated
        string (``"bone,lung"``) is split. Unknown names raise
        :class:`~medrecon.errors.InputError` at once, before any image is read.
    """

    kind: ClassVar[str] = "preset"

    presets: tuple[str, ...]

    def __post_init__(self) -> None:
        given = self.presets.split(",") if isinstance(self.presets, str) else self.presets
        names = tuple(get_preset(str(n).strip()).name for n in given if str(n).strip())
        if not names:
            raise InputError("no preset given; known presets: " + ", ".join(load_presets()))
        object.__setattr__(self, "presets", names)

    def segment(self, volume: Volume, *, progress: ProgressFn | None = None) -> LabelMap:
        """Label ``volume`` (a CT in HU) with the presets (see :func:`apply_presets`)."""
        return apply_presets(volume, self.presets, progress=progress)

    def describe(self) -> dict[str, Any]:
        """Kind, name (the preset names), version (``None``) and each preset's definition."""
        return {"kind": self.kind, "name": ",".join(self.presets), "version": None,
                "presets": [get_preset(n).to_dict() for n in self.presets]}
