"""Bones of the phantom: vertebrae (body, arch, discs, canal, cord) and ribs."""

from __future__ import annotations

import numpy as np

from medrecon.labels import total_id
from medrecon.phantom.canvas import Canvas
from medrecon.phantom.ct import T


def paint_spine(c: Canvas) -> None:
    """Paint each vertebra (cancellous body with a cortical rim, arch, processes), the discs and the canal."""
    p, s = c.p, c.p.scale
    verts = sorted(p.vertebrae, key=lambda v: v.z)
    for i, v in enumerate(verts):
        rx, ry = (24 * s, 18 * s) if v.lumbar else (18 * s, 15 * s)
        hh = v.half_height
        canal_r = 8.5 * s
        lo = (-45 * s, p.spine_y - 30 * s, v.z - hh - 1)
        hi = (45 * s, p.spine_y + ry + 60 * s, v.z + hh + 1)
        found = c.region(lo, hi)
        if found is None:
            continue
        sl, sub, _ = found
        x, y, z = sub.axes()
        yc = p.spine_y_at(z)
        dz = np.abs(z - v.z)
        body = np.maximum(np.sqrt((x / rx) ** 2 + ((y - yc) / ry) ** 2), dz / hh)
        label = total_id(v.name)
        cy = yc + ry + canal_r + 2 * s
        rr = np.sqrt(x**2 + (y - cy) ** 2)
        arch = (rr >= canal_r) & (rr < canal_r + 6 * s) & (y > cy - 8 * s) & (dz < 0.8 * hh)
        arch |= (np.abs(x) < 4 * s) & (y > cy) & (y < cy + canal_r + 34 * s) & (z < v.z + 0.4 * hh) & (z > v.z - hh)
        reach = 38 * s if v.lumbar else 26 * s
        arch |= (np.abs(x) < reach) & (np.abs(y - cy + 2 * s) < 5 * s) & (dz < 0.45 * hh)
        c.paint(sl, arch, T["cortical_bone"], label)
        c.paint(sl, body < 1, T["cancellous_bone"], label)
        c.paint(sl, (body < 1) & (body > 0.82), T["cortical_bone"], label)
        if i + 1 < len(verts):  # intervertebral disc up to the next body
            nxt = verts[i + 1]
            found_d = c.region((lo[0], lo[1], v.z + hh), (hi[0], hi[1], nxt.z - nxt.half_height))
            if found_d is not None:
                sl_d, sub_d, _ = found_d
                xd, yd, zd = sub_d.axes()
                ycd = p.spine_y_at(zd)
                disc = np.sqrt((xd / rx) ** 2 + ((yd - ycd) / ry) ** 2) < 0.95
                c.paint(sl_d, disc, T["disc"], 0)
    # Spinal canal along the whole column; the cord ends at L1/L2 (conus).
    g = c.grid
    found = c.region((-12 * s, p.spine_y - 10 * s, g.z[0]), (12 * s, p.spine_y + 50 * s, g.z[-1]))
    if found is None:
        return
    sl, sub, _ = found
    x, y, z = sub.axes()
    ry_z = np.where(z > 10 * s, 15 * s, 18 * s)
    cy = p.spine_y_at(z) + ry_z + 10.5 * s
    rr2 = x**2 + (y - cy) ** 2
    c.paint(sl, rr2 < (8.5 * s) ** 2, T["csf"], 0)
    c.paint(sl, (rr2 < (5 * s) ** 2) & (z > -25 * s), T["spinal_cord"], total_id("spinal_cord"))


def paint_ribs(c: Canvas) -> None:
    """Paint ribs 5-12 in the chest wall, descending from the spine to the front, with costal cartilage."""
    p, s, g = c.p, c.p.scale, c.grid
    ring = np.abs(c.r_cavity - (1 - 0.5 * c.rib_band)) < 0.5 * c.rib_band
    ii, jj = np.nonzero(ring)
    if ii.size == 0:
        return
    phi = c.phi[ii, jj]
    side = np.where(g.x[ii] > 0, 1, -1)
    z = g.z[None, :]
    half = 5.5 * s
    for rib in p.ribs:
        sel = (side == rib.side) & (phi > 0.55) & (phi < rib.cartilage_end)
        if not sel.any():
            continue
        zc = rib.z_posterior - rib.drop * (1 - np.cos(phi[sel])) / 2
        hit = np.abs(z - zc[:, None]) < half  # (pixels, nz)
        pi, kk = np.nonzero(hit)
        if pi.size == 0:
            continue
        bone = phi[sel][pi] <= rib.phi_end
        idx_i, idx_j = ii[sel][pi], jj[sel][pi]
        name = f"rib_{'left' if rib.side > 0 else 'right'}_{rib.number}"
        c.tissue[idx_i[bone], idx_j[bone], kk[bone]] = T["cortical_bone"]
        c.labels[idx_i[bone], idx_j[bone], kk[bone]] = total_id(name)
        c.tissue[idx_i[~bone], idx_j[~bone], kk[~bone]] = T["cartilage"]
        c.labels[idx_i[~bone], idx_j[~bone], kk[~bone]] = total_id("costal_cartilages")
