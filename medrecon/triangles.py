"""Triangle meshes as two plain arrays, and their placement in world millimetres.

:class:`TriangleMesh` is the one mesh type of medrecon: the surfaces, the
meshing steps, the reports and the file writers all take and give it. It holds
vertex positions and triangles, nothing else. medrecon's own algorithms
(smoothing, checks, reports, file writers) read only these two arrays, so a run
from a label map to mesh files does not import trimesh, whose package import
(scipy.optimize, networkx, scipy.ndimage, ...) costs about 0.4 s of start-up.
Where a trimesh algorithm is needed (repair, splitting into pieces, pictures),
:meth:`TriangleMesh.to_trimesh` converts on demand and
:meth:`TriangleMesh.from_trimesh` converts back.

:meth:`TriangleMesh.transformed` places a mesh by an affine as
:meth:`trimesh.Trimesh.apply_transform` does (and is tested against it): a
reflection (negative determinant, as LPS/RAS affines often are) reverses the
triangle winding, so outward triangles stay outward.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import trimesh


@dataclass(frozen=True, eq=False)
class TriangleMesh:
    """A triangle mesh as plain arrays (not to be modified in place).

    The arrays stay writeable because the C extensions medrecon hands them to
    (fast-simplification, manifold3d) reject read-only buffers; every medrecon
    function returns a new mesh instead of changing one.

    Attributes
    ----------
    vertices : (V, 3) ndarray of float64
        Positions in mm.
    faces : (F, 3) ndarray of int64
        Vertex indices of each triangle, counter-clockwise seen from outside.
    """

    vertices: np.ndarray
    faces: np.ndarray

    def __post_init__(self) -> None:
        vertices = np.asarray(self.vertices, dtype=np.float64)
        faces = np.asarray(self.faces, dtype=np.int64)
        if vertices.ndim != 2 or vertices.shape[1] != 3:
            raise ValueError(f"vertices must be a (V, 3) array, got shape {vertices.shape}")
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"faces must be a (F, 3) array, got shape {faces.shape}")
        object.__setattr__(self, "vertices", vertices)
        object.__setattr__(self, "faces", faces)

    @classmethod
    def from_trimesh(cls, mesh: trimesh.Trimesh) -> TriangleMesh:
        """Return the arrays of a :class:`trimesh.Trimesh` (views, not copies)."""
        return cls(np.asarray(mesh.vertices), np.asarray(mesh.faces))

    def to_trimesh(self) -> trimesh.Trimesh:
        """Return the same mesh as a :class:`trimesh.Trimesh` (own arrays, not processed)."""
        import trimesh

        return trimesh.Trimesh(self.vertices.copy(), self.faces.copy(), process=False)

    def transformed(self, affine: np.ndarray) -> TriangleMesh:
        """Move the mesh by a (4, 4) affine; reverse the winding if the affine is a reflection.

        Parameters
        ----------
        affine : (4, 4) array_like of float
            E.g. voxel index to LPS mm.

        Returns
        -------
        TriangleMesh
            A new mesh: vertices ``affine @ [x, y, z, 1]``; faces reversed (``[c, b, a]``,
            as trimesh does) when ``det(affine[:3, :3]) < 0``.
        """
        matrix = np.asarray(affine, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise ValueError(f"affine must be (4, 4), got {matrix.shape}")
        vertices = self.vertices @ matrix[:3, :3].T + matrix[:3, 3]
        faces = self.faces
        if np.linalg.det(matrix[:3, :3]) < 0.0:
            faces = np.ascontiguousarray(faces[:, ::-1])
        return TriangleMesh(vertices, faces)

    @classmethod
    def concatenate(cls, meshes: Iterable[TriangleMesh]) -> TriangleMesh:
        """One mesh holding all of ``meshes`` (their vertices in order, faces re-indexed).

        Raises
        ------
        ValueError
            If ``meshes`` is empty.
        """
        parts = list(meshes)
        if not parts:
            raise ValueError("no meshes to concatenate")
        offsets = np.cumsum([0] + [len(m.vertices) for m in parts[:-1]])
        return cls(np.vstack([m.vertices for m in parts]),
                   np.vstack([m.faces + n for m, n in zip(parts, offsets, strict=True)]))

    def __repr__(self) -> str:
        return f"TriangleMesh(vertices={len(self.vertices)}, faces={len(self.faces)})"


__all__ = ["TriangleMesh"]
