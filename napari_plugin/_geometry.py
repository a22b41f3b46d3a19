"""The one place where medrecon's geometry meets napari's.

medrecon arrays are ``(i, j, k)`` with a voxel-to-**LPS** affine ``A`` (mm):
``A @ [i, j, k, 1] = [x, y, z, 1]`` with +x patient Left, +y Posterior,
+z Superior. napari's world is the same patient frame in millimetres, with its
axes in napari's slowest-first order ``(z, y, x)`` = (superior, posterior,
left). Axial 2D views then show anterior up and the patient's left on the
screen's right (the radiological convention).

A layer's data is our array transposed to ``(k, j, i)``; its layer affine maps
``(k, j, i)`` to ``(z, y, x)`` and is ``P @ A @ P``, where ``P`` reverses the
order of the three spatial axes (it is its own inverse). Mesh vertices in LPS
``(x, y, z)`` become napari ``(z, y, x)`` by the same ``P``; ``P`` is a
reflection, so :mod:`trimesh` reverses the triangle winding to keep normals
pointing out of the organ in both frames.

Surface layers made by medrecon hold their vertices mirrored across the
x (left) axis, with the same mirror as their layer affine
(:data:`DISPLAY_MIRROR`): the world positions do not change, but the 3D view,
whose camera is made right-handed so that the patient is not shown mirrored,
then lights the outside of the surfaces (a mirroring camera alone turns
vispy's lit side inwards; reversing the winding does not help, because vispy
derives both the normals and the front face from it).

This module imports napari only for type hints; it has no Qt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medrecon.errors import GeometryError
from medrecon.volume import check_affine

if TYPE_CHECKING:  # pragma: no cover
    import trimesh
    from napari.layers import Layer

#: (4, 4) homogeneous matrix swapping LPS (x, y, z) and napari (z, y, x).
#: It is its own inverse.
AXIS_SWAP = np.array(
    [
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
AXIS_SWAP.flags.writeable = False


#: (4, 4) mirror of napari's x axis: the layer affine of medrecon's Surface layers,
#: whose data are mirrored by it too (see the module docstring). Its own inverse.
DISPLAY_MIRROR = np.diag([1.0, 1.0, -1.0, 1.0])
DISPLAY_MIRROR.flags.writeable = False


#: Labels of napari's world axes (z, y, x): the direction each grows towards, for the
#: axis arrows and the dims sliders.
AXIS_LABELS = ("S", "P", "L")


def patient_depth(order: Sequence[int], vertical: str, horizontal: str) -> str:
    """Return the camera depth direction that shows the patient unmirrored in 3D.

    Parameters
    ----------
    order : sequence of 3 int
        napari's dims order; its three axes go to the screen's depth, vertical
        and horizontal directions.
    vertical : {"up", "down"}
        Where the second of them points on the screen.
    horizontal : {"left", "right"}
        Where the third points.

    Returns
    -------
    {"towards", "away"}
        The depth direction that makes the screen axes a right-handed image of
        the patient's right-handed LPS frame (napari's own default,
        ``("towards", "down", "right")`` with order ``(0, 1, 2)``, mirrors it).
    """
    if sorted(int(a) for a in order) != [0, 1, 2]:
        raise ValueError(f"order must hold the axes 0, 1 and 2, got {tuple(order)}")
    # screen (right, up, towards the viewer) is right-handed; LPS (x, y, z) is napari axes (2, 1, 0)
    screen = np.zeros((3, 3))
    for row, (axis, sign) in enumerate(zip(
        (order[2], order[1], order[0]), (1.0 if horizontal == "right" else -1.0,
                                         1.0 if vertical == "up" else -1.0, 1.0), strict=True,
    )):
        screen[row, 2 - axis] = sign
    return "towards" if np.linalg.det(screen) > 0 else "away"


def layer_affine(affine_lps: Any) -> np.ndarray:
    """Turn a voxel-to-LPS affine into the napari layer affine of the transposed array.

    Parameters
    ----------
    affine_lps : (4, 4) array_like of float
        Maps ``(i, j, k, 1)`` voxel indices to LPS millimetres.

    Returns
    -------
    (4, 4) ndarray of float64
        Maps layer data indices ``(k, j, i, 1)`` to napari world ``(z, y, x, 1)`` in mm.
    """
    return AXIS_SWAP @ check_affine(affine_lps) @ AXIS_SWAP


def lps_affine(layer_matrix: Any) -> np.ndarray:
    """Inverse of :func:`layer_affine`: a napari (k, j, i) -> (z, y, x) matrix to voxel-to-LPS.

    Parameters
    ----------
    layer_matrix : (4, 4) array_like of float
        Layer data indices ``(k, j, i, 1)`` to napari world ``(z, y, x, 1)`` in mm.

    Returns
    -------
    (4, 4) ndarray of float64
        Maps ``(i, j, k, 1)`` of the transposed array to LPS millimetres.
    """
    return check_affine(AXIS_SWAP @ np.asarray(layer_matrix, dtype=np.float64) @ AXIS_SWAP)


def to_layer_array(array: np.ndarray) -> np.ndarray:
    """(I, J, K) medrecon array -> (K, J, I) napari layer data (a view, no copy)."""
    a = np.asarray(array)
    if a.ndim != 3:
        raise GeometryError(f"expected a 3D (i, j, k) array, got shape {a.shape}")
    return a.transpose(2, 1, 0)


def from_layer_array(data: Any) -> np.ndarray:
    """(K, J, I) napari layer data -> (I, J, K) medrecon array (a view, no copy)."""
    a = np.asarray(data)
    if a.ndim != 3:
        raise GeometryError(
            f"medrecon works on 3D layers, got a {a.ndim}D layer of shape {a.shape}; "
            "split extra dimensions (time, channels) into 3D layers first"
        )
    return a.transpose(2, 1, 0)


def transform_matrix(state: Mapping[str, Any]) -> np.ndarray:
    """Compose the data-to-world transform of a 3D napari layer state into a (4, 4) matrix.

    Parameters
    ----------
    state : Mapping
        A layer's state as napari passes it to writers (``layer.as_layer_data_tuple()[1]``):
        ``scale``, ``translate``, ``rotate``, ``shear`` and ``affine``; missing
        entries are the identity.

    Returns
    -------
    (4, 4) ndarray of float64
        Data coordinates to napari world ``(z, y, x)``: napari's
        ``affine @ (rotate * shear * scale + translate)``, composed by napari's
        own transform classes.
    """
    from napari.utils.transforms import Affine, CompositeAffine

    def get(key: str, default: Any) -> Any:
        value = state.get(key)
        return default if value is None else value

    scale = np.asarray(get("scale", np.ones(3)), dtype=np.float64)
    if scale.shape != (3,):
        raise GeometryError(f"medrecon writes 3D layers only; this layer has {scale.size} dimensions")
    affine = get("affine", np.eye(4))
    physical2world = affine if isinstance(affine, Affine) else Affine(affine_matrix=np.asarray(affine))
    data2physical = CompositeAffine(
        scale,
        get("translate", np.zeros(3)),
        rotate=get("rotate", np.eye(3)),
        shear=get("shear", np.zeros(3)),
        ndim=3,
    )
    return np.asarray(physical2world.compose(data2physical).affine_matrix, dtype=np.float64)


def data_to_world_matrix(layer: Layer) -> np.ndarray:
    """Return the full data-to-world transform of a 3D napari layer as a (4, 4) matrix.

    Everything napari applies is included: ``affine``, ``rotate``, ``shear``,
    ``scale`` and ``translate``.
    """
    if layer.ndim != 3:
        raise GeometryError(
            f"layer {layer.name!r} is {layer.ndim}D; medrecon works on 3D layers only"
        )
    return transform_matrix(
        {
            "scale": layer.scale,
            "translate": layer.translate,
            "rotate": layer.rotate,
            "shear": layer.shear,
            "affine": layer.affine,
        }
    )


def mesh_to_layer(mesh: trimesh.Trimesh, *, mirrored: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Convert an LPS mesh to napari Surface data in world ``(z, y, x)``.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        Vertices in LPS mm, faces wound outward. Not modified.
    mirrored : bool
        Data for a Surface layer whose affine is :data:`DISPLAY_MIRROR`: ``x``
        negated, so that napari's lights fall on the outside (see :func:`mesh_to_display`).

    Returns
    -------
    vertices : (V, 3) ndarray of float32
        napari world ``(z, y, x)`` in mm (with ``x`` negated when ``mirrored``).
    faces : (F, 3) ndarray of int32
        Triangles, wound outward in the layer's data coordinates.
    """
    moved = mesh.copy().apply_transform(DISPLAY_MIRROR @ AXIS_SWAP if mirrored else AXIS_SWAP)
    return (
        np.ascontiguousarray(moved.vertices, dtype=np.float32),
        np.ascontiguousarray(moved.faces, dtype=np.int32),
    )


def mesh_to_display(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray]:
    """Convert an LPS mesh to the data of a Surface layer whose affine is :data:`DISPLAY_MIRROR`."""
    return mesh_to_layer(mesh, mirrored=True)


def surface_to_mesh(data: Sequence[Any], state: Mapping[str, Any] | None = None) -> trimesh.Trimesh:
    """Napari Surface data and layer state -> a new mesh in LPS millimetres, for export.

    The layer's whole data-to-world transform is applied (scale, translate,
    rotate, shear, affine: a layer made by a user or another plugin may set
    any of them), then napari ``(z, y, x)`` becomes LPS ``(x, y, z)``. Nothing
    passed in is modified.

    Parameters
    ----------
    data : tuple
        ``(vertices (V, 3) float, faces (F, 3) int[, values])``, layer data coordinates.
    state : Mapping, optional
        The layer state (see :func:`transform_matrix`); default: identity.

    Returns
    -------
    trimesh.Trimesh
        Vertices in LPS mm; faces in the layer's order, reversed when the overall
        transform is a reflection (so normals keep pointing outward).

    Raises
    ------
    GeometryError
        If the surface is not 3D or holds no triangles.
    """
    import trimesh

    vertices, faces = np.asarray(data[0]), np.asarray(data[1])
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise GeometryError(
            f"surface vertices have shape {vertices.shape}; medrecon exports 3D surfaces only"
        )
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise GeometryError(f"surface has no triangles to export (faces of shape {faces.shape})")
    to_lps = AXIS_SWAP @ transform_matrix(state or {})
    mesh = trimesh.Trimesh(
        vertices=np.array(vertices, dtype=np.float64),
        faces=np.array(faces, dtype=np.int64),
        process=False,
    )
    return mesh.apply_transform(to_lps)


def world_to_lps(position: Sequence[float]) -> np.ndarray:
    """Turn a napari world point (z, y, x) in mm, e.g. a mouse event's ``position``, into LPS (x, y, z) mm.

    Extra leading dimensions (time, channels) are dropped.
    """
    point = np.asarray(position, dtype=np.float64)[-3:]
    if point.shape != (3,):
        raise GeometryError(f"expected a 3D world point (z, y, x), got {tuple(position)}")
    return (AXIS_SWAP @ np.append(point, 1.0))[:3]


def array_axis_across(affine_lps: Any, world_axis: int) -> int:
    """Return the (i, j, k) array axis closest to napari world axis ``world_axis``.

    Used to turn the napari view a user draws in (slicing across world axis
    0 = z for axial, 1 = y for coronal, 2 = x for sagittal) into the array axis
    medrecon's slice-based functions take.

    Parameters
    ----------
    affine_lps : (4, 4) array_like
        Voxel-to-LPS affine of the array.
    world_axis : {0, 1, 2}
        napari world axis, in (z, y, x) order.

    Returns
    -------
    int
        0, 1 or 2: the array axis whose direction is most nearly along that world axis.
    """
    if world_axis not in (0, 1, 2):
        raise ValueError(f"world_axis must be 0, 1 or 2 (z, y, x), got {world_axis}")
    a = check_affine(affine_lps)
    direction = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0)
    return int(np.argmax(np.abs(direction[2 - world_axis])))
