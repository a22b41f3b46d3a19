"""medrecon objects <-> napari layer data, with geometry from :mod:`._geometry`.

Builders return napari ``LayerDataTuple``s ``(data, kwargs, layer_type)`` so
that readers, sample data and widgets all place layers the same way; the
``*_from_layer`` functions turn layers back into medrecon objects without
modifying them. No Qt here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medrecon.errors import GeometryError, InputError
from medrecon.imagekind import looks_like_ct
from medrecon.volume import LabelMap, Volume
from napari_plugin._colors import label_colour_dict, organ_colour
from napari_plugin._geometry import (
    AXIS_LABELS,
    DISPLAY_MIRROR,
    data_to_world_matrix,
    from_layer_array,
    layer_affine,
    lps_affine,
    mesh_to_display,
    patient_depth,
    to_layer_array,
)

if TYPE_CHECKING:  # pragma: no cover
    import trimesh
    from napari.layers import Labels, Layer

    from medrecon.mesh import OrganMesh
    from medrecon.triangles import TriangleMesh

#: Key of the medrecon entry in ``layer.metadata``.
META_KEY = "medrecon"

#: CT soft-tissue window (level 40 HU, width 400 HU) as napari contrast limits.
CT_WINDOW = (-160.0, 240.0)


def window_limits(center: float, width: float) -> tuple[float, float]:
    """DICOM window (center, width) -> napari contrast limits (low, high)."""
    return (float(center) - float(width) / 2.0, float(center) + float(width) / 2.0)


def image_layer_data(
    volume: Volume, *, name: str | None = None, window: tuple[float, float] | None = None
) -> tuple:
    """Build a napari Image ``LayerDataTuple`` placed in world millimetres.

    Parameters
    ----------
    volume : Volume
        ``(I, J, K)`` image with its voxel-to-LPS affine.
    name : str, optional
        Layer name; default: the series description or ``"image"``.
    window : (float, float), optional
        Contrast limits (low, high) in the image's units, e.g. the DICOM window
        (:func:`window_limits`); default for a CT: :data:`CT_WINDOW`.

    Returns
    -------
    tuple
        ``(data (K, J, I) view, kwargs, "image")``.
    """
    data = to_layer_array(volume.array)
    kwargs: dict[str, Any] = {
        "name": name or volume.description or "image",
        "affine": layer_affine(volume.affine),
        "units": "mm",
        "axis_labels": AXIS_LABELS,
        "colormap": "gray",
        "metadata": {
            META_KEY: {
                "kind": "image",
                "modality": volume.modality,
                "units": volume.units,
                "series_uid": volume.series_uid,
                "source": volume.source,
            }
        },
    }
    if window is not None:
        kwargs["contrast_limits"] = tuple(float(v) for v in window)
    elif volume.units.upper() == "HU" or (
        not volume.units and looks_like_ct(volume.array, modality=volume.modality)
    ):
        kwargs["contrast_limits"] = CT_WINDOW
    return data, kwargs, "image"


def labels_layer_data(labels: LabelMap, *, name: str | None = None) -> tuple:
    """Build a napari Labels ``LayerDataTuple`` with organ names and colours.

    Names go to the layer's ``features`` table (napari shows the name of the
    label under the cursor) and to ``metadata["medrecon"]["names"]``. Colours
    come from the label vocabulary (:func:`medrecon.labels.organ_colour`): by
    name, or by id for labels without one.

    Returns
    -------
    tuple
        ``(data (K, J, I) view, kwargs, "labels")``.
    """
    from napari.utils.colormaps import DirectLabelColormap

    names = dict(labels.names)
    present = labels.labels
    kwargs: dict[str, Any] = {
        "name": name or "labels",
        "affine": layer_affine(labels.affine),
        "units": "mm",
        "axis_labels": AXIS_LABELS,
        "opacity": 0.5,
        "features": _features(names, present),
        "metadata": {META_KEY: {"kind": "labels", "names": names, "source": labels.source}},
    }
    colours = label_colour_dict(names, present)
    colours[None] = np.array([0.8, 0.8, 0.8, 1.0])  # labels painted later stay visible
    kwargs["colormap"] = DirectLabelColormap(color_dict=colours)
    data = to_layer_array(labels.array)
    if not data.flags.writeable:  # a LabelMap is a read-only view; users paint on the layer
        data = data.copy()
    return data, kwargs, "labels"


def _features(names: Mapping[int, str], present: list[int]) -> Any:
    import pandas as pd

    ids = sorted({0, *present, *names})
    return pd.DataFrame(
        {"index": ids, "name": ["background" if i == 0 else names.get(i, f"label_{i}") for i in ids]}
    )


def surface_layer_data(
    mesh: trimesh.Trimesh,
    *,
    name: str,
    label: int = 0,
    colour: Any = None,
    display: trimesh.Trimesh | None = None,
) -> tuple:
    """Build a napari Surface ``LayerDataTuple`` from a mesh in LPS millimetres.

    The data are mirrored by the layer affine :data:`~._geometry.DISPLAY_MIRROR`
    (so that the unmirrored 3D view lights their outside; world positions are
    unchanged).

    Parameters
    ----------
    mesh : trimesh.Trimesh
        Vertices in LPS mm. Not modified.
    name : str
        Layer name (the organ's name).
    label : int
        Label id, kept in the metadata and used for the default colour.
    colour : (4,) array_like of float, optional
        RGBA in [0, 1]; default: the organ's anatomical colour.
    display : trimesh.Trimesh, optional
        A lighter version of ``mesh`` to draw; ``mesh`` is then kept in
        ``metadata["medrecon"]["full_data"]`` (same coordinates as the layer
        data) and the writers save it.
    """
    vertices, faces = mesh_to_display(mesh if display is None else display)
    rgba = organ_colour(label, name) if colour is None else np.asarray(colour, dtype=float)
    meta: dict[str, Any] = {"kind": "surface", "label": int(label), "frame": "napari-zyx-mirrored-x"}
    if display is not None:
        meta["full_data"] = mesh_to_display(mesh)
    kwargs = {
        "name": name,
        "units": "mm",
        "axis_labels": AXIS_LABELS,
        "affine": np.array(DISPLAY_MIRROR),
        "shading": "smooth",
        "vertex_colors": np.tile(rgba, (len(vertices), 1)),
        "metadata": {META_KEY: meta},
    }
    return (vertices, faces), kwargs, "surface"


def life_size(organ: OrganMesh, mesh: TriangleMesh) -> TriangleMesh:
    """Return ``mesh`` (``organ``'s or a lighter copy) at life size, where the print is scaled or fitted to a bed.

    The viewer draws meshes on the image they were made from; the scale is
    the print's (its files and report), undone about the point it kept in place.
    """
    s = float(organ.report.get("scale", 1.0))
    if s == 1.0 or "scale_centre_mm" not in organ.report:
        return mesh
    from medrecon.mesh.fit import scaled

    return scaled(mesh, 1.0 / s, organ.report["scale_centre_mm"])


def organ_surface_data(organ: OrganMesh, lighter: TriangleMesh | None = None) -> tuple:
    """Return ``organ``'s Surface ``LayerDataTuple`` (:func:`surface_layer_data`), life size.

    ``lighter``: a lighter copy of the organ's mesh to draw instead (its whole
    mesh is then kept for the writers).
    """
    return surface_layer_data(
        life_size(organ, organ.mesh).to_trimesh(), name=organ.name, label=organ.label,
        display=None if lighter is None else life_size(organ, lighter).to_trimesh(),
    )


def names_from_state(state: Mapping[str, Any]) -> dict[int, str]:
    """Label id -> name from a Labels layer state: ``metadata["medrecon"]["names"]``, then ``features``.

    Parameters
    ----------
    state : Mapping
        Holds ``metadata`` and/or ``features`` (a table with ``index`` and ``name``
        columns), as in ``layer.as_layer_data_tuple()[1]``.
    """
    names: dict[int, str] = {}
    metadata = state.get("metadata") or {}
    if isinstance(metadata, Mapping) and isinstance(metadata.get(META_KEY), Mapping):
        names.update({int(k): str(v) for k, v in dict(metadata[META_KEY].get("names", {})).items()})
    features = state.get("features")
    if features is not None and "index" in features and "name" in features:
        for idx, name in zip(features["index"], features["name"], strict=False):
            if int(idx) != 0:
                names.setdefault(int(idx), str(name))
    return names


def layer_names(layer: Layer) -> dict[int, str]:
    """Label id -> name of a Labels layer (see :func:`names_from_state`)."""
    return names_from_state({"metadata": layer.metadata, "features": getattr(layer, "features", None)})


def labelmap_from_layer(layer: Labels) -> LabelMap:
    """Copy a Labels layer into a :class:`LabelMap` in LPS millimetres (the layer is untouched).

    The affine is the layer's complete data-to-world transform (scale,
    translate, rotate, shear and affine), so a layer moved or rescaled in
    napari is saved where napari shows it.

    Raises
    ------
    GeometryError
        If the layer is not 3D.
    InputError
        If the layer is multiscale.
    """
    if getattr(layer, "multiscale", False):
        raise InputError(f"layer {layer.name!r} is multiscale; medrecon needs a single 3D array")
    # a copy: the user may keep painting while a job runs on this label map
    array = np.array(from_layer_array(layer.data))
    affine = lps_affine(data_to_world_matrix(layer))
    meta = layer.metadata.get(META_KEY, {}) if isinstance(layer.metadata, Mapping) else {}
    return LabelMap(
        array=array, affine=affine, names=layer_names(layer), source=str(meta.get("source", ""))
    )


def volume_from_layer(layer: Layer) -> Volume:
    """View an Image layer as a :class:`Volume` in LPS millimetres (the layer is untouched).

    Raises
    ------
    GeometryError
        If the layer is not a single-channel 3D image.
    """
    if getattr(layer, "multiscale", False):
        raise InputError(f"layer {layer.name!r} is multiscale; medrecon needs a single 3D array")
    if getattr(layer, "rgb", False):
        raise GeometryError(f"layer {layer.name!r} is an RGB image; medrecon needs a grey-level volume")
    array = from_layer_array(layer.data)
    meta = layer.metadata.get(META_KEY, {}) if isinstance(layer.metadata, Mapping) else {}
    return Volume(
        array=array,
        affine=lps_affine(data_to_world_matrix(layer)),
        modality=str(meta.get("modality", "")),
        units=str(meta.get("units", "")),
        series_uid=str(meta.get("series_uid", "")),
        source=str(meta.get("source", "")),
        description=layer.name,
    )


def show_reconstruction(
    viewer,
    labels: LabelMap | None,
    organ_meshes: Sequence[OrganMesh],
    *,
    name: str = "organs",
    surfaces: Sequence[tuple] | None = None,
) -> list:
    """Add (or update) one Labels layer and one Surface layer per organ in ``viewer``.

    Runs :func:`reconstruction_steps` to the end (the widgets run it a step at a
    time so that the viewer stays responsive).

    Returns
    -------
    list of napari layers
        The Labels layer (``None`` if ``labels`` is ``None``) then the surfaces.
    """
    first, *rest = reconstruction_steps(viewer, labels, organ_meshes, name=name, surfaces=surfaces)
    return [first, *(layer for layer in rest if layer is not None)]


def reconstruction_steps(
    viewer,
    labels: LabelMap | None,
    organ_meshes: Sequence[OrganMesh],
    *,
    name: str = "organs",
    surfaces: Sequence[tuple] | None = None,
) -> Iterator[Any]:
    """Add (or update) the results of a reconstruction, one layer per step.

    The Labels layer ``name`` replaces an earlier one of that name at its place
    in the layer list; the earlier one is removed only once the new one is in,
    so a failure leaves the viewer as it was. Surface layers made earlier for
    the same label map (same ``name``) and organ are replaced at their place, so
    re-meshing does not pile up layers. The Labels layer is hidden in 3D and
    the surfaces in 2D, where their contours on the slice are drawn
    (:mod:`napari_plugin._view`).

    The surfaces go in hidden (:func:`~._view.hold`) and are shown once all
    are in, a few per step (:func:`~._view.release`): napari redraws the
    whole scene after every change, so adding them visible costs each
    addition a frame of everything added so far (on software OpenGL, 0.1 s
    and more with 40 organs), where a hidden one costs its own addition only.

    Parameters
    ----------
    viewer : napari.Viewer
    labels : LabelMap or None
        Segmentation with names, shown as the Labels layer ``name``; ``None``
        when the surfaces belong to an existing Labels layer ``name``.
    organ_meshes : sequence of medrecon.mesh.OrganMesh
        Meshes in LPS mm; each becomes the Surface layer ``"<organ name>"``. They
        are kept, whole, in the Labels layer's ``metadata["medrecon"]["organ_meshes"]``.
    name : str
        Name of the Labels layer, also recorded in the surfaces' metadata.
    surfaces : sequence of tuple, optional
        Per organ, its Surface ``LayerDataTuple`` made beforehand by
        :func:`organ_surface_data` (in a worker thread, with a lighter copy to
        draw where the mesh is large); default: made here, whole.

    Yields
    ------
    napari layer or None
        The Labels layer (``None`` if ``labels`` is ``None``), then each
        surface as it is added, then ``None`` for each surface shown.
    """
    from napari.layers import Labels, Surface

    from napari_plugin._view import attach, hold, manage, release

    sync = attach(viewer)
    layer = None
    if labels is not None:
        data, kwargs, _ = labels_layer_data(labels, name=name)
        layer = Labels(data, **kwargs)
        _keep_views(viewer.layers[name] if name in viewer.layers else None, layer)
    elif name in viewer.layers:
        layer = viewer.layers[name]
    if layer is not None:
        # the Mesh and export widget shows and exports these without rebuilding them
        layer.metadata.setdefault(META_KEY, {})["organ_meshes"] = list(organ_meshes)
        if organ_meshes:
            manage(layer, "labels", viewer.dims.ndisplay)
    if labels is not None:
        replace_layer(viewer, name, layer, activate=False)
    yield layer if labels is not None else None
    added: list = []
    try:
        prepared = surfaces if surfaces is not None else [organ_surface_data(om) for om in organ_meshes]
        for om, ((verts, faces), kwargs, _) in zip(organ_meshes, prepared, strict=True):
            kwargs["metadata"][META_KEY].update(source_labels=name, report=om.report)
            existing = next(
                (
                    old for old in viewer.layers
                    if isinstance(old, Surface)
                    and old.metadata.get(META_KEY, {}).get("source_labels") == name
                    and old.metadata.get(META_KEY, {}).get("label") == om.label
                ),
                None,
            )
            surface = Surface((verts, faces), **kwargs)
            _keep_views(existing, surface)
            manage(surface, "surface", viewer.dims.ndisplay)
            hold(surface)
            if existing is not None:
                # replace, not edit: vertex count and colours change together
                insert_layer(viewer, viewer.layers.index(existing), surface, activate=False)
                viewer.layers.remove(existing)
                surface.name = om.name  # napari renamed it while both were in
            else:
                insert_layer(viewer, len(viewer.layers), surface, activate=False)
            added.append(surface)
            yield surface
        while added:
            surface = added.pop(0)
            if surface in viewer.layers:
                release(surface, viewer.dims.ndisplay)  # the view may have changed since it went in
            yield None
    finally:
        # stopped early (Cancel, a failed step): what went in is shown, not left hidden for good
        for surface in added:
            if surface in viewer.layers:
                release(surface, viewer.dims.ndisplay)
    sync.update_contours()
    if labels is not None and layer in viewer.layers:
        viewer.layers.selection.active = layer  # the new segmentation, ready to edit


def _keep_views(old, new) -> None:
    """Carry the per-view visibility the user chose for ``old`` over to its replacement ``new``."""
    views = old.metadata.get(META_KEY, {}).get("visible_in") if old is not None else None
    if isinstance(views, dict):
        new.metadata.setdefault(META_KEY, {})["visible_in"] = dict(views)


def insert_layer(viewer, index: int, layer, *, activate: bool = True) -> None:
    """Insert ``layer`` in the viewer's layer list at ``index``; ``activate=False`` leaves the selection.

    napari makes each inserted layer the active one, which builds and shows its
    controls: about a third of the cost of adding a layer, paid for nothing
    when dozens are added in a row.
    """
    from napari_plugin._view import unproxied

    layers = unproxied(viewer.layers)
    previous = getattr(layers, "_activate_on_insert", None)  # napari's own switch (private)
    if activate or previous is None:
        layers.insert(index, layer)
        return
    layers._activate_on_insert = False
    try:
        layers.insert(index, layer)
    finally:
        layers._activate_on_insert = previous


def replace_layer(viewer, name: str, layer, *, activate: bool = True) -> None:
    """Put ``layer`` in place of the viewer's layer ``name`` (or append it), named ``name``.

    The old layer goes only once the new one is in: if adding fails, the viewer
    keeps the old layer, under its name. ``activate``: as in :func:`insert_layer`.
    """
    if name not in viewer.layers:
        insert_layer(viewer, len(viewer.layers), layer, activate=activate)
        return
    old = viewer.layers[name]
    index = viewer.layers.index(old)
    old.name = f"{name} (replaced)"
    try:
        insert_layer(viewer, index, layer, activate=activate)
    except Exception:
        old.name = name
        raise
    viewer.layers.remove(old)
    layer.name = name


def show_as_plane(layer: Layer, *, world_axis: int = 0) -> None:
    """Draw an Image layer in 3D as one slice plane through its centre, so meshes stay visible.

    Parameters
    ----------
    layer : napari.layers.Image
        A 3D image layer; only its display settings change (``depiction`` and ``plane``).
    world_axis : {0, 1, 2}
        The plane is across this napari world axis: 0 axial, 1 coronal, 2 sagittal.
    """
    from napari_plugin._geometry import array_axis_across

    affine = lps_affine(data_to_world_matrix(layer))
    normal = [0.0, 0.0, 0.0]
    normal[2 - array_axis_across(affine, world_axis)] = 1.0  # (i, j, k) axis -> layer (k, j, i) axis
    layer.depiction = "plane"
    layer.plane.position = tuple((np.asarray(layer.data.shape, dtype=float) - 1) / 2)
    layer.plane.normal = tuple(normal)


def use_patient_handedness(viewer) -> None:
    """Make napari's 3D view show the patient, not their mirror image.

    napari's default display axes (depth towards the viewer, vertical down,
    horizontal right) make (z, y, x) a left-handed frame, so the right-handed
    patient frame appears mirrored in 3D: a liver would show on the wrong
    side. The depth direction is chosen so the axes are right-handed whatever
    the vertical and horizontal directions and the dims order
    (:func:`~._geometry.patient_depth`); 2D views do not change (with the
    defaults: anterior up, the patient's left on the screen's right).
    """
    from napari_plugin._view import camera

    cam = camera(viewer)
    _depth, vertical, horizontal = (str(getattr(o, "value", o)) for o in cam.orientation)
    order = tuple(viewer.dims.order)[-3:] if viewer.dims.ndim >= 3 else (0, 1, 2)
    cam.orientation = (patient_depth(order, vertical, horizontal), vertical, horizontal)
