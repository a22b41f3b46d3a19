"""The settings of one reconstruction: where the labels come from and how meshes are made."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from medrecon.io import formats
from medrecon.mesh import MeshOptions

if TYPE_CHECKING:
    from medrecon.sources import LabelSource

METHODS = ("model", "preset", "labels")
MESH_FORMATS = tuple(formats.MESH_FORMATS)
FRAMES = ("LPS", "RAS")

DISCLAIMER = "medrecon is not a medical device; its output is not for diagnosis"


@dataclass(frozen=True)
class ReconstructConfig:
    """How :func:`medrecon.pipeline.reconstruct` turns a study into meshes.

    Attributes
    ----------
    method : {"model", "preset", "labels"}
        Where the labels come from: a segmentation network, HU-threshold
        presets, or an existing segmentation file.
    model : str
        ``"default"``, a checkpoint path, a MONAI bundle, ``"totalsegmentator[:TASK]"``
        or ``"nnunet:FOLDER"`` (method ``"model"``).
    preset : str
        Preset name(s), comma-separated (method ``"preset"``; see ``medrecon presets``).
    labels : str or None
        Segmentation to import (method ``"labels"``): label image, DICOM SEG,
        RTSTRUCT or TotalSegmentator folder.
    names : str or None
        JSON file with the label id -> name table for ``labels``.
    organs : tuple of str
        Organ names or ids to keep; empty keeps every label.
    mesh : MeshOptions
        Smoothing, decimation, clean-up and hollowing of the meshes.
    fmt : {"stl", "obj", "ply", "3mf"}
        Mesh file format.
    frame : {"LPS", "RAS"}
        World frame of the written mesh coordinates (mm).
    merged : bool
        Also write every organ into one ``meshes/all_organs.<fmt>`` scene.
    device : str
        Torch device for the model (``"cpu"``, ``"cuda"``).
    planes : str
        Planes of the 2.5D model (``"auto"``: those it was trained on; ``"axial"``; ``"all"``).
    series : str or None
        DICOM series to load when the input holds several (UID, number or ``"auto"``).
    keep_phi : bool
        Keep patient/study identifiers (UIDs, input paths) in the outputs.
    trust_bundle : bool
        Allow a MONAI bundle's own code to run (only for bundles you trust).
    preview : bool
        Write ``preview.png``.
    fast : bool
        TotalSegmentator's 3 mm variant (``model="totalsegmentator"``).
    force_labels : bool
        Take ``labels`` as a label map even when it looks like an image
        (:func:`medrecon.imagekind.require_labels`).
    force_image : bool
        Segment the input (model or preset) even when it looks like a label map
        (:func:`medrecon.imagekind.require_image`).
    modality : str or None
        The study's modality when its files do not say (``"CT"`` lets a CT-only
        model or preset run on a NIfTI that fails the CT intensity test).
    keep_implausible : bool
        Mesh a model's organs that fail the plausibility checks too (they stay
        ``"plausible": false`` in the report).
    batch_size : int or None
        Slices per forward pass of a medrecon network (None: its default).
    """

    method: str = "model"
    model: str = "default"
    preset: str = "bone"
    labels: str | None = None
    names: str | None = None
    organs: tuple[str, ...] = ()
    mesh: MeshOptions = field(default_factory=MeshOptions)
    fmt: str = "stl"
    frame: str = "LPS"
    merged: bool = False
    device: str = "cpu"
    planes: str = "auto"
    series: str | None = "auto"
    keep_phi: bool = False
    trust_bundle: bool = False
    preview: bool = True
    fast: bool = False
    force_labels: bool = False
    force_image: bool = False
    modality: str | None = None
    keep_implausible: bool = False
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.method == "labels" and not self.labels:
            raise ValueError("method 'labels' needs labels=<segmentation file or folder>")
        if self.fmt.lower() not in MESH_FORMATS:
            raise ValueError(f"fmt must be one of {MESH_FORMATS}, got {self.fmt!r}")
        if self.frame.upper() not in FRAMES:
            raise ValueError(f"frame must be one of {FRAMES}, got {self.frame!r}")
        if not isinstance(self.mesh, MeshOptions):
            raise TypeError(f"mesh must be a MeshOptions, got {type(self.mesh).__name__}")
        organs = (self.organs,) if isinstance(self.organs, str | int) else tuple(self.organs)
        object.__setattr__(self, "organs", tuple(str(o).strip() for o in organs if str(o).strip()))
        object.__setattr__(self, "fmt", self.fmt.lower())
        object.__setattr__(self, "frame", self.frame.upper())
        for name in ("labels", "names"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))

    @classmethod
    def for_preset(cls, preset: str, **kwargs: Any) -> ReconstructConfig:
        """Config for HU-threshold presets, e.g. ``ReconstructConfig.for_preset("bone")``."""
        return cls(method="preset", preset=preset, **kwargs)

    @classmethod
    def for_labels(cls, labels: str | os.PathLike, *, names: str | os.PathLike | None = None,
                   **kwargs: Any) -> ReconstructConfig:
        """Config that meshes an existing segmentation (``names``: id -> name JSON)."""
        return cls(method="labels", labels=os.fspath(labels),
                   names=None if names is None else os.fspath(names), **kwargs)

    def label_source(self) -> LabelSource:
        """Return the label source this config asks for (see :func:`medrecon.sources.resolve_source`)."""
        from medrecon.sources import resolve_source

        chosen = {"model": {"model": self.model}, "preset": {"preset": self.preset},
                  "labels": {"labels": self.labels, "names": self.names}}[self.method]
        engine = ({"fast": self.fast, "organs": self.organs, "batch_size": self.batch_size}
                  if self.method == "model" else {})
        return resolve_source(**chosen, device=self.device, planes=self.planes,
                              trust_bundle=self.trust_bundle, force_labels=self.force_labels, **engine)

    def replace(self, **changes: Any) -> ReconstructConfig:
        """Return a copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self, *, label_source: bool = True) -> dict[str, Any]:
        """JSON-ready settings for the report (paths reduced to file names).

        ``label_source=False`` leaves out the settings of the label source (method,
        model, preset, labels): a run given a label map does not use them.
        """
        out: dict[str, Any] = {}
        if label_source:
            out["method"] = self.method
            if self.method == "model":
                out.update(model=self.model if self.model == "default" else os.path.basename(self.model),
                           device=self.device, planes=self.planes)
            elif self.method == "preset":
                out["preset"] = self.preset
            else:
                out["labels"] = os.path.basename(self.labels or "")
            if self.modality:
                out["modality"] = self.modality
            out["keep_implausible"] = self.keep_implausible
        out.update(organs=list(self.organs), fmt=self.fmt, frame=self.frame, merged=self.merged,
                   mesh=self.mesh.to_dict())
        return out
