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
from typing import Any

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


def _ball(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    r = np.floor(radius_mm / np.asarray(spacing) + 1e-6).astype(int)
    grids = np.ogrid[tuple(slice(-n, n + 1) for n in r)]
    dist = sum((g * s / max(radius_mm, 1e-9)) ** 2 for g, s in zip(grids, spacing, strict=True))
    return dist <= 1.0 + 1e-9


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    return lab, sizes


def _fill_axial(mask: np.ndarray, axis: int) -> np.ndarray:
    from scipy import ndimage

    out = np.moveaxis(mask.copy(), axis, 0)
    for k in range(out.shape[0]):
        if out[k].any():
            out[k] = ndimage.binary_fill_holes(out[k])
    return np.moveaxis(out, 0, axis)


def _morph(mask: np.ndarray, ball: np.ndarray, *, opening: bool) -> np.ndarray:
    """Binary opening/closing that treats the image as continuing past its border.

    Edge padding keeps a thin slab (a 3-slice series) from being eroded away
    from its ends, and keeps closing from gluing structures to the border.
    """
    from scipy import ndimage

    pad = tuple((n // 2 + 1,) * 2 for n in ball.shape)
    padded = np.pad(mask, pad, mode="edge")
    fn = ndimage.binary_opening if opening else ndimage.binary_closing
    out = fn(padded, structure=ball)
    return out[tuple(slice(p[0], -p[0]) for p in pad)]


def body_mask(volume: Volume, *, body_hu: float = -200.0) -> np.ndarray:
    """(I, J, K) bool mask of the patient: tissue regions, holes filled slice-wise.

    A 2 mm opening detaches the table and clothing; then every region at least
    5 % the size of the largest is kept, so arms beside the trunk stay in while
    the thin table falls away.
    """
    tissue = np.asarray(volume.array) > body_hu
    ball = _ball(2.0, volume.spacing)
    if ball.size > 1:
        tissue = _morph(tissue, ball, opening=True)
    lab, sizes = _components(tissue)
    if sizes.max(initial=0) == 0:
        return tissue
    keep = np.flatnonzero(sizes >= BODY_MIN_FRACTION * sizes.max())
    return _fill_axial(np.isin(lab, keep), _axial_axis(volume))


def _step(mask: np.ndarray, step: Mapping[str, Any], volume: Volume) -> np.ndarray:
    from scipy import ndimage

    op = step["op"]
    params = {**STEP_OPS[op], **{k: v for k, v in step.items() if k != "op"}}
    if op == "fill_holes":
        if params["plane"] == "3d":
            return ndimage.binary_fill_holes(mask)
        return _fill_axial(mask, _axial_axis(volume))
    if op in ("open", "close"):
        ball = _ball(float(params["radius_mm"]), volume.spacing)
        if ball.size == 1:
            return mask
        return _morph(mask, ball, opening=op == "open")
    if op == "keep_largest":
        lab, sizes = _components(mask)
        keep = np.argsort(sizes)[::-1][: int(params["n"])]
        keep = keep[sizes[keep] > 0]
        return np.isin(lab, keep)
    if op == "keep_components":
        lab, sizes = _components(mask)
        min_voxels = float(params["min_mm3"]) / volume.voxel_volume_mm3
        keep = np.flatnonzero(sizes >= max(min_voxels, 1))
        return np.isin(lab, keep)
    if op == "inside_body":
        return mask & body_mask(volume, body_hu=float(params["body_hu"]))
    if op == "connected_to_top":
        axis = _axial_axis(volume)
        top = -1 if volume.direction[2, axis] > 0 else 0
        lab, _ = _components(mask)
        touching = np.unique(np.take(lab, top, axis=axis))
        return np.isin(lab, touching[touching > 0])
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
    mask = np.ones(hu.shape, dtype=bool)
    if p.hu_min is not None:
        mask &= hu >= p.hu_min
    if p.hu_max is not None:
        mask &= hu <= p.hu_max
    n = len(p.steps) + 1
    report(progress, f"preset {p.name}", 1 / n)
    for i, step in enumerate(p.steps, start=2):
        if not mask.any():
            break
        mask = _step(mask, step, volume)
        report(progress, f"preset {p.name}: {step['op']}", i / n)
    return mask


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
    out = np.zeros(volume.shape, dtype=np.uint8)
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
        out[mask & (out == 0)] = p.label
        names[p.label] = p.label_name
    return LabelMap(array=out, affine=volume.affine, names=names, source=f"preset:{','.join(p.name for p in chosen)}")
