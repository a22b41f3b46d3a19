"""What the Reconstruct widget asks medrecon to do, as plain functions (no Qt, no napari).

These only choose which medrecon entry point to call from the
widget's settings; all the work lives in medrecon. They run in a napari
``thread_worker`` and take a ``progress`` callback that may raise
:class:`~medrecon.errors.Cancelled`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from medrecon.errors import InputError
from medrecon.mesh import MeshOptions, OrganMesh
from medrecon.progress import ProgressFn, report
from medrecon.triangles import TriangleMesh
from medrecon.volume import LabelMap, Volume

#: Reconstruction methods offered by the Reconstruct widget.
METHODS = ("model", "checkpoint", "preset", "labels")
#: Most faces a Surface layer draws; larger meshes are shown decimated (exports stay whole).
#: With software OpenGL, a frame of the real head CT's skull takes 0.15 s at 200 000
#: faces and 0.10 s at 100 000 (``bench/bench_napari_ui.py``).
DISPLAY_MAX_FACES = 100_000


@dataclass(frozen=True)
class ReconstructRequest:
    """The Reconstruct widget's settings.

    Attributes
    ----------
    method : {"model", "checkpoint", "preset", "labels"}
        Default segmentation model, a checkpoint or bundle file, an HU preset,
        or an existing label map (meshes only).
    model : str
        ``"default"`` or the checkpoint/bundle path (``method="checkpoint"``).
    preset : str
        HU preset name(s), comma-separated (``method="preset"``).
    organs : tuple of str or int, optional
        Organs to keep (names or label ids); ``None`` keeps all.
    device : str
        Torch device for the model (``"cpu"``, ``"cuda"``).
    mesh : MeshOptions
        How masks become meshes.
    """

    method: str = "model"
    model: str = "default"
    preset: str = "bone"
    organs: tuple[str | int, ...] | None = None
    device: str = "cpu"
    mesh: MeshOptions = field(default_factory=MeshOptions)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")


def reconstruct(
    volume: Volume | None,
    request: ReconstructRequest,
    *,
    labels: LabelMap | None = None,
    progress: ProgressFn | None = None,
) -> tuple[LabelMap, list[OrganMesh]]:
    """Segment ``volume`` (or take ``labels``) and build one mesh per organ.

    Parameters
    ----------
    volume : Volume or None
        The image (CT in HU for presets); may be ``None`` with ``method="labels"``.
    request : ReconstructRequest
        The settings.
    labels : LabelMap, optional
        The label map to mesh when ``request.method == "labels"``.
    progress : ProgressFn, optional
        Called with (stage, fraction); may raise ``Cancelled``.

    Returns
    -------
    labels : LabelMap
        The segmentation on the image grid, with names.
    organ_meshes : list of OrganMesh
        Meshes in LPS mm with their print reports.
    """
    if request.method == "labels":
        if labels is None:
            raise InputError("choose a Labels layer to build meshes from")
        source: Volume | LabelMap = labels
    elif volume is None:
        raise InputError("choose an image layer to reconstruct")
    else:
        source = volume
    result = _pipeline(source, request, progress)
    rejected = [o for o in result.report.get("organs", ()) if o.get("plausible") is False and not o.get("file")]
    if rejected:  # napari shows warnings as notifications
        warnings.warn("not meshed, implausible: " + "; ".join(
            f"{o['name']} ({', '.join(o.get('reasons', ()))})" for o in rejected), stacklevel=2)
    return result.labels, list(result.organ_meshes)


def reconstruct_for_viewer(
    volume: Volume | None,
    request: ReconstructRequest,
    *,
    labels: LabelMap | None = None,
    progress: ProgressFn | None = None,
) -> tuple[LabelMap, list[OrganMesh], list[tuple]]:
    """:func:`reconstruct`, then the Surface layers' data (lighter meshes to draw), all in the worker.

    Returns
    -------
    labels, organ_meshes
        As :func:`reconstruct`.
    surfaces : list of tuple
        Per organ, its Surface ``LayerDataTuple`` (:func:`._layers.surface_layer_data`),
        drawing a decimated copy where the mesh is large.
    """
    from napari_plugin._layers import organ_surface_data

    result, organ_meshes = reconstruct(volume, request, labels=labels, progress=progress)
    display = display_meshes(organ_meshes, progress=progress)
    # the layers' data too, here and not in the GUI thread: a skull's is 0.1 s of numpy
    surfaces = [organ_surface_data(om, lighter) for om, lighter in zip(organ_meshes, display, strict=True)]
    return result, organ_meshes, surfaces


def display_meshes(
    organ_meshes: Sequence[OrganMesh],
    *,
    max_faces: int = DISPLAY_MAX_FACES,
    progress: ProgressFn | None = None,
) -> list[TriangleMesh | None]:
    """Lighter meshes to draw, for the organs over ``max_faces`` faces (``None`` for the others).

    Uses :func:`medrecon.mesh.decimate.lighter_copy`: in pieces, so that the
    viewer stays responsive while it runs, and with no repair, which a copy to
    look at does not need. The organ meshes are not changed: exports keep every face.
    """
    from medrecon.mesh.decimate import lighter_copy

    shown: list[TriangleMesh | None] = []
    for om in organ_meshes:
        lighter = None
        if len(om.mesh.faces) > max_faces:
            report(progress, f"lighter copy of {om.name} to draw", 1.0)
            lighter = lighter_copy(om.mesh, max_faces)
        shown.append(lighter)
    return shown


def _pipeline(source: Volume | LabelMap, request: ReconstructRequest, progress: ProgressFn | None):
    from medrecon.pipeline import ReconstructConfig
    from medrecon.pipeline import reconstruct as run

    organs = tuple(str(o) for o in request.organs or ())
    if request.method == "labels":  # the label map is meshed as it is: no label source settings
        config = ReconstructConfig(organs=organs, mesh=request.mesh, preview=False)
    elif request.method == "preset":
        config = ReconstructConfig.for_preset(
            request.preset, organs=organs, mesh=request.mesh, preview=False
        )
    else:
        model = request.model if request.method == "checkpoint" else "default"
        config = ReconstructConfig(
            method="model", model=model, organs=organs, device=request.device,
            mesh=request.mesh, preview=False,
        )
        # loading takes seconds the first time (then it is cached): say so, here in the worker
        report(progress, "loading the model", 0.0)
        config.label_source().load()
    return run(source, None, config=config, progress=progress)


def parse_organs(text: str) -> tuple[str | int, ...] | None:
    """``"liver, 2, spleen"`` -> ``("liver", 2, "spleen")``; empty text -> ``None`` (all)."""
    items = [t.strip() for t in text.replace(";", ",").split(",") if t.strip()]
    if not items:
        return None
    return tuple(int(t) if t.lstrip("-").isdigit() else t for t in items)
