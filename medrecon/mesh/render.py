"""Headless pictures of organ meshes (matplotlib, Agg), for reports and the README.

The view is anatomical: seen from the front (anterior), the patient's right on
the left of the picture, head up, with a little elevation; faces are shaded by
a fixed light. Large meshes are decimated for the picture only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import trimesh

from medrecon.atomic import atomic_path
from medrecon.errors import InputError, require
from medrecon.labels import organ_colour

#: Faces per organ drawn at most (the picture, not the files, is simplified).
MAX_FACES = 6000


def _light_colours(mesh: trimesh.Trimesh, rgb: np.ndarray, light: np.ndarray) -> np.ndarray:
    shade = np.clip(mesh.face_normals @ light, 0.0, 1.0)
    colours = np.empty((len(mesh.faces), 4))
    colours[:, :3] = rgb[None, :3] * (0.35 + 0.65 * shade[:, None])
    colours[:, 3] = 1.0
    return colours


def _for_picture(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    if len(mesh.faces) <= MAX_FACES:
        return mesh
    import fast_simplification

    v, f = fast_simplification.simplify(
        np.asarray(mesh.vertices, float), np.asarray(mesh.faces), target_count=MAX_FACES
    )
    return trimesh.Trimesh(v, f, process=False)


def render_meshes(
    meshes: Iterable[tuple[str, trimesh.Trimesh]],
    path: str | os.PathLike,
    *,
    frame: str = "LPS",
    title: str | None = None,
    elevation: float = 12.0,
    azimuth: float = -70.0,
    size_px: int = 1200,
) -> Path:
    """Draw named meshes (mm) into a PNG, atomically.

    Parameters
    ----------
    meshes : iterable of (str, trimesh.Trimesh)
        Names and meshes, coordinates in mm in ``frame``.
    path : path-like
        Output ``.png``.
    frame : {"LPS", "RAS"}
        Frame of the coordinates; RAS meshes are drawn in LPS so that every
        picture shows the same anterior view.
    title : str, optional
        Text above the picture.
    elevation, azimuth : float
        Camera angles in degrees (matplotlib's); azimuth -90 looks from the front.
    size_px : int
        Picture width is 1.4 times this many pixels; the height follows the
        meshes' proportions.
    """
    require("matplotlib", extra="render", feature="mesh pictures")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    items = list(meshes)
    if not items:
        raise InputError("no meshes to draw")
    light = np.array([0.3, -0.8, 0.5])
    light /= np.linalg.norm(light)
    polys, colours, handles = [], [], []
    for name, mesh in items:
        shown = _for_picture(mesh)
        if frame.upper() == "RAS":
            shown = shown.copy()
            shown.apply_transform(np.diag([-1.0, -1.0, 1.0, 1.0]))
        rgb = np.asarray(organ_colour(name))
        polys.append(np.asarray(shown.triangles))
        colours.append(_light_colours(shown, rgb, light))
        handles.append((name, rgb))
    tris = np.concatenate(polys)
    lo, hi = tris.reshape(-1, 3).min(axis=0), tris.reshape(-1, 3).max(axis=0)
    extent = np.maximum(hi - lo, 1e-6)
    # a flat slab of slices needs a wide picture, a tall body a higher one
    height = float(np.clip(0.3 + 0.8 * extent[2] / extent[:2].max(), 0.45, 1.0))
    fig = plt.figure(figsize=(1.4 * size_px / 100, height * size_px / 100), dpi=100)
    ax = fig.add_axes((0.0, 0.0, 0.72, 0.95), projection="3d")
    # one collection: matplotlib depth-sorts faces only within a collection
    ax.add_collection3d(Poly3DCollection(tris, facecolors=np.concatenate(colours), linewidths=0))
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_zlim(lo[2], hi[2])
    ax.set_box_aspect(tuple(extent), zoom=1.25)  # millimetres are millimetres on every axis
    ax.view_init(elev=elevation, azim=azimuth)
    ax.set_xlabel("x (mm, to patient left)")
    ax.set_ylabel("y (mm, to posterior)")
    ax.set_zlabel("z (mm, to head)")
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.pane.set_alpha(0.0)
    if title:
        fig.suptitle(title)
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=c, label=nm) for nm, c in handles], loc="center left",
               bbox_to_anchor=(0.72, 0.5), fontsize=7, frameon=False, ncol=1 + len(handles) // 30)
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.2)
    plt.close(fig)
    return out


def render_export(outdir: str | os.PathLike, path: str | os.PathLike | None = None, **kwargs) -> Path:
    """Draw the meshes an export wrote (``outdir/report.json``) into a PNG.

    ``path`` defaults to ``outdir/meshes.png``; other keywords go to
    :func:`render_meshes`.
    """
    folder = Path(outdir)
    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {folder / 'report.json'}: {exc}; export meshes there first") from exc
    items = [(o["name"], trimesh.load(folder / o["file"], force="mesh")) for o in report["organs"]]
    return render_meshes(items, path or folder / "meshes.png", frame=report["frame"], **kwargs)
