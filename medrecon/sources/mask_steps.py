"""Mask clean-up steps of the HU presets: the fixed vocabulary :data:`STEP_OPS`.

Morphology, connected pieces, hole filling and the patient outline, applied by
:func:`apply_step` to a boolean mask cropped from a CT's grid. Presets
(:mod:`medrecon.sources.presets`) list these steps as data.

Arrays are in medrecon's (i, j, k) order on an LPS affine (see
:mod:`medrecon.volume`); "axial" and "top" are found from the affine, so
flipped or permuted volumes give the same result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medrecon.errors import InputError
from medrecon.volume import Volume

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


def check_steps(steps: Sequence[Mapping[str, Any]], name: str) -> None:
    """Raise :class:`~medrecon.errors.InputError` for an unknown step or parameter of preset ``name``."""
    for step in steps:
        op = step.get("op")
        if op not in STEP_OPS:
            raise InputError(f"preset {name!r}: unknown step {op!r}; known: {', '.join(STEP_OPS)}")
        unknown = set(step) - {"op"} - set(STEP_OPS[op])
        if unknown:
            raise InputError(f"preset {name!r}: step {op!r} has unknown parameters {sorted(unknown)}")


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


def bounding_box(mask: np.ndarray, margin: tuple[int, ...]) -> tuple[slice, ...]:
    """Slices of the box around ``mask``'s voxels, ``margin`` voxels wider per axis (clipped)."""
    out = []
    for ax in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        lo, hi = (hit[0], hit[-1] + 1) if len(hit) else (0, 0)
        out.append(slice(max(0, lo - margin[ax]), min(mask.shape[ax], hi + margin[ax])))
    return tuple(out)


def apply_step(mask: np.ndarray, step: Mapping[str, Any], volume: Volume, crop: tuple[slice, ...]) -> np.ndarray:
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
        return drop_small(mask, float(params["min_mm3"]), volume.voxel_volume_mm3)
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
    raise InputError(f"unknown preset step {op!r}")  # check_steps rejects these first


def drop_small(mask: np.ndarray, min_mm3: float, voxel_mm3: float) -> np.ndarray:
    """``mask`` without its face-connected pieces under ``min_mm3``."""
    lab, sizes = _components(mask)
    return _select(lab, np.flatnonzero(sizes >= max(min_mm3 / voxel_mm3, 1)), len(sizes))
