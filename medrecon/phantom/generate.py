"""Synthetic abdominal CT studies with exact organ labels: :func:`make_phantom`."""

from __future__ import annotations

import numpy as np

from medrecon.labels import total_class_map
from medrecon.phantom.anatomy import Patient, draw_patient
from medrecon.phantom.config import PhantomConfig
from medrecon.phantom.ct import render_ct
from medrecon.phantom.paint import rasterise
from medrecon.phantom.shapes import Grid
from medrecon.volume import LabelMap, Volume


def make_phantom(seed: int, *, config: PhantomConfig | None = None) -> tuple[Volume, LabelMap]:
    """Make a synthetic abdominal CT study and its ground-truth organ labels.

    The patient (body wall with fat and muscle, spine, ribs, lung bases, heart,
    liver, gallbladder, spleen, kidneys, stomach, pancreas, aorta, iliac
    arteries, inferior vena cava, psoas and back muscles) is drawn at random
    from ``seed``, rasterised on a grid with random spacing, given realistic
    attenuation, texture, noise and scanner blur, and stored in a random array
    orientation (see :class:`PhantomConfig`). The same seed and configuration
    always give the same study; the patient itself depends only on the seed and
    ``body_scale``/``stomach``/``pancreas``, so two orientations of one seed
    hold the same anatomy at the same world positions.

    Parameters
    ----------
    seed : int
        Non-negative seed of every random choice.
    config : PhantomConfig, optional
        Size, spacing, orientation, contrast and noise settings
        (default ``PhantomConfig()``: 256 x 256 x 40-120 voxels).

    Returns
    -------
    volume : Volume
        (I, J, K) float32 CT in Hounsfield units (integer values), LPS affine in mm,
        modality ``"CT"``; ``meta`` records the seed, contrast, noise and size factor.
    labels : LabelMap
        (I, J, K) uint8 labels on the same grid, TotalSegmentator ``total`` ids
        and names (spleen 1, kidney_right 2, kidney_left 3, liver 5, ...).
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    cfg = config if config is not None else PhantomConfig()
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(5)]
    r_patient, r_grid, r_orient, r_paint, r_image = streams
    patient = draw_patient(
        r_patient, body_scale=cfg.body_scale, stomach=cfg.stomach, pancreas=cfg.pancreas
    )
    grid, spacing, offset = _draw_grid(r_grid, cfg, patient)
    contrast = bool(r_image.random() < 0.7) if cfg.contrast is None else bool(cfg.contrast)
    noise_sd = float(r_image.uniform(*cfg.noise_hu))

    # Thick slices: sample the anatomy at three depths per slice so that the image
    # shows partial volume across the thickness; labels are taken at the centre.
    sub = 3 if spacing[2] >= 1.5 * spacing[0] else 1
    depths = spacing[2] * (np.arange(sub) - (sub - 1) / 2) / sub
    fine = Grid(grid.x, grid.y, (grid.z[:, None] + depths[None, :]).ravel())
    tissue, labels = rasterise(patient, fine, r_paint, z_centres=grid.z if sub > 1 else None)
    labels = np.ascontiguousarray(labels[:, :, sub // 2 :: sub])
    hu = render_ct(
        tissue, grid, spacing, r_image, contrast=contrast, noise_sd=noise_sd,
        psf_mm=cfg.psf_mm, slice_mm=float(spacing[2]), subslices=sub,
    )
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = np.array([grid.x[0], grid.y[0], grid.z[0]]) + offset

    table = total_class_map()
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
    names = {int(i): table[int(i)] for i in present if i != 0}
    volume = Volume(
        array=hu,
        affine=affine,
        modality="CT",
        units="HU",
        description=f"medrecon phantom, seed {int(seed)}",
        meta={
            "phantom_seed": int(seed),
            "contrast": "portal venous" if contrast else "none",
            "noise_hu": round(noise_sd, 2),
            "body_scale": round(patient.scale, 4),
            "slice_thickness_mm": round(float(spacing[2]), 4),
        },
    )
    label_map = LabelMap(array=labels, affine=affine, names=names)
    codes = _orientation(r_orient, cfg.orientation)
    if codes != "LPS":
        volume, label_map = volume.reorient(codes), label_map.reorient(codes)
    return volume, label_map


def _draw_grid(
    rng: np.random.Generator, cfg: PhantomConfig, patient: Patient
) -> tuple[Grid, np.ndarray, np.ndarray]:
    """Axis-aligned grid (anatomical mm), voxel size (x, y, z) and the world offset."""
    s = patient.scale
    n = int(cfg.matrix)
    # The reconstruction field of view must hold the whole body.
    needed = 2.0 * max(patient.body_a, patient.body_b) * 1.08 / n
    lo, hi = cfg.spacing_xy
    spacing_xy = max(float(rng.uniform(lo, hi)), needed)
    thickness = float(rng.uniform(*cfg.slice_thickness))
    if cfg.slices is not None:
        nz = int(cfg.slices)
    else:
        nz = max(1, int(round(float(rng.uniform(*cfg.coverage_mm)) / thickness)))
    fov = n * spacing_xy
    margin_x = max(0.0, 0.5 * (fov - 2 * patient.body_a))
    margin_y = max(0.0, 0.5 * (fov - 2 * patient.body_b))
    cx = float(rng.uniform(-0.5, 0.5) * margin_x)
    # The table sits under the patient: the body is usually centred a bit anteriorly.
    cy = float(rng.uniform(-0.5, 0.3) * margin_y)
    top = patient.top + float(rng.uniform(0.0, 20.0)) * s
    ramp = np.arange(n) - (n - 1) / 2
    grid = Grid(
        x=cx + ramp * spacing_xy,
        y=cy + ramp * spacing_xy,
        z=top - thickness * np.arange(nz)[::-1],
    )
    # Where the scanner's coordinate system puts the patient (table position).
    offset = np.array([rng.normal(0, 8), rng.normal(0, 15), rng.uniform(-900.0, -200.0)])
    return grid, np.array([spacing_xy, spacing_xy, thickness]), offset


def _orientation(rng: np.random.Generator, mode: str) -> str:
    """Three LPS codes for the stored array's axes."""
    pairs = (("L", "R"), ("P", "A"), ("S", "I"))
    if mode == "axial":
        first = [pairs[0], pairs[1]]
        if rng.random() < 0.5:
            first.reverse()
        codes = [p[int(rng.integers(2))] for p in first]
        # Slices run along the row x column normal, as DICOM readers that sort by
        # position return them: the stored layout survives a DICOM round trip.
        direction = np.array([_AXIS[c] for c in codes])
        normal = np.cross(direction[0], direction[1])
        return "".join(codes) + ("S" if normal[2] > 0 else "I")
    if mode == "random":
        axes = [pairs[i] for i in rng.permutation(3)]
        return "".join(p[int(rng.integers(2))] for p in axes)
    return mode.upper()


_AXIS = {
    "L": (1, 0, 0), "R": (-1, 0, 0), "P": (0, 1, 0), "A": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1),
}
