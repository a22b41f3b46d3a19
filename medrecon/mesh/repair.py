"""Checking and repairing triangle meshes for 3D printing.

A printable part is *watertight* (every edge shared by exactly two triangles),
*manifold* (no edge shared by more than two triangles and, around every vertex,
one single fan of triangles), consistently wound with outward normals (positive
signed volume per shell). :func:`check` measures these; :func:`repair` restores
them where they were lost (degenerate or duplicate faces, holes, flipped
triangles) and says honestly when it could not. :func:`check` reads the arrays
only; repairing uses trimesh, imported when a repair is needed.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from medrecon.mesh.shells import edge_table, expected_signs, face_shells, signed_volumes
from medrecon.triangles import TriangleMesh

if TYPE_CHECKING:
    import trimesh


@dataclass(frozen=True)
class MeshCheck:
    """Print-readiness of a mesh.

    Attributes
    ----------
    watertight : bool
        Every edge is shared by exactly two faces (closed, no holes).
    manifold : bool
        No non-manifold edge (more than two faces) and no non-manifold vertex
        (faces around it forming more than one fan).
    winding_consistent : bool
        Neighbouring faces are wound the same way.
    outward : bool
        Normals point out of the solid: shells have a positive signed volume,
        except cavities (shells nested in an odd number of others), negative.
    shells : int
        Connected components (by shared edges).
    boundary_edges, nonmanifold_edges, nonmanifold_vertices : int
        Counts of the defects above.
    """

    watertight: bool
    manifold: bool
    winding_consistent: bool
    outward: bool
    shells: int
    boundary_edges: int
    nonmanifold_edges: int
    nonmanifold_vertices: int

    @property
    def printable(self) -> bool:
        """Watertight, manifold, consistently wound and outward."""
        return self.watertight and self.manifold and self.winding_consistent and self.outward


def nonmanifold_vertex_count(faces: np.ndarray, n_vertices: int, *, _table: tuple | None = None) -> int:
    """Vertices whose incident faces form more than one edge-connected fan."""
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        return 0
    edge_of_half, _, counts, order = edge_table(faces) if _table is None else _table
    n_corner = faces.size
    # half-edge h of face f goes from corner (f, h) to corner (f, h+1)
    corner_a = np.arange(n_corner)
    corner_b = (corner_a // 3) * 3 + (corner_a % 3 + 1) % 3
    # link corners of the same vertex across each edge shared by exactly two faces
    # (which of the two half-edges comes first does not matter: the graph is undirected)
    e_sorted = edge_of_half[order]
    pair = np.flatnonzero((e_sorted[:-1] == e_sorted[1:]) & (counts[e_sorted[:-1]] == 2))
    h1, h2 = order[pair], order[pair + 1]
    vert = faces.ravel()
    a1, b1, a2, b2 = corner_a[h1], corner_b[h1], corner_a[h2], corner_b[h2]
    # consistently wound neighbours traverse the edge in opposite directions
    opposite = vert[a1] == vert[b2]
    rows_a = np.concatenate([a1, b1])
    cols_a = np.concatenate([np.where(opposite, b2, a2), np.where(opposite, a2, b2)])
    graph = sparse.coo_matrix((np.ones(len(rows_a)), (rows_a, cols_a)), shape=(n_corner, n_corner))
    _, comp = connected_components(graph, directed=False)
    # a vertex is non-manifold when its corners lie in more than one fan: compare
    # each corner's fan with one fan picked per vertex (no sort needed)
    fan_of_vertex = np.empty(n_vertices, dtype=comp.dtype)
    fan_of_vertex[vert] = comp
    other_fan = vert[comp != fan_of_vertex[vert]]
    return int(np.count_nonzero(np.bincount(other_fan, minlength=n_vertices)))


def check(mesh: TriangleMesh) -> MeshCheck:
    """Measure watertightness, manifoldness, winding and shells of ``mesh``."""
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if len(faces) == 0:
        return MeshCheck(False, False, False, False, 0, 0, 0, 0)
    table = edge_table(faces)
    edge_of_half, _, counts, _ = table
    boundary = int(np.count_nonzero(counts == 1))
    nm_edges = int(np.count_nonzero(counts > 2))
    nm_verts = nonmanifold_vertex_count(faces, len(mesh.vertices), _table=table)
    # consistent winding: each manifold edge is traversed once in each direction
    half = np.stack([faces, np.roll(faces, -1, axis=1)], axis=2).reshape(-1, 2)
    forward = half[:, 0] < half[:, 1]
    fwd_count = np.bincount(edge_of_half, weights=forward, minlength=len(counts))
    manifold_edge = counts == 2
    consistent = bool(np.all(fwd_count[manifold_edge] == 1))
    n_shells, shell_of_face = face_shells(faces, edge_of_half)
    outward = False
    if consistent and boundary == 0 and nm_edges == 0:
        vertices = np.asarray(mesh.vertices)
        signs = np.sign(signed_volumes(vertices, faces, shell_of_face, n_shells))
        outward = bool(np.all(signs == expected_signs(vertices, faces, shell_of_face, n_shells)))
    return MeshCheck(
        watertight=boundary == 0 and nm_edges == 0,
        manifold=nm_edges == 0 and nm_verts == 0,
        winding_consistent=consistent,
        outward=outward,
        shells=n_shells,
        boundary_edges=boundary,
        nonmanifold_edges=nm_edges,
        nonmanifold_vertices=nm_verts,
    )


def clean(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Merge coincident vertices; drop degenerate, duplicate and unused geometry.

    A pair of faces on the same three vertices wound in opposite directions is a
    "fin" (a zero-thickness double-sided triangle, which decimators leave
    behind): both go. Of faces repeated with the same winding one is kept.
    Returns a new mesh; ``mesh`` is not modified.
    """
    import trimesh

    out = trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), process=False)
    out.merge_vertices(merge_tex=True, merge_norm=True)
    faces = np.asarray(out.faces)
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    v = np.asarray(out.vertices)
    size = float(np.ptp(v, axis=0).max()) if len(v) else 1.0
    keep &= out.area_faces > 1e-12 * max(1.0, size) ** 2
    faces = faces[keep]
    faces = faces[_without_duplicates(faces)]
    out = trimesh.Trimesh(out.vertices, faces, process=False)
    out.remove_unreferenced_vertices()
    return out


def _without_duplicates(faces: np.ndarray) -> np.ndarray:
    """Return the indices of the faces to keep: one per same-winding repeat, none of a fin."""
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        return np.zeros(0, dtype=np.int64)
    n = int(faces.max()) + 1
    tri = np.sort(faces, axis=1)
    key = (tri[:, 0] * n + tri[:, 1]) * n + tri[:, 2]
    # rotate each face to start at its smallest index: equal rows <=> same winding
    start = np.argmin(faces, axis=1)
    rot = faces[np.arange(len(faces))[:, None], (start[:, None] + np.arange(3)) % 3]
    forward = rot[:, 1] < rot[:, 2]
    _, group, counts = np.unique(key, return_inverse=True, return_counts=True)
    group = group.ravel()
    fwd = np.bincount(group, weights=forward, minlength=len(counts))
    fins = (fwd > 0) & (fwd < counts)  # both windings present
    _, first = np.unique(key, return_index=True)
    keep = np.zeros(len(faces), dtype=bool)
    keep[first] = True
    return np.flatnonzero(keep & ~fins[group])


def fill_holes(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Close every boundary loop with a fan around its centroid (new mesh)."""
    import trimesh

    faces = np.asarray(mesh.faces, dtype=np.int64)
    edge_of_half, _, counts, _ = edge_table(faces)
    half = np.stack([faces, np.roll(faces, -1, axis=1)], axis=2).reshape(-1, 2)
    border = half[counts[edge_of_half] == 1]
    if len(border) == 0:
        return mesh.copy()
    nxt: dict[int, list[int]] = {}
    for a, b in border:
        nxt.setdefault(int(a), []).append(int(b))
    vertices = [np.asarray(mesh.vertices)]
    new_faces = [faces]
    n_vert = len(mesh.vertices)
    while nxt:
        start = next(iter(nxt))
        loop = [start]
        cur = start
        while True:
            targets = nxt.get(cur)
            if not targets:
                break
            b = targets.pop()
            if not targets:
                del nxt[cur]
            if b == start:
                break
            loop.append(b)
            cur = b
        if len(loop) < 3:
            continue
        ring = np.asarray(loop)
        centre = np.asarray(mesh.vertices)[ring].mean(axis=0)
        vertices.append(centre[None])
        # the hole's border runs opposite to the missing faces' edges: reverse it
        fan = np.stack([np.roll(ring, -1), ring, np.full(len(ring), n_vert)], axis=1)
        new_faces.append(fan)
        n_vert += 1
    return trimesh.Trimesh(np.vstack(vertices), np.vstack(new_faces), process=False)


def fix_orientation(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Make the winding consistent and every shell face out of the solid (new mesh).

    Shells nested inside an odd number of other shells are cavities: their
    normals point into the cavity (negative signed volume).
    """
    import trimesh

    out = mesh.copy()
    trimesh.repair.fix_winding(out)
    faces = np.asarray(out.faces, dtype=np.int64)
    if len(faces) == 0:
        return out
    edge_of_half, _, _, _ = edge_table(faces)
    n, shell = face_shells(faces, edge_of_half)
    vertices = np.asarray(out.vertices)
    sign = np.sign(signed_volumes(vertices, faces, shell, n))
    flip = (sign * expected_signs(vertices, faces, shell, n))[shell] < 0
    if np.any(flip):
        faces = faces.copy()
        faces[flip] = faces[flip][:, ::-1]
        out = trimesh.Trimesh(out.vertices, faces, process=False)
    return out


def repair(mesh: TriangleMesh) -> tuple[TriangleMesh, MeshCheck]:
    """Clean, fill holes, fix winding; fall back on pymeshfix if still broken.

    Parameters
    ----------
    mesh : TriangleMesh
        Surface in mm.

    Returns
    -------
    mesh : TriangleMesh
        The repaired mesh (a new one).
    check : MeshCheck
        Its state after repair; callers must look at it (repair can fail on
        badly broken input, and then says so here rather than pretending).
    """
    out = fix_orientation(fill_holes(clean(mesh.to_trimesh())))
    state = check(out)
    if not state.printable:
        fixed = _pymeshfix(out)
        if fixed is not None:
            fixed_state = check(fixed)
            if fixed_state.printable:
                out, state = fixed, fixed_state
    return TriangleMesh.from_trimesh(out), state


def _pymeshfix(mesh: trimesh.Trimesh) -> trimesh.Trimesh | None:
    try:
        import pymeshfix
    except ImportError:
        return None
    import trimesh

    shells = mesh.split(only_watertight=False) if len(mesh.faces) else []
    parts = []
    for part in shells:
        with _quiet_stdout():  # MeshFix prints its progress from C++
            v, f = pymeshfix.clean_from_arrays(np.asarray(part.vertices), np.asarray(part.faces))
        if len(f):
            parts.append(trimesh.Trimesh(v, f, process=False))
    if not parts:
        return None
    return fix_orientation(clean(trimesh.util.concatenate(parts)))


@contextlib.contextmanager
def _quiet_stdout():
    """Send file descriptors 1 and 2 to /dev/null (C-level output, e.g. MeshFix) for a moment."""
    import sys

    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
    except (OSError, ValueError, AttributeError):  # no real stdout (embedded): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        for fd, dup in zip((1, 2), saved, strict=True):
            os.dup2(dup, fd)
            os.close(dup)
