"""Triangle meshes as two plain arrays, and their placement in world millimetres.

:class:`MeshArrays` is what the meshing pipeline passes from step to step:
vertex positions and triangles, nothing else. medrecon's own algorithms
(smoothing, checks, reports, file writers) read only these two arrays, so a run
from a label map to mesh files does not import trimesh, whose package import
(scipy.optimize, networkx, scipy.ndimage, ...) costs about 0.4 s of start-up.
The public functions still take and return :class:`trimesh.Trimesh`;
:meth:`MeshArrays.to_trimesh` converts on demand.

:meth:`MeshArrays.transformed` places a mesh by an affine as
:meth:`trimesh.Trimesh.apply_transform` does (and is tested against it): a
reflection (negative determinant, as LPS/RAS affines often are) reverses the
triangle winding, so outward triangles stay outward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

if TYPE_CHECKING:
    import trimesh


class MeshLike(Protocol):
    """A triangle mesh: :class:`trimesh.Trimesh` or :class:`MeshArrays`."""

    @property
    def vertices(self) -> np.ndarray:
        """(V, 3) positions in mm."""

    @property
    def faces(self) -> np.ndarray:
        """(F, 3) vertex indices per triangle."""


Mesh = TypeVar("Mesh", bound=MeshLike)


@dataclass(frozen=True, eq=False)
class MeshArrays:
    """A triangle mesh as plain arrays (not to be modified in place).

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
    def of(cls, mesh: MeshLike) -> MeshArrays:
        """Return the arrays of ``mesh`` (views, not copies)."""
        if isinstance(mesh, MeshArrays):
            return mesh
        return cls(np.asarray(mesh.vertices), np.asarray(mesh.faces))

    def copy(self) -> MeshArrays:
        """Return a copy with its own arrays."""
        return MeshArrays(self.vertices.copy(), self.faces.copy())

    def to_trimesh(self) -> trimesh.Trimesh:
        """Return the same mesh as a :class:`trimesh.Trimesh` (own arrays, not processed)."""
        import trimesh

        return trimesh.Trimesh(self.vertices.copy(), self.faces.copy(), process=False)

    def transformed(self, affine: np.ndarray) -> MeshArrays:
        """Move the mesh by a (4, 4) affine; reverse the winding if the affine is a reflection.

        Parameters
        ----------
        affine : (4, 4) array_like of float
            E.g. voxel index to LPS mm.

        Returns
        -------
        MeshArrays
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
        return MeshArrays(vertices, faces)


def same_kind(template: Mesh, vertices: np.ndarray, faces: np.ndarray) -> Mesh:
    """Make a mesh from these arrays: MeshArrays if ``template`` is one, else a trimesh.Trimesh."""
    if isinstance(template, MeshArrays):
        return MeshArrays(vertices, faces)  # type: ignore[return-value]
    import trimesh  # already imported when the template is a Trimesh

    return trimesh.Trimesh(vertices, faces, process=False)  # type: ignore[return-value]


def as_trimesh(mesh: MeshLike) -> trimesh.Trimesh:
    """``mesh`` itself if it is a :class:`trimesh.Trimesh`, else a new one from its arrays."""
    if not isinstance(mesh, MeshArrays):
        import trimesh

        if isinstance(mesh, trimesh.Trimesh):
            return mesh
    return MeshArrays.of(mesh).to_trimesh()
