"""``preview.png``: three orthogonal slices with the label overlay and a 3D view.

Rendered headless with matplotlib's Agg backend (no display, no OpenGL). The
volume is brought to LPS orientation first so that every study is shown the
same way: axial slices in radiological convention (patient's right on the
image's left, anterior up), coronal and sagittal with superior up, and the 3D
view from the front.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medrecon.atomic import write_bytes
from medrecon.errors import require
from medrecon.labels import organ_colour
from medrecon.volume import LabelMap, Volume

#: Triangles drawn in the 3D panel at most (meshes are simplified beyond this).
MAX_RENDER_FACES = 20_000


def label_colors(labels: Sequence[int],
                 names: Mapping[int, str] | None = None) -> dict[int, tuple[float, float, float]]:
    """RGB colour (0..1) of each label id: :func:`medrecon.labels.organ_colour` of its name."""
    names = names or {}
    return {int(lab): organ_colour(names.get(int(lab)), int(lab)) for lab in labels}


def _window(volume: Volume) -> tuple[float, float]:
    if volume.units.upper() == "HU" or volume.modality.upper() == "CT":
        return -400.0, 600.0  # soft-tissue + bone window
    lo, hi = np.percentile(np.asarray(volume.array)[::4, ::4, ::2], [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def _simplified(mesh, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) vertices and (F, 3) faces of ``mesh`` with about ``budget`` faces at most.

    Vertex clustering on a regular grid (linear time, good enough for a
    thumbnail); the printable mesh itself is not touched.
    """
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces)
    if len(faces) <= budget or len(verts) == 0:
        return verts, faces
    extent = float(np.max(np.ptp(verts, axis=0))) or 1.0
    cell = extent / np.sqrt(budget / 2.0)
    for _ in range(6):
        cells = np.floor((verts - verts.min(0)) / cell).astype(np.int64)
        dims = cells.max(0) + 1
        keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        new_faces = inverse[faces]
        keep = ((new_faces[:, 0] != new_faces[:, 1]) & (new_faces[:, 1] != new_faces[:, 2])
                & (new_faces[:, 0] != new_faces[:, 2]))
        if keep.sum() <= budget:
            break
        cell *= 1.5
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, inverse, verts)
    return sums / counts[:, None], new_faces[keep]


def _draw_meshes(ax, meshes: Mapping[int, object], colors: Mapping[int, tuple]) -> None:
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    total = sum(len(m.faces) for m in meshes.values()) or 1
    light = np.array([0.3, -1.0, 0.6])
    light /= np.linalg.norm(light)
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for lab, mesh in meshes.items():
        budget = max(200, int(MAX_RENDER_FACES * len(mesh.faces) / total))
        verts, faces = _simplified(mesh, budget)
        if len(faces) == 0:
            continue
        tri = verts[faces]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        shade = 0.35 + 0.65 * np.abs(normal @ light)
        rgb = np.clip(np.outer(shade, colors.get(lab, (0.8, 0.8, 0.8))), 0, 1)
        ax.add_collection3d(Poly3DCollection(tri, facecolors=rgb, linewidths=0))
        lo, hi = np.minimum(lo, verts.min(0)), np.maximum(hi, verts.max(0))
    if np.all(np.isfinite(lo)):
        centre, half = (lo + hi) / 2, max(float(np.max(hi - lo)) / 2, 1.0)
        for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre, strict=True):
            setter(c - half, c + half)
        ax.set_box_aspect((1, 1, 1))
    # LPS: looking along +P (from the front), superior up, patient's left on the right
    ax.view_init(elev=10, azim=-90)
    ax.set_axis_off()


def _lps_view(image) -> tuple[np.ndarray, np.ndarray]:
    """Return the array as a view in LPS axis order (i: R->L, j: A->P, k: I->S) and its spacing."""
    import nibabel.orientations as nio

    from medrecon.volume import LPS_LABELS

    transform = nio.ornt_transform(nio.io_orientation(image.affine), nio.axcodes2ornt(("L", "P", "S"), LPS_LABELS))
    view = nio.apply_orientation(np.asarray(image.array), transform)
    spacing = np.empty(3)
    spacing[transform[:, 0].astype(int)] = image.spacing
    return view, spacing


def render_preview(
    volume: Volume,
    labels: LabelMap,
    path: str | os.PathLike,
    *,
    meshes: Mapping[int, object] | None = None,
    title: str = "",
    dpi: int = 80,
) -> Path:
    """Write a PNG with axial, coronal and sagittal slices and a 3D view of ``meshes``.

    Parameters
    ----------
    volume : Volume
        Image, (I, J, K) values (HU for CT).
    labels : LabelMap
        Labels on the volume's grid (resampled by nearest neighbour otherwise).
    path : path-like
        Output ``.png``; written atomically.
    meshes : mapping of int to trimesh.Trimesh, optional
        Label id -> mesh in LPS mm; the fourth panel is left out without them.
    title : str
        Figure title; must not hold patient identifiers.
    dpi : int
        Resolution of the PNG.
    """
    require("matplotlib", extra="render", feature="preview images")
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    if not labels.same_grid(volume):
        labels = labels.resample_like(volume)
    img, (sx, sy, sz) = _lps_view(volume)
    seg, _ = _lps_view(labels)
    ids = labels.labels
    colors = label_colors(ids, labels.names)
    fg = seg > 0
    total = int(np.count_nonzero(fg))
    if total:  # centre of mass from the three projections (no index array of every voxel)
        centre = np.array([
            int(round(float(np.dot(fg.sum(axis=tuple(a for a in range(3) if a != ax)), np.arange(seg.shape[ax])))
                      / total)) for ax in range(3)])
    else:
        centre = np.asarray(seg.shape) // 2
    lo, hi = _window(volume)
    lut = np.zeros((max(ids, default=0) + 1, 4))
    for i in ids:
        lut[i] = (*colors[i], 0.45)
    cmap = ListedColormap(lut)

    panels = [
        ("axial", img[:, :, centre[2]].T.astype(np.float32), seg[:, :, centre[2]].T, sy / sx, "upper"),
        ("coronal", img[:, centre[1], :].T.astype(np.float32), seg[:, centre[1], :].T, sz / sx, "lower"),
        ("sagittal", img[centre[0], :, :].T.astype(np.float32), seg[centre[0], :, :].T, sz / sy, "lower"),
    ]
    ncols = 4 if meshes else 3
    fig = Figure(figsize=(4 * ncols, 4.4), dpi=dpi)
    for n, (name, im, sg, aspect, origin) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, ncols, n)
        ax.imshow(im, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, origin=origin, interpolation="nearest")
        if ids:
            ax.imshow(np.ma.masked_equal(sg, 0), cmap=cmap, vmin=0, vmax=len(lut) - 1, aspect=aspect,
                      origin=origin, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    if meshes:
        ax = fig.add_subplot(1, ncols, ncols, projection="3d")
        _draw_meshes(ax, meshes, colors)
        ax.set_title("3D (anterior view)", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": "medrecon"})
    return write_bytes(path, buf.getvalue())
