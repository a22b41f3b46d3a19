"""Writing organ meshes: STL, OBJ, PLY and 3MF files, nothing else.

Coordinates are millimetres in the DICOM patient frame, LPS, unless
``frame="RAS"`` is asked for (x and y negated: a rotation by 180 degrees about
z, so the triangle winding stays outward). The frame is written into every
file, the way 3D Slicer marks its STL files: ``SPACE=LPS`` in the STL header,
a comment in OBJ and PLY, model metadata in 3MF. A 3MF object carries its
organ's colour from the label vocabulary (:func:`medrecon.labels.organ_colour`);
STL, OBJ and PLY stay plain geometry. Every file is written
atomically (:mod:`medrecon.atomic`). The report that lists the files is
:mod:`medrecon.report`'s, written by the pipeline.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medrecon.atomic import atomic_path, safe_name
from medrecon.errors import UnsupportedFormatError
from medrecon.io.formats import MESH_FORMATS, mesh_format_of
from medrecon.labels import organ_colour
from medrecon.report import FRAMES
from medrecon.triangles import TriangleMesh
from medrecon.volume import LPS_TO_RAS

FORMATS = tuple(MESH_FORMATS)

_STL_RECORD = np.dtype([("normal", "<f4", (3,)), ("vertices", "<f4", (3, 3)), ("attr", "<u2")])


def check_frame(frame: str) -> str:
    """Validate and normalise a frame name to ``"LPS"`` or ``"RAS"``."""
    f = str(frame).upper()
    if f not in FRAMES:
        raise ValueError(f"frame must be 'LPS' or 'RAS', got {frame!r}")
    return f


def to_frame(mesh: TriangleMesh, frame: str) -> TriangleMesh:
    """Return an LPS mesh in ``frame`` (``"LPS"``: ``mesh`` itself; ``"RAS"``: a new mesh)."""
    if check_frame(frame) == "RAS":
        return mesh.transformed(LPS_TO_RAS)  # a rotation: winding unchanged
    return mesh


def stl_bytes(mesh: TriangleMesh, *, frame: str) -> bytes:
    """Binary STL of ``mesh`` (already in ``frame``) with header ``SPACE=<frame>``."""
    header = f"SPACE={frame} units=mm medrecon".encode("ascii").ljust(80, b" ")
    tri = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces, dtype=np.int64)]
    records = np.zeros(len(tri), dtype=_STL_RECORD)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    records["normal"] = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    records["vertices"] = tri
    return header + np.uint32(len(tri)).tobytes() + records.tobytes()


def obj_text(mesh: TriangleMesh, *, frame: str, name: str = "mesh") -> str:
    """Wavefront OBJ text of ``mesh`` with the frame and units in comments."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64) + 1
    lines = [f"# medrecon mesh\n# frame: {frame}\n# units: mm\no {safe_name(name)}\n"]
    lines.append("".join(f"v {x:.9g} {y:.9g} {z:.9g}\n" for x, y, z in v.tolist()))
    lines.append("".join(f"f {a} {b} {c}\n" for a, b, c in f.tolist()))
    return "".join(lines)


def ply_bytes(mesh: TriangleMesh, *, frame: str) -> bytes:
    """Binary little-endian PLY of ``mesh`` with the frame and units in comments."""
    v = np.asarray(mesh.vertices, dtype="<f4")
    f = np.asarray(mesh.faces)
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"comment medrecon mesh frame={frame} units=mm\n"
        f"comment SPACE={frame}\n"
        f"element vertex {len(v)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        f"element face {len(f)}\n"
        "property list uchar int vertex_indices\nend_header\n"
    ).encode("ascii")
    faces = np.zeros(len(f), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    faces["n"] = 3
    faces["v"] = f
    return header + v.tobytes() + faces.tobytes()


def write_mesh(
    mesh: TriangleMesh,
    path: str | os.PathLike,
    *,
    frame: str = "LPS",
    name: str | None = None,
    colour: Sequence[float] | None = None,
) -> Path:
    """Write one LPS-mm mesh to ``path`` (format from the suffix), atomically.

    Parameters
    ----------
    mesh : TriangleMesh
        Vertices in LPS millimetres (a :class:`trimesh.Trimesh` converts with
        :meth:`TriangleMesh.from_trimesh`).
    path : path-like
        ``.stl`` (binary), ``.obj``, ``.ply`` (binary) or ``.3mf``.
    frame : {"LPS", "RAS"}
        Frame of the written coordinates; it is recorded in the file.
    name : str, optional
        Object name stored in OBJ and 3MF (default: the file stem).
    colour : sequence of 3 floats, optional
        RGB in [0, 1] given to the 3MF object (other formats carry no colour).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    TypeError
        If ``mesh`` is not a :class:`~medrecon.triangles.TriangleMesh`.
    """
    if not isinstance(mesh, TriangleMesh):
        raise TypeError(f"mesh must be a medrecon.triangles.TriangleMesh, got {type(mesh).__name__}; "
                        "convert a trimesh with TriangleMesh.from_trimesh(mesh)")
    p = Path(path)
    fmt = mesh_format_of(p)
    frame = check_frame(frame)
    out = to_frame(mesh, frame)
    name = name or p.stem
    if fmt == "3mf":
        from medrecon.io.threemf import write_3mf

        write_3mf({name: out}, p, frame=frame, colours=None if colour is None else {name: colour})
        return p
    with atomic_path(p) as tmp:
        if fmt == "stl":
            tmp.write_bytes(stl_bytes(out, frame=frame))
        elif fmt == "ply":
            tmp.write_bytes(ply_bytes(out, frame=frame))
        else:
            tmp.write_text(obj_text(out, frame=frame, name=name), encoding="utf-8")
    return p


def unique_names(names: Iterable[str]) -> list[str]:
    """Safe, distinct file stems for ``names`` (``liver``, ``liver_2``, ...)."""
    out: list[str] = []
    seen: set[str] = set()
    for name in names:
        stem = safe_name(name)
        candidate, n = stem, 1
        while candidate.lower() in seen:
            n += 1
            candidate = f"{stem}_{n}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


@dataclass(frozen=True)
class MeshFiles:
    """The files :func:`export_organs` wrote, relative to its output folder.

    Attributes
    ----------
    organs : tuple of str
        ``meshes/<stem>.<fmt>`` of each organ, in the order given.
    merged : str or None
        The scene holding every organ, if one was asked for.
    """

    organs: tuple[str, ...]
    merged: str | None = None

    @property
    def all(self) -> set[str]:
        """Every file written."""
        return set(self.organs) | ({self.merged} if self.merged else set())


def export_organs(
    organ_meshes: Iterable[Any],
    outdir: str | os.PathLike,
    *,
    fmt: str = "stl",
    frame: str = "LPS",
    merged: bool = False,
) -> MeshFiles:
    """Write one mesh file per organ into ``outdir/meshes`` (the report is the pipeline's).

    Parameters
    ----------
    organ_meshes : iterable of medrecon.mesh.OrganMesh
        Meshes in LPS mm with their names.
    outdir : path-like
        Output folder; meshes go to ``outdir/meshes/<safe name>.<fmt>``.
    fmt : {"stl", "obj", "ply", "3mf"}
        File format.
    frame : {"LPS", "RAS"}
        Coordinate frame of the written files.
    merged : bool
        Also write every organ into one ``meshes/all_organs.<fmt>`` scene (in
        3MF: one named object per organ, in the organ's colour).

    Returns
    -------
    MeshFiles
        The written files, relative to ``outdir``.
    """
    fmt = str(fmt).lower().lstrip(".")
    if fmt not in FORMATS:
        raise UnsupportedFormatError(f"mesh format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    frame = check_frame(frame)
    organs = list(organ_meshes)
    if not organs:
        raise ValueError("no organ meshes to export")
    out = Path(outdir)
    stems = unique_names(o.name for o in organs)
    files = []
    for organ, stem in zip(organs, stems, strict=True):
        rel = f"meshes/{stem}.{fmt}"
        write_mesh(organ.mesh, out / rel, frame=frame, name=organ.name, colour=_colour(organ))
        files.append(rel)
    scene = None
    if merged:
        scene = f"meshes/{_scene_stem(stems)}.{fmt}"
        _write_scene(organs, out / scene, fmt=fmt, frame=frame)
    return MeshFiles(organs=tuple(files), merged=scene)


def _colour(organ: Any) -> tuple[float, float, float]:
    """Return the organ's colour in the label vocabulary (by name, else by label id)."""
    return organ_colour(organ.name, getattr(organ, "label", None))


def _scene_stem(stems: list[str]) -> str:
    stem = "all_organs"
    while stem in stems:
        stem = "_" + stem
    return stem


def _write_scene(organs: list[Any], path: Path, *, fmt: str, frame: str) -> None:
    if fmt == "3mf":
        from medrecon.io.threemf import write_3mf

        write_3mf({o.name: to_frame(o.mesh, frame) for o in organs}, path, frame=frame,
                  colours={o.name: _colour(o) for o in organs})
        return
    write_mesh(TriangleMesh.concatenate(o.mesh for o in organs), path, frame=frame, name="all_organs")
