"""Printable organ meshes: repair, smoothing, decimation, hollowing, reports (LPS mm)."""

from medrecon.mesh.organs import (
    MeshOptions,
    OrganMesh,
    build_organ_meshes,
    filter_components,
    merge_scene,
)
from medrecon.mesh.repair import MeshCheck, check, repair

__all__ = [
    "MeshCheck",
    "MeshOptions",
    "OrganMesh",
    "build_organ_meshes",
    "check",
    "filter_components",
    "merge_scene",
    "repair",
]
