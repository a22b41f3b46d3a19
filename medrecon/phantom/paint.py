"""Rasterise a :class:`~medrecon.phantom.anatomy.Patient` into tissue and label arrays.

Structures are painted in anatomical layers, later ones over earlier ones: body
wall and cavity, lungs and mediastinum above the diaphragm, muscles, organs
below it, vessels, then bone. Every voxel gets the structure at its centre, so
the labels are the exact ground truth of the grid.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

from medrecon.labels import total_id
from medrecon.phantom.anatomy import Pancreas, Patient
from medrecon.phantom.canvas import Canvas
from medrecon.phantom.ct import T, smooth_field
from medrecon.phantom.shapes import Grid
from medrecon.phantom.skeleton import paint_ribs, paint_spine


def rasterise(
    patient: Patient,
    grid: Grid,
    rng: np.random.Generator,
    *,
    z_centres: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``patient`` on ``grid``.

    ``z_centres`` (ascending, mm) tells that ``grid.z`` samples slices centred
    there several times each; organ shapes are then evaluated at the centres
    and interpolated in between.

    Returns
    -------
    tissue : (nx, ny, nz) ndarray of uint8
        Tissue ids (:data:`medrecon.phantom.ct.TISSUES`).
    labels : (nx, ny, nz) ndarray of uint8
        TotalSegmentator ``total`` label ids, 0 for unlabelled tissue.
    """
    c = Canvas(patient, grid, z_centres)
    _body(c, rng)
    _muscles(c)
    _organs(c, rng)
    _vessels(c)
    paint_spine(c)
    paint_ribs(c)
    return c.tissue, c.labels


def _body(c: Canvas, rng: np.random.Generator) -> None:
    p, s, g = c.p, c.p.scale, c.grid
    t = c.tissue
    t[c.r_body < 1] = T["subcutaneous_fat"]
    t[c.r_fat < 1] = T["muscle"]
    # The scanner table: a plate under the patient's back.
    body_rows = np.any(c.r_body < 1, axis=0)
    if body_rows.any():
        back = float(g.y[body_rows].max())
        x_mask = np.abs(g.x) < 0.8 * p.body_a
        y_mask = (g.y > back + 6 * s) & (g.y < back + 11 * s)
        t[np.ix_(x_mask, y_mask)] = T["table"]
    # Everything else happens inside the muscle wall: work on its bounding box.
    inner = c.r_cavity < 1
    ii, jj = np.nonzero(inner)
    if ii.size == 0:
        return
    box = (slice(ii.min(), ii.max() + 1), slice(jj.min(), jj.max() + 1))
    inner = inner[box]
    h = c.diaphragm[box][:, :, None]
    x, y = g.x[box[0]][:, None, None], g.y[box[1]][None, :, None]

    # Below the diaphragm: bowel loops (some with gas) in visceral fat.
    k_abd = slice(0, int(np.searchsorted(g.z, float(h.max()), side="left")))
    if k_abd.stop > 0:
        sub = Grid(g.x[box[0]], g.y[box[1]], g.z[k_abd])
        z = sub.z[None, None, :]
        region = t[box[0], box[1], k_abd]
        tissue = np.where(
            smooth_field(rng, sub, 14.0) > ndtri(1.0 - p.bowel_fraction),
            np.where(smooth_field(rng, sub, 7.0) > 1.6, T["bowel_gas"], T["bowel"]),
            T["visceral_fat"],
        ).astype(np.uint8)
        abdomen = inner[:, :, None] & (z < h)
        region[abdomen] = tissue[abdomen]
        region[inner[:, :, None] & (z >= h)] = T["muscle"]  # the diaphragm

    # Above it: lungs beside the mediastinum, with their lobes.
    k_tho = slice(int(np.searchsorted(g.z, float(h.min()), side="left")), len(g.z))
    if k_tho.start >= len(g.z):
        return
    z = g.z[k_tho][None, None, :]
    region, labels = t[box[0], box[1], k_tho], c.labels[box[0], box[1], k_tho]
    region[inner[:, :, None] & (z >= h)] = T["muscle"]  # the diaphragm
    thorax = inner[:, :, None] & (z > h + 4 * s)
    region[thorax] = T["mediastinal_fat"]
    front = -(p.body_b - p.fat - p.muscle)
    back = p.spine_y - 10 * s
    mediastinum = ((x - 10 * s) / (34 * s)) ** 2 + ((y - 0.5 * (front + back)) / (0.5 * (back - front))) ** 2 < 1
    lung = thorax & ~mediastinum & (c.r_cavity[box][:, :, None] < 1 - c.rib_band)
    region[lung] = T["lung"]
    # The oblique fissure runs from high at the back to low in front.
    left = x > 0
    lower = z < np.where(left, p.dome_left, p.dome_right) + 25 * s + 0.9 * y
    lobe = np.where(
        left,
        np.where(lower, total_id("lung_lower_lobe_left"), total_id("lung_upper_lobe_left")),
        np.where(lower, total_id("lung_lower_lobe_right"),
                 np.where(z > p.dome_right + 70 * s, total_id("lung_upper_lobe_right"),
                          total_id("lung_middle_lobe_right"))),
    )
    labels[lung] = np.broadcast_to(lobe, lung.shape)[lung]
    found = c.blob_mask(p.heart, clip="thorax")
    if found is not None:
        sl, _, _, heart = found
        c.paint(sl, heart, T["heart"], total_id("heart"))


def _muscles(c: Canvas) -> None:
    p, s, g = c.p, c.p.scale, c.grid
    x, y = g.x[:, None], g.y[None, :]
    for side, name in ((1, "autochthon_left"), (-1, "autochthon_right")):
        m = (((x - side * 27 * s) / (23 * s)) ** 2 + ((y - p.spine_y - 47 * s) / (19 * s)) ** 2 < 1) & (c.r_fat < 1)
        c.tissue[m, :] = T["muscle"]
        c.labels[m, :] = total_id(name)
    # Psoas: from L1 downwards, thickening towards the pelvis.
    found = c.region((-90 * s, p.spine_y - 60 * s, g.z[0]), (90 * s, p.spine_y + 40 * s, -10 * s))
    if found is None:
        return
    sl, sub, _ = found
    xs, ys, zs = sub.axes()
    depth = -zs - 10 * s
    radius = np.minimum(6 * s + 0.17 * depth, 24 * s)
    yc = p.spine_y_at(zs) + 2 * s
    for side, name in ((1, "iliopsoas_left"), (-1, "iliopsoas_right")):
        xc = side * (24 * s + 0.12 * depth + 0.6 * radius)
        m = ((xs - xc) ** 2 + (ys - yc) ** 2) < radius**2
        c.paint(sl, m, T["muscle"], total_id(name))


def _organs(c: Canvas, rng: np.random.Generator) -> None:
    p, s = c.p, c.p.scale
    for lobe in p.liver:
        found = c.blob_mask(lobe)
        if found is not None:
            sl, _, _, inside = found
            c.paint(sl, inside, T["liver"], total_id("liver"))
    _liver_vessels(c, rng)
    found = c.blob_mask(p.gallbladder)
    if found is not None:
        sl, _, _, inside = found
        c.paint(sl, inside, T["gallbladder"], total_id("gallbladder"))
    if p.stomach is not None:
        found = c.blob_mask(p.stomach)
        if found is not None:
            sl, sub, level, inside = found
            sid = total_id("stomach")
            c.paint(sl, inside, T["fluid"], sid)
            # Supine patient: gas floats anteriorly (towards -y) above a flat fluid level.
            gas_level = p.stomach.center[1] - p.stomach.radii[1] * (1 - 2 * p.stomach_air)
            c.paint(sl, inside & (sub.y[None, :, None] < gas_level), T["gas"], sid)
            c.paint(sl, inside & (level > 0.86), T["stomach_wall"], sid)
    found = c.blob_mask(p.spleen)
    if found is not None:
        sl, _, _, inside = found
        c.paint(sl, inside, T["spleen"], total_id("spleen"))
    if p.pancreas is not None:
        _pancreas(c, p.pancreas)
    for blob, name in ((p.kidney_right, "kidney_right"), (p.kidney_left, "kidney_left")):
        found = c.blob_mask(blob)
        if found is None:
            continue
        sl, sub, level, inside = found
        kid = total_id(name)
        c.paint(sl, inside, T["kidney_cortex"], kid)
        c.paint(sl, inside & (level < 0.72), T["kidney_medulla"], kid)
        # The renal sinus opens medially (towards the spine) at the hilum.
        medial = -np.sign(blob.center[0]) * (sub.x[:, None, None] - blob.center[0])
        c.paint(sl, inside & (level < 0.42) & (medial > -4 * s), T["renal_sinus"], kid)


def _liver_vessels(c: Canvas, rng: np.random.Generator) -> None:
    """Branching veins inside the liver (still labelled liver, as TotalSegmentator does).

    Where two independent smooth random fields are both near zero, their zero
    surfaces intersect along curves: a network of tubes.
    """
    lo = np.min([lobe.bounds()[0] for lobe in c.p.liver], axis=0)
    hi = np.max([lobe.bounds()[1] for lobe in c.p.liver], axis=0)
    found = c.region(lo, hi)
    if found is None:
        return
    sl, sub, _ = found
    band = 0.11
    tubes = np.abs(smooth_field(rng, sub, 20.0)) < band
    tubes &= np.abs(smooth_field(rng, sub, 20.0)) < band
    c.paint(sl, tubes & (c.labels[sl] == total_id("liver")), T["vein"], total_id("liver"))


def _pancreas(c: Canvas, params: Pancreas) -> None:
    x0, x1, y0, dydx, z0, dzdx = params.x0, params.x1, params.y0, params.dydx, params.z0, params.dzdx
    r_head, r_tail = params.r_head, params.r_tail
    pad = r_head + 2
    lo = (x0 - pad, min(y0, y0 + dydx * (x1 - x0)) - pad, min(z0, z0 + dzdx * (x1 - x0)) - pad)
    hi = (x1 + pad, max(y0, y0 + dydx * (x1 - x0)) + pad, max(z0, z0 + dzdx * (x1 - x0)) + pad)
    found = c.region(lo, hi)
    if found is None:
        return
    sl, sub, sl2 = found
    x, y, z = sub.axes()
    u = np.clip((x - x0) / (x1 - x0), 0.0, 1.0)
    radius = r_head + (r_tail - r_head) * u
    yc = y0 + dydx * (x - x0)
    zc = z0 + dzdx * (x - x0)
    # Flattened tube: thinner antero-posteriorly than cranio-caudally.
    inside = (((y - yc) / (0.8 * radius)) ** 2 + ((z - zc) / radius) ** 2 < 1) & (x >= x0) & (x <= x1)
    inside &= (c.r_cavity[sl2][:, :, None] < 1) & (z < c.diaphragm[sl2][:, :, None])
    c.paint(sl, inside, T["pancreas"], total_id("pancreas"))


def _tube(c: Canvas, xc, yc, radii: tuple[float, float], z_lo: float, z_hi: float,
          tissue: int, label: int) -> None:
    """Paint a vertical elliptic tube with centre ``(xc(z), yc(z))`` (callables) between two heights."""
    g = c.grid
    zs = g.z[(g.z >= z_lo) & (g.z <= z_hi)]
    if zs.size == 0:
        return
    cx, cy = xc(zs), yc(zs)
    rx, ry = radii
    lo = (float(np.min(cx)) - rx - 1, float(np.min(cy)) - ry - 1, z_lo)
    hi = (float(np.max(cx)) + rx + 1, float(np.max(cy)) + ry + 1, z_hi)
    found = c.region(lo, hi)
    if found is None:
        return
    sl, sub, sl2 = found
    x, y, _ = sub.axes()
    zz = sub.z
    inside = ((x - xc(zz)[None, None, :]) / rx) ** 2 + ((y - yc(zz)[None, None, :]) / ry) ** 2 < 1
    inside &= c.r_cavity[sl2][:, :, None] < 1
    c.paint(sl, inside, tissue, label)


def _vessels(c: Canvas) -> None:
    p, s = c.p, c.p.scale
    z_of = {v.name: v.z for v in p.vertebrae}
    top = c.grid.z[-1] + 1
    _tube(c, lambda z: np.full_like(z, p.ivc_x), lambda z: p.spine_y_at(z) - 30 * s, (13 * s, 9 * s),
          z_of["vertebrae_L5"], p.dome_right + 20 * s, T["vein"], total_id("inferior_vena_cava"))

    def aorta_x(z):
        return p.aorta_x + np.clip((z - p.dome_left) / (60 * s), 0, 1) * 8 * s

    def aorta_y(z):
        return p.spine_y_at(z) - 17 * s - p.aorta_r - 2 * s + np.clip((z - p.dome_left) / (60 * s), 0, 1) * 14 * s

    r = p.aorta_r
    z_bif = z_of["vertebrae_L4"]
    _tube(c, aorta_x, aorta_y, (r, r), z_bif, top, T["aorta"], total_id("aorta"))
    ri = (0.62 * r, 0.62 * r)
    for side, name in ((1, "iliac_artery_left"), (-1, "iliac_artery_right")):
        _tube(c, lambda z, side=side: p.aorta_x + side * 0.5 * (z_bif - z), aorta_y, ri,
              c.grid.z[0] - 1, z_bif, T["aorta"], total_id(name))
