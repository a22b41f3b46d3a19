"""Keep a napari viewer readable for anatomy: orientation, per-view visibility, slice contours.

:func:`attach` gives a viewer one :class:`ViewSync` (idempotent). It follows the
viewer's dims and layers and keeps:

* **the patient unmirrored and head up**: 3D camera axes right-handed for the
  right-handed patient frame (:func:`napari_plugin._geometry.patient_depth`),
  whatever the dims order; in 2D, superior up whenever the superior axis is on
  screen (coronal and sagittal after a roll or transpose of the dims), anterior
  up in axial; the first 3D view faces the patient (anterior view, head up);
* **what is shown where**: a Labels layer that has surfaces is hidden in 3D
  (its blocks would cover the smooth surfaces) and shown in 2D; so is the
  image the surfaces were made from or drawn over (meshes in 3D, the image in
  2D, as 3D Slicer shows them: with Mesa's software OpenGL the image's 3D
  rendering is a good part of every 3D frame); surfaces are
  shown in 3D and drawn in 2D as their contours on the slice (one Vectors
  layer, :data:`CONTOURS_NAME`); what the user shows or hides in one view is
  remembered for that view;
* **no needless work when results go in**: :func:`hold` keeps a layer hidden
  until :func:`release` (a hidden layer costs the frames drawn meanwhile nothing),
  and :func:`switch_to_3d` hides what 3D hides before napari slices the layers
  for 3D;
* **the status line working in 3D**: napari 0.9 fails (``TypeError: len() of
  unsized object``) when a Labels layer with a ``features`` table becomes active
  in 3D before the mouse moved over the canvas; the cursor then gets the
  camera's view direction.

No Qt here: everything goes through napari's model events.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from napari_plugin._geometry import data_to_world_matrix, patient_depth

#: Key of the medrecon entry in ``layer.metadata`` (as in :mod:`._layers`).
META_KEY = "medrecon"
#: Name of the Vectors layer that draws the surfaces' contours on the 2D slice.
CONTOURS_NAME = "surface contours"
#: Width of the contour lines, mm.
CONTOUR_WIDTH_MM = 1.5
#: Visibility per view (2D, 3D) of each kind of managed layer, until the user changes it.
DEFAULT_VISIBLE = {"image": {2: True, 3: False}, "labels": {2: True, 3: False}, "surface": {2: False, 3: True}, "contours": {2: True, 3: False}}

_SYNCS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def camera(viewer):
    """Return the viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return getattr(scene, "camera", None) or viewer.camera


def _axes(viewer):
    """Return the axes overlay (``viewer.scene.overlays.axes`` since napari 0.9, ``viewer.axes`` before)."""
    overlays = getattr(getattr(viewer, "scene", None), "overlays", None)
    return getattr(overlays, "axes", None) or viewer.axes


def unproxied(obj):
    """Return the napari object behind ``obj`` (napari hands plugins proxies of its objects).

    A plugin widget's viewer is napari's ``PublicOnlyProxy``, which warns (and
    from napari 0.10 may refuse) on every private attribute and makes a new
    proxy on every access. medrecon reaches a few private ones, each with a
    fallback where napari may drop it; it does so on the objects themselves.
    """
    return getattr(obj, "__wrapped__", obj)


def attach(viewer) -> ViewSync:
    """Return the viewer's :class:`ViewSync`, made and connected on first use."""
    viewer = unproxied(viewer)
    sync = _SYNCS.get(viewer)
    if sync is None:
        sync = _SYNCS[viewer] = ViewSync(viewer)
    return sync


def attach_current_viewer() -> None:
    """Attach to napari's current viewer, if there is one (readers have no viewer argument)."""
    try:
        from napari import current_viewer

        viewer = current_viewer()
    except Exception:  # noqa: BLE001 - no Qt or no viewer: nothing to attach to
        return
    if viewer is not None:
        attach(viewer)


def switch_to_3d(viewer) -> Iterator[None]:
    """Switch ``viewer`` to 3D in two steps for a job runner (:meth:`ViewSync.switch_to_3d`)."""
    return attach(viewer).switch_to_3d()


def _meta(layer) -> dict:
    meta = layer.metadata.get(META_KEY) if isinstance(layer.metadata, dict) else None
    return meta if isinstance(meta, dict) else {}


def manage(layer, kind: str, ndisplay: int) -> None:
    """Give ``layer`` per-view visibility of ``kind`` (``image``, ``labels``, ``surface``, ``contours``).

    Sets ``metadata["medrecon"]["visible_in"]`` (view -> shown) from
    :data:`DEFAULT_VISIBLE` where it is not set yet, and the layer's visibility
    for the current view. An ``image`` keeps the visibility it has in the
    current view (it was there before the surfaces).
    """
    meta = layer.metadata.setdefault(META_KEY, {})
    default = dict(DEFAULT_VISIBLE[kind])
    if kind == "image":
        default[ndisplay] = bool(layer.visible)
    shown = meta.setdefault("visible_in", default)
    layer.visible = bool(shown.get(ndisplay, True)) and not meta.get("held", False)


def hold(layer) -> None:
    """Keep a managed ``layer`` hidden in every view until :func:`release`, whatever its ``visible_in``.

    For adding many layers: a hidden layer costs the frames drawn meanwhile
    nothing, so each addition is a short freeze, not one plus a redraw of all
    the layers added so far. A switch between 2D and 3D meanwhile does not
    record the held layer as hidden by the user.
    """
    _meta(layer)["held"] = True
    layer.visible = False


def release(layer, ndisplay: int) -> None:
    """Show a layer held by :func:`hold` as its per-view visibility says for view ``ndisplay``."""
    meta = _meta(layer)
    meta.pop("held", None)
    layer.visible = bool(meta.get("visible_in", {}).get(ndisplay, True))


class ViewSync:
    """Follows one viewer's dims and layers; made by :func:`attach`."""

    def __init__(self, viewer) -> None:
        self._viewer_ref = weakref.ref(viewer)
        self._ndisplay = int(viewer.dims.ndisplay)
        self._faced_patient = False
        self._cache: dict[int, tuple] = {}
        self._busy = False
        self._axes_held = False
        self._want_contours = False
        self._order = tuple(int(a) for a in viewer.dims.order)
        dims = viewer.dims.events
        dims.ndisplay.connect(self._on_ndisplay)
        dims.order.connect(self._on_order)
        dims.point.connect(self.update_contours)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        viewer.layers.events.inserting.connect(self._guard_cursor)
        viewer.layers.selection.events.active.connect(self._guard_cursor)
        if self._ndisplay == 3:
            self._faced_patient = True  # the user's 3D view is theirs: no jump
        self._orient()

    @property
    def viewer(self):
        """The viewer (None once it is gone)."""
        return self._viewer_ref()

    # --- orientation -------------------------------------------------------------
    def _on_order(self, *_args) -> None:
        self._orient()
        self.update_contours()

    def _patient(self) -> bool:
        """Tell whether the viewer shows a 3D study placed by medrecon (patient axes to keep)."""
        viewer = self.viewer
        return viewer is not None and viewer.dims.ndim == 3 and any(
            META_KEY in layer.metadata for layer in viewer.layers if isinstance(layer.metadata, dict)
        )

    def _orient(self) -> None:
        viewer = self.viewer
        if viewer is None or self._busy:
            return
        self._guard_cursor()
        if not self._patient():
            return  # 2D images, time series, other plugins' data: left as napari shows them
        self._busy = True
        try:
            if not self._axes_held:
                _axes(viewer).visible = True  # arrows labelled S, P, L (the layers' axis labels)
            dims, cam = viewer.dims, camera(viewer)
            order = tuple(int(a) for a in dims.order)
            vertical = _value(cam.orientation[1])
            if dims.ndisplay == 2:
                order = _upright(order, self._order)
                if order != tuple(dims.order):
                    dims.order = order
                vertical = "up" if order[1] == 0 else "down"  # head up; axial: anterior up
            self._order = order
            horizontal = _value(cam.orientation[2])
            wanted = (patient_depth(order, vertical, horizontal), vertical, horizontal)
            if tuple(_value(o) for o in cam.orientation) != wanted:
                cam.orientation = wanted
        finally:
            self._busy = False

    def face_patient(self) -> None:
        """Point the 3D camera at the patient's front, head up (an anterior view)."""
        viewer = self.viewer
        if viewer is None or viewer.dims.ndisplay != 3 or not self._patient():
            return
        # napari (z, y, x): looking along +y (anterior -> posterior), +z (superior) up
        camera(viewer).set_view_direction((0.0, 1.0, 0.0), up_direction=(1.0, 0.0, 0.0))
        self._faced_patient = True
        self._guard_cursor()

    # --- 2D / 3D -------------------------------------------------------------------
    def _managed(self) -> list:
        """Return (layer, view -> shown) for the layers with a per-view visibility, held ones left out."""
        viewer = self.viewer
        return [
            (layer, _meta(layer)["visible_in"]) for layer in (viewer.layers if viewer is not None else ())
            if isinstance(_meta(layer).get("visible_in"), dict) and not _meta(layer).get("held", False)
        ]

    def switch_to_3d(self) -> Iterator[None]:
        """Switch to 3D in two steps, each followed by a redraw: the view, then its arrows.

        For a job runner that runs steps between turns of the event loop. The
        layers that 3D hides are hidden before the switch: napari slices every
        visible layer for the new view before any plugin hears of it, so a CT
        would otherwise become a 3D texture (seconds at 512^3) only to be hidden.
        The orientation arrows' shaders are rebuilt for the new camera when they
        are first drawn (0.05-0.12 s on software OpenGL): drawn in the same frame
        as the switch, the two make one freeze of twice the length.
        """
        viewer = self.viewer
        if viewer is None:
            return
        old = int(viewer.dims.ndisplay)
        going = []
        if old != 3:
            for layer, shown in self._managed():
                if layer.visible and not shown.get(3, True):
                    shown[old] = True
                    hold(layer)
                    going.append(layer)
        self._axes_held = True
        _axes(viewer).visible = False
        try:
            viewer.dims.ndisplay = 3
        finally:
            for layer in going:
                release(layer, int(viewer.dims.ndisplay))
        try:
            yield
        finally:
            self._axes_held = False
        self._orient()
        yield

    def _on_ndisplay(self, *_args) -> None:
        viewer = self.viewer
        if viewer is None:
            return
        old, new = self._ndisplay, int(viewer.dims.ndisplay)
        self._ndisplay = new
        if old != new:
            for layer, shown in self._managed():
                shown[old] = bool(layer.visible)
                layer.visible = bool(shown.get(new, True))
        self._orient()
        if new == 3 and not self._faced_patient:
            self.face_patient()
        self.update_contours()

    def _guard_cursor(self, *_args) -> None:
        viewer = self.viewer
        if viewer is None or viewer.dims.ndisplay != 3 or viewer.cursor._view_direction is not None:
            return
        viewer.cursor._view_direction = camera(viewer).calculate_nd_view_direction(
            viewer.dims.ndim, viewer.dims.displayed
        )

    # --- contours ------------------------------------------------------------------
    def _on_inserted(self, event) -> None:
        if _meta(event.value).get("kind") == "surface":
            self._want_contours = True  # a new surface: draw contours (again)
        self._orient()  # the first study placed by medrecon gets the patient's orientation
        self._on_layers()

    def _on_removed(self, event) -> None:
        if getattr(event.value, "name", None) == CONTOURS_NAME:
            self._want_contours = False  # removed by the user (or the viewer closing): leave it out
        self._on_layers()

    def _on_layers(self) -> None:
        viewer = self.viewer
        if viewer is None or self._busy:
            return
        alive = {id(layer) for layer in viewer.layers}
        self._cache = {k: v for k, v in self._cache.items() if k in alive}
        self.update_contours()

    def _surfaces(self) -> list:
        viewer = self.viewer
        return [
            layer for layer in viewer.layers
            if _meta(layer).get("kind") == "surface" and layer.ndim == 3
            and _meta(layer).get("visible_in", {}).get(3, True)
        ]

    def update_contours(self, *_args) -> None:
        """Draw the medrecon surfaces' contours on the current 2D slice (nothing in 3D)."""
        viewer = self.viewer
        if viewer is None or self._busy:
            return
        surfaces = self._surfaces()
        layer = viewer.layers[CONTOURS_NAME] if CONTOURS_NAME in viewer.layers else None
        if not surfaces or not self._want_contours:
            if layer is not None:
                self._busy = True
                try:
                    viewer.layers.remove(layer)
                finally:
                    self._busy = False
            return
        if viewer.dims.ndisplay != 2 or len(viewer.dims.not_displayed) != 1 or viewer.dims.ndim != 3:
            return  # hidden in 3D by its per-view visibility; kept as it was
        axis = int(viewer.dims.not_displayed[0])
        position = float(viewer.dims.point[axis])
        vectors, colours = self._section(surfaces, axis, position)
        self._busy = True
        try:
            if layer is None:
                from napari.layers import Vectors

                layer = Vectors(
                    vectors, name=CONTOURS_NAME, edge_width=CONTOUR_WIDTH_MM, vector_style="line",
                    units="mm", axis_labels=surfaces[0].axis_labels,
                    metadata={META_KEY: {"kind": "contours"}},
                )
                layer.edge_color = colours if len(colours) else "white"
                manage(layer, "contours", viewer.dims.ndisplay)
                viewer.layers.append(layer)
            else:
                layer.data = vectors
                if len(colours):
                    layer.edge_color = colours
        finally:
            self._busy = False

    def _world_mesh(self, layer):
        """Return the surface as a world ``(z, y, x)`` mesh, cached until its data or transform change."""
        import trimesh

        matrix = data_to_world_matrix(layer)
        data = layer.data
        cached = self._cache.get(id(layer))
        if cached is not None and cached[0] is data[0] and cached[1] is data[1] \
                and np.array_equal(cached[2], matrix):
            return cached[3]
        mesh = trimesh.Trimesh(np.asarray(data[0], dtype=np.float64), np.asarray(data[1]), process=False)
        mesh.apply_transform(matrix)
        self._cache[id(layer)] = (data[0], data[1], matrix, mesh)
        return mesh

    def _section(self, surfaces: list, axis: int, position: float) -> tuple[np.ndarray, np.ndarray]:
        """Segments (N, 2, 3) as napari vectors (start, direction) and their colours (N, 4)."""
        from trimesh.intersections import mesh_plane

        normal = np.zeros(3)
        normal[axis] = 1.0
        origin = normal * position
        vectors, colours = [], []
        for layer in surfaces:
            mesh = self._world_mesh(layer)
            lo, hi = mesh.bounds[:, axis] if len(mesh.vertices) else (1.0, 0.0)
            if not lo <= position <= hi:
                continue
            lines = mesh_plane(mesh, normal, origin)
            if len(lines) == 0:
                continue
            lines = np.asarray(lines, dtype=np.float64)
            lines[:, :, axis] = position  # exactly on the slice, where napari shows vectors
            vectors.append(np.stack([lines[:, 0], lines[:, 1] - lines[:, 0]], axis=1))
            rgba = np.asarray(layer.vertex_colors[0] if layer.vertex_colors is not None
                              and len(layer.vertex_colors) else (1.0, 1.0, 1.0, 1.0), dtype=float)
            colours.append(np.tile(rgba, (len(lines), 1)))
        if not vectors:
            return np.zeros((0, 2, 3)), np.zeros((0, 4))
        return np.concatenate(vectors), np.concatenate(colours)


#: The 2D views in the order napari's "roll dims" goes through them, by the axis sliced
#: across: axial (z), sagittal (x), coronal (y).
_NEXT_VIEW = {0: 2, 2: 1, 1: 0}
#: Dims order of each 2D view, by the axis sliced across: superior up in sagittal and
#: coronal (the patient's anterior on the left, their left on the right).
_UPRIGHT = {0: (0, 1, 2), 2: (2, 0, 1), 1: (1, 0, 2)}


def _upright(order: tuple[int, ...], previous: tuple[int, ...]) -> tuple[int, ...]:
    """Return the dims order that shows the view ``order`` asks for with the head up.

    A sagittal or coronal view gets superior on the vertical screen axis. A roll
    of the dims (napari's button) from one view goes to the next one of axial,
    sagittal, coronal, as it would without the turn; an axial view is left as
    the user ordered it.
    """
    if len(previous) == 3 and order == (previous[2], previous[0], previous[1]):
        across = _NEXT_VIEW[previous[0]]  # a roll
    else:
        across = order[0]
    if across == 0:
        return order if order[0] == 0 else _UPRIGHT[0]
    return _UPRIGHT[across]


def _value(option: Any) -> str:
    return str(getattr(option, "value", option))
