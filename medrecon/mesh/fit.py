"""Fit to the printer: one uniform scale for a whole scene.

A scale is uniform (the same factor on every axis, so shapes and the organs'
relative positions are kept) and applied about one point of the scene, its
bounding-box centre, so the scaled model stays where the anatomy was. A model
scaled by anything but 1 is no longer life size; the report says which scale
was applied. :func:`fit_scale` never enlarges: a scene that already fits the
bed stays 1:1 (enlarge explicitly with a scale above 1).

The bed's X, Y and Z are compared with the extent along the mesh's own x, y
and z axes: the print orientation is the file's frame as written, +z (the
patient's superior direction in LPS and RAS alike) up from the build plate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from medrecon.triangles import TriangleMesh


def _vector(value: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    out = np.asarray(value, dtype=np.float64)
    if out.shape != (3,) or not np.all(np.isfinite(out)):
        raise ValueError(f"{what} must be three finite numbers (x, y, z in mm), got {value!r}")
    return out


def fit_scale(extent: Sequence[float] | np.ndarray, bed: Sequence[float] | np.ndarray) -> float:
    """Largest uniform scale, at most 1, at which a box of ``extent`` fits in ``bed``.

    Parameters
    ----------
    extent : (3,) array_like of float
        Size of the scene along x, y, z in mm (>= 0).
    bed : (3,) array_like of float
        Printable volume along the same axes in mm (> 0).

    Returns
    -------
    float
        ``min(1, min(bed / extent))`` over the axes where the scene has a size.

    Raises
    ------
    ValueError
        If either is not three finite numbers, the extent is negative or the
        bed is not positive.
    """
    size = _vector(extent, "extent")
    room = _vector(bed, "bed")
    if np.any(size < 0):
        raise ValueError(f"extent must be >= 0 mm, got {size.tolist()}")
    if np.any(room <= 0):
        raise ValueError(f"bed must be > 0 mm on every axis, got {room.tolist()}")
    sized = size > 0
    if not np.any(sized):
        return 1.0
    return float(min(1.0, np.min(room[sized] / size[sized])))


def scale_matrix(s: float, about: Sequence[float] | np.ndarray) -> np.ndarray:
    """(4, 4) affine that scales uniformly by ``s`` about the point ``about`` (mm).

    Raises
    ------
    ValueError
        If ``s`` is not a positive finite number (a negative one would mirror
        the anatomy).
    """
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"scale must be a positive number, got {s!r}")
    matrix = np.eye(4)
    matrix[:3, :3] *= s
    matrix[:3, 3] = (1.0 - s) * _vector(about, "about")
    return matrix


def scaled(mesh: TriangleMesh, s: float, about: Sequence[float] | np.ndarray) -> TriangleMesh:
    """``mesh`` scaled uniformly by ``s`` about the point ``about`` (mm); a new mesh.

    Raises
    ------
    ValueError
        If ``s`` is not a positive finite number.
    """
    return mesh.transformed(scale_matrix(s, about))


def print_orientation() -> dict[str, Any]:
    """How the written meshes stand on the build plate (the report's ``orientation``).

    Returns
    -------
    dict
        ``up``: the file axis pointing up from the plate (``"+z"``);
        ``patient_up``: the anatomical direction it is (``"superior"``, in LPS
        and RAS files alike); ``rotation``: the (3, 3) rotation from the file's
        frame to the printer's (identity: the meshes print as written).
    """
    return {"up": "+z", "patient_up": "superior", "rotation": np.eye(3).tolist()}


def scene_bounds(meshes: Iterable[TriangleMesh]) -> np.ndarray:
    """(2, 3) array: the lowest and highest x, y, z over all vertices of ``meshes`` (mm).

    Raises
    ------
    ValueError
        If there are no vertices.
    """
    points = [np.asarray(m.vertices) for m in meshes if len(m.vertices)]
    if not points:
        raise ValueError("no vertices: an empty scene has no size")
    lo = np.min([p.min(axis=0) for p in points], axis=0)
    hi = np.max([p.max(axis=0) for p in points], axis=0)
    return np.stack([lo, hi])


__all__ = ["fit_scale", "print_orientation", "scale_matrix", "scaled", "scene_bounds"]
