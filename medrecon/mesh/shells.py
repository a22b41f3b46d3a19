"""Edges and shells of a triangle mesh, and which way each shell must face.

The helpers that checking (:mod:`medrecon.mesh.repair`), the print checks and
the printing helpers share: the edge table of the half-edges, the shells
(faces connected by shared edges), their signed volumes, the sign each must
have by its nesting (+1 for a solid, -1 for a cavity), and
:class:`OutwardShells`, a mesh's faces wound out of the material whatever the
input's winding (e.g. after a reflected affine). Positions are in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from medrecon.mesh.nesting import nesting_depth
from medrecon.triangles import TriangleMesh


def pair_keys(pairs: np.ndarray) -> np.ndarray:
    """One int64 per unordered pair of non-negative ints (rows of an (N, 2) array)."""
    lo = np.minimum(pairs[:, 0], pairs[:, 1]).astype(np.int64)
    hi = np.maximum(pairs[:, 0], pairs[:, 1]).astype(np.int64)
    return lo * (int(hi.max(initial=0)) + 1) + hi


def edge_table(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edge table of the 3F half-edges, from one sort.

    Half-edge ``3 f + k`` of face ``f`` goes from corner ``k`` to corner ``k + 1``.

    Returns
    -------
    edge_of_half : (3F,) ndarray of int64
        Each half-edge's undirected edge id.
    keys : (E,) ndarray of int64
        The unique edge keys (:func:`pair_keys`).
    counts : (E,) ndarray of int64
        Faces on each edge (2 on a closed manifold).
    order : (3F,) ndarray of int64
        The half-edges ordered by edge id.
    """
    half = np.stack([faces, np.roll(faces, -1, axis=1)], axis=2).reshape(-1, 2)
    key = pair_keys(half)
    order = np.argsort(key)
    sorted_key = key[order]
    first = np.empty(len(key), dtype=bool)
    first[:1] = True
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=first[1:])
    inverse = np.empty(len(key), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(key)))
    return inverse, sorted_key[starts], counts, order


def face_shells(faces: np.ndarray, edge_of_half: np.ndarray) -> tuple[int, np.ndarray]:
    """Shells (faces connected by shared edges): their number, and the shell of each face (F,)."""
    n_faces = len(faces)
    face_of_half = np.repeat(np.arange(n_faces), 3)
    graph = sparse.coo_matrix(
        (np.ones(len(face_of_half)), (face_of_half, edge_of_half + n_faces)),
        shape=(n_faces + edge_of_half.max() + 1,) * 2,
    )
    _, comp = connected_components(graph, directed=False)
    labels = np.unique(comp[:n_faces], return_inverse=True)[1].ravel()
    return int(labels.max()) + 1, labels


def signed_volumes(vertices: np.ndarray, faces: np.ndarray, group: np.ndarray, n: int) -> np.ndarray:
    """Signed volume (mm^3) of each of the ``n`` groups of faces (``group``: (F,) ids)."""
    tri = vertices[faces]
    # centre first: the signed-tetrahedra sum is exact but loses digits far from the origin
    tri = tri - vertices.mean(axis=0)
    six_v = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2]))
    return np.bincount(group, weights=six_v, minlength=n) / 6.0


def expected_signs(vertices: np.ndarray, faces: np.ndarray, shell_of_face: np.ndarray, n: int) -> np.ndarray:
    """+1 for shells nested in an even number of others (solids), -1 for cavities."""
    depth = nesting_depth(vertices, faces, shell_of_face, n)
    return np.where(depth % 2 == 0, 1.0, -1.0)


@dataclass(frozen=True, eq=False)
class OutwardShells:
    """A mesh's faces wound outward, the shell of each face and which shells are cavities.

    Attributes
    ----------
    faces : (F, 3) ndarray of int64
        The mesh's faces, each shell turned so that its normals point out of
        the material (into a cavity, for a cavity's shell).
    shell : (F,) ndarray of int64
        Shell of each face.
    cavity : (S,) ndarray of bool
        Shells nested in an odd number of others.
    """

    faces: np.ndarray
    shell: np.ndarray
    cavity: np.ndarray

    @classmethod
    def of(cls, mesh: TriangleMesh) -> OutwardShells:
        """Orient the shells of closed ``mesh`` by signed volume and nesting (``mesh`` is not modified)."""
        vertices = np.asarray(mesh.vertices, dtype=np.float64)
        faces = np.array(mesh.faces, dtype=np.int64)
        if len(faces) == 0:
            return cls(faces, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
        n, shell = face_shells(faces, edge_table(faces)[0])
        expected = expected_signs(vertices, faces, shell, n)
        flip = (np.sign(signed_volumes(vertices, faces, shell, n)) * expected < 0)[shell]
        faces[flip] = faces[flip][:, ::-1]
        return cls(faces, shell, expected < 0)


def weld_coincident(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices at exactly the same place: (unique vertices, index of each input vertex in them).

    The unique vertices come in lexicographic order, like ``np.unique(vertices,
    axis=0, return_inverse=True)``, about ten times faster (one ``lexsort`` of
    floats, not a sort of byte strings).
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    if len(vertices) == 0:
        return vertices.reshape(0, 3), np.zeros(0, dtype=np.int64)
    order = np.lexsort(vertices.T[::-1])
    ordered = vertices[order]
    new = np.empty(len(order), dtype=bool)
    new[0] = True
    np.any(ordered[1:] != ordered[:-1], axis=1, out=new[1:])
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return ordered[new], inverse
