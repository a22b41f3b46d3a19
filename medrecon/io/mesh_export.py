"""Writing organ meshes (STL, OBJ, PLY, 3MF) and the print report (JSON).

Coordinates are millimetres in the DICOM patient frame, LPS, unless
``frame="RAS"`` is asked for (x and y negated: a rotation by 180 degrees about
z, so the triangle winding stays outward). The frame is written into every
file, the way 3D Slicer marks its STL files: ``SPACE=LPS`` in the STL header,
a comment in OBJ and PLY, model metadata in 3MF; and in the report. Every file
is written atomically (:mod:`medrecon.io.atomic`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medrecon.errors import UnsupportedFormatError
from medrecon.io.atomic import atomic_path, safe_name, write_text
from medrecon.io.formats import MESH_FORMATS, mesh_format_of
from medrecon.surface.arrays import Mesh, MeshArrays, MeshLike, same_kind
from medrecon.volume import LPS_TO_RAS

#: Version of the report.json layout.
SCHEMA_VERSION = 1
FORMATS = tuple(MESH_FORMATS)
FRAMES = ("LPS", "RAS")

_STL_RECORD = np.dtype([("normal", "<f4", (3,)), ("vertices", "<f4", (3, 3)), ("attr", "<u2")])


def check_frame(frame: str) -> str:
    """Validate and normalise a frame name to ``"LPS"`` or ``"RAS"``."""
    f = str(frame).upper()
    if f not in FRAMES:
        raise ValueError(f"frame must be 'LPS' or 'RAS', got {frame!r}")
    return f


def to_frame(mesh: Mesh, frame: str) -> Mesh:
    """Return an LPS mesh in ``frame`` (``"LPS"`` or ``"RAS"``): a new mesh of its kind."""
    out = MeshArrays.of(mesh)
    if check_frame(frame) == "RAS":
        out = out.transformed(LPS_TO_RAS)  # a rotation: winding unchanged
    return same_kind(mesh, out.vertices, out.faces)


def stl_bytes(mesh: MeshLike, *, frame: str) -> bytes:
    """Binary STL of ``mesh`` (already in ``frame``) with header ``SPACE=<frame>``."""
    header = f"SPACE={frame} units=mm medrecon".encode("ascii").ljust(80, b" ")
    tri = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces, dtype=np.int64)]
    records = np.zeros(len(tri), dtype=_STL_RECORD)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    records["normal"] = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    records["vertices"] = tri
    return header + np.uint32(len(tri)).tobytes() + records.tobytes()


def obj_text(mesh: MeshLike, *, frame: str, name: str = "mesh") -> str:
    """Wavefront OBJ text of ``mesh`` with the frame and units in comments."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64) + 1
    lines = [f"# medrecon mesh\n# frame: {frame}\n# units: mm\no {safe_name(name)}\n"]
    lines.append("".join(f"v {x:.9g} {y:.9g} {z:.9g}\n" for x, y, z in v.tolist()))
    lines.append("".join(f"f {a} {b} {c}\n" for a, b, c in f.tolist()))
    return "".join(lines)


def ply_bytes(mesh: MeshLike, *, frame: str) -> bytes:
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
    mesh: MeshLike, path: str | os.PathLike, *, frame: str = "LPS", name: str | None = None
) -> Path:
    """Write one LPS-mm mesh to ``path`` (format from the suffix), atomically.

    Parameters
    ----------
    mesh : trimesh.Trimesh or MeshArrays
        Vertices in LPS millimetres.
    path : path-like
        ``.stl`` (binary), ``.obj``, ``.ply`` (binary) or ``.3mf``.
    frame : {"LPS", "RAS"}
        Frame of the written coordinates; it is recorded in the file.
    name : str, optional
        Object name stored in OBJ and 3MF (default: the file stem).

    Returns
    -------
    Path
        ``path``.
    """
    p = Path(path)
    fmt = mesh_format_of(p)
    frame = check_frame(frame)
    out = to_frame(MeshArrays.of(mesh), frame)
    name = name or p.stem
    if fmt == "3mf":
        from medrecon.io.threemf import write_3mf

        write_3mf({name: out}, p, frame=frame)
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def export_organs(
    organ_meshes: Iterable[Any],
    outdir: str | os.PathLike,
    *,
    fmt: str = "stl",
    frame: str = "LPS",
    extra_report: Mapping[str, Any] | None = None,
    merged: bool = False,
) -> dict[str, Any]:
    """Write one mesh file per organ and ``report.json`` into ``outdir``.

    Parameters
    ----------
    organ_meshes : iterable of medrecon.mesh.OrganMesh
        Meshes in LPS mm with their reports.
    outdir : path-like
        Output folder; meshes go to ``outdir/meshes/<safe name>.<fmt>``.
    fmt : {"stl", "obj", "ply", "3mf"}
        File format.
    frame : {"LPS", "RAS"}
        Coordinate frame of the written files.
    extra_report : mapping, optional
        More top-level report entries (input file, options, timings).
    merged : bool
        Also write every organ into one ``meshes/all_organs.<fmt>`` scene (in
        3MF: one object per organ).

    Returns
    -------
    dict
        The report written to ``outdir/report.json``: ``schema_version``,
        ``frame``, ``units`` ("mm"), ``organs`` (one entry per organ with its
        ``file`` relative to ``outdir``) and ``extra_report``'s entries.
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
    entries = []
    for organ, stem in zip(organs, stems, strict=True):
        rel = f"meshes/{stem}.{fmt}"
        write_mesh(organ.arrays, out / rel, frame=frame, name=organ.name)
        entry = dict(organ.report)
        entry.update(name=organ.name, label=int(organ.label), file=rel)
        if frame == "RAS" and entry.get("bbox_mm") is not None:
            entry["bbox_mm"] = _ras_bbox(organ.arrays)
        entries.append(entry)
    report: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "frame": frame, "units": "mm"}
    if merged:
        scene = f"meshes/{_scene_stem(stems)}.{fmt}"
        _write_scene(organs, stems, out / scene, fmt=fmt, frame=frame)
        report["merged_file"] = scene
    for key, value in (extra_report or {}).items():
        if key not in ("schema_version", "frame", "units", "organs"):
            report[key] = value
    report["organs"] = entries
    report = _jsonable(report)
    write_text(out / "report.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    return report


def _ras_bbox(mesh: MeshArrays) -> list[list[float]]:
    ras = to_frame(mesh, "RAS").vertices
    return [ras.min(axis=0).tolist(), ras.max(axis=0).tolist()]


def _scene_stem(stems: list[str]) -> str:
    stem = "all_organs"
    while stem in stems:
        stem = "_" + stem
    return stem


def _write_scene(organs: list[Any], stems: list[str], path: Path, *, fmt: str, frame: str) -> None:
    if fmt == "3mf":
        from medrecon.io.threemf import write_3mf

        write_3mf({o.name: to_frame(o.arrays, frame) for o in organs}, path, frame=frame)
        return
    offsets = np.cumsum([0] + [len(o.arrays.vertices) for o in organs[:-1]])
    scene = MeshArrays(np.vstack([o.arrays.vertices for o in organs]),
                       np.vstack([o.arrays.faces + n for o, n in zip(organs, offsets, strict=True)]))
    write_mesh(scene, path, frame=frame, name="all_organs")
