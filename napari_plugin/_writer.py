"""npe2 writers: Surface layers to STL/OBJ/PLY/3MF, Labels layers to NIfTI.

napari hands a writer the layer's data and state (``layer.as_layer_data_tuple()``),
never the layer itself, so nothing here can change what the user sees. Meshes
are written in millimetres in the LPS frame (the frame is recorded in the file
as :func:`medrecon.io.mesh_export.write_mesh` does), after applying the layer's
complete data-to-world transform. Errors are :class:`~medrecon.errors.MedreconError`
subclasses, which napari shows as notifications.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medrecon.errors import UnsupportedFormatError
from medrecon.io.formats import NIFTI, mesh_format_by_name, mesh_suffixes
from medrecon.volume import LabelMap
from napari_plugin._geometry import from_layer_array, lps_affine, surface_to_mesh, transform_matrix
from napari_plugin._layers import META_KEY, names_from_state


def _whole(data: Any, meta: Mapping[str, Any]) -> Any:
    """Return the surface data to write: the whole mesh when the layer draws a lighter copy of it."""
    metadata = meta.get("metadata") or {}
    full = metadata.get(META_KEY, {}).get("full_data") if isinstance(metadata, Mapping) else None
    return full if full is not None else data


def write_surface(path: str, data: Any, meta: Mapping[str, Any]) -> list[str]:
    """Write one Surface layer as a mesh in LPS millimetres.

    Parameters
    ----------
    path : str
        Target file; its suffix (.stl, .obj, .ply, .3mf) picks the format.
    data : tuple
        ``(vertices (V, 3), faces (F, 3)[, values])`` in layer data coordinates.
    meta : Mapping
        The layer state (scale, translate, rotate, shear, affine, ...). A layer
        that draws a decimated copy of a mesh holds the whole mesh in
        ``metadata["medrecon"]["full_data"]``; that is what is written.

    Returns
    -------
    list of str
        The written path.
    """
    from medrecon.io.mesh_export import write_mesh
    from medrecon.triangles import TriangleMesh

    target = Path(path)
    if mesh_format_by_name(target.name) is None:
        raise UnsupportedFormatError(
            f"{target.name}: surfaces are written as {', '.join(mesh_suffixes())}"
        )
    mesh = surface_to_mesh(_whole(data, meta), meta)
    write_mesh(TriangleMesh.from_trimesh(mesh), target, frame="LPS")
    return [str(target)]


def write_surfaces(path: str, layer_data: list[tuple]) -> list[str]:
    """Write several Surface layers into one folder, one mesh file per layer named after it.

    Parameters
    ----------
    path : str
        The folder. A mesh suffix (``organs.obj``) picks the format and is
        dropped from the folder name; the default format is STL.
    layer_data : list of (data, meta, layer_type)
        The layers, as napari passes them.

    Returns
    -------
    list of str
        The written files, in layer order.
    """
    from medrecon.atomic import safe_name
    from medrecon.io.mesh_export import write_mesh
    from medrecon.triangles import TriangleMesh

    target = Path(path)
    fmt = mesh_format_by_name(target.name)
    suffix = fmt.suffixes[0] if fmt else mesh_suffixes()[0]
    folder = target.with_name(target.name[: -len(suffix)]) if fmt else target
    meshes = [(str(meta.get("name", "surface")), surface_to_mesh(_whole(data, meta), meta))
              for data, meta, _ in layer_data]
    written: list[str] = []
    used: set[str] = set()
    for name, mesh in meshes:
        stem = base = safe_name(name, default="surface")
        n = 1
        while stem in used:  # two layers with the same name keep both files
            n += 1
            stem = f"{base}_{n}"
        used.add(stem)
        written.append(str(write_mesh(TriangleMesh.from_trimesh(mesh), folder / f"{stem}{suffix}", frame="LPS", name=name)))
    return written


def write_labels(path: str, data: Any, meta: Mapping[str, Any]) -> list[str]:
    """Write one Labels layer as NIfTI with its voxel-to-world affine and a names sidecar.

    Parameters
    ----------
    path : str
        Target ``.nii`` or ``.nii.gz`` file; ``<stem>.json`` is written beside it.
    data : (K, J, I) array of int
        Layer data (napari order); written as (i, j, k) with the layer's
        complete data-to-world transform as the affine.
    meta : Mapping
        The layer state; names come from ``metadata["medrecon"]["names"]`` or
        the ``features`` table's ``index`` and ``name`` columns.

    Returns
    -------
    list of str
        The NIfTI file and its JSON sidecar.
    """
    from medrecon.io import save
    from medrecon.io.sidecar import sidecar_path

    target = Path(path)
    if not NIFTI.writes(target.name):
        raise UnsupportedFormatError(f"{target.name}: label maps are written as .nii.gz or .nii")
    if meta.get("multiscale"):
        raise UnsupportedFormatError("multiscale Labels layers cannot be written; use a single scale")
    labels = LabelMap(
        array=from_layer_array(data),
        affine=lps_affine(transform_matrix(meta)),
        names=names_from_state(meta),
    )
    save(labels, target)
    return [str(target), str(sidecar_path(target))]
