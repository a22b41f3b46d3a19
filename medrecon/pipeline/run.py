"""One study from image to printable organ meshes: :func:`reconstruct`.

load -> labels (network, HU presets or an imported segmentation) -> organ
selection -> meshes -> ``labels.nii.gz`` + ``labels.json``, ``meshes/``,
``preview.png`` and ``report.json``. The CLI, the batch runner and the napari
plugin all call this one function. Everything is in LPS millimetres until the
exporter writes the chosen frame.
"""

from __future__ import annotations

import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medrecon import __version__
from medrecon.errors import MissingDependencyError
from medrecon.pipeline.config import DISCLAIMER, ReconstructConfig
from medrecon.pipeline.phi import collect_identifiers, contains_identifier, scrub
from medrecon.progress import ProgressFn, report, scaled
from medrecon.volume import LabelMap, Volume

#: Version of the pipeline's additions to the mesh report schema.
PIPELINE_REPORT_VERSION = 1


@dataclass(frozen=True, eq=False)
class ReconstructResult:
    """What :func:`reconstruct` made.

    Attributes
    ----------
    volume : Volume
        The input image, (I, J, K), LPS affine.
    labels : LabelMap
        Organ labels on the input grid (only the selected organs).
    organ_meshes : list of medrecon.mesh.OrganMesh
        One printable mesh per organ, LPS mm.
    report : dict
        The report (also ``report.json`` when written).
    outdir : Path or None
        Output folder, or None for an in-memory run.
    """

    volume: Volume
    labels: LabelMap
    organ_meshes: list = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    outdir: Path | None = None

    @property
    def mesh_files(self) -> list[Path]:
        """Paths of the written mesh files (empty for an in-memory run)."""
        if self.outdir is None:
            return []
        return [self.outdir / o["file"] for o in self.report.get("organs", []) if o.get("file")]


class _Timer:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round(self.stages.get(name, 0.0) + time.perf_counter() - t0, 3)

    def total(self) -> float:
        return round(time.perf_counter() - self._start, 3)


def _load(source: str | os.PathLike | Volume, config: ReconstructConfig, progress: ProgressFn | None) -> Volume:
    if isinstance(source, Volume):
        return source
    from medrecon.io import detect_format, load

    path = Path(source)
    if detect_format(path) == "dicom":
        from medrecon.io.dicom import load_dicom

        return load_dicom(path, series=config.series, progress=progress)
    return load(path)


def _model_info(config: ReconstructConfig) -> dict[str, Any]:
    from medrecon.models import load_model

    seg = load_model(config.model, trust_bundle=config.trust_bundle)
    card = seg.card
    info: dict[str, Any] = {
        "name": config.model if config.model == "default" else Path(config.model).name,
        "arch": card.net.get("arch"),
        "version": card.training.get("version", card.to_dict().get("card_version")),
        "labels": len(card.channel_ids) - 1,
        "spacing_mm": list(card.spacing_mm),
    }
    if card.metrics:
        info["metrics"] = dict(card.metrics)
    return info


def _labels(volume: Volume, config: ReconstructConfig, progress: ProgressFn | None) -> tuple[LabelMap, dict]:
    if config.method in ("model", "preset"):
        from medrecon.imagekind import require_image

        require_image(volume.array, source=volume.source or "the input", modality=volume.modality,
                      force=config.force_image)
    if config.method == "preset":
        from medrecon.presets import apply_presets, get_preset

        names = [s.strip() for s in config.preset.split(",") if s.strip()]
        info = {"presets": [get_preset(n).to_dict() for n in names]}
        return apply_presets(volume, names, progress=progress), info
    if config.method == "labels":
        from medrecon.labels_import import detect_label_source, import_labels

        info = {"labels_source": detect_label_source(config.labels)}
        labels = import_labels(config.labels, image=volume, names=config.names,
                               force_labels=config.force_labels, progress=progress)
        return labels, info
    from medrecon.models import segment

    info = {"model": _model_info(config)}
    labels = segment(volume, model=config.model, device=config.device, planes=config.planes,
                     trust_bundle=config.trust_bundle, progress=progress)
    return labels, info


def select_organs(labels: LabelMap, organs: tuple[str, ...] | list[str]) -> LabelMap:
    """Keep only ``organs`` (names or ids) in ``labels``; every other voxel becomes 0.

    Raises
    ------
    InputError
        If a name is not in the label table (the message lists the known names).
    EmptySegmentationError
        If the label map is empty or a requested organ has no voxels.
    """
    from medrecon.surface import select_labels

    ids = select_labels(labels, list(organs) if organs else None)
    if not organs:
        return labels
    array = np.asarray(labels.array)
    kept = np.where(np.isin(array, ids), array, 0).astype(array.dtype)
    return labels.replace(array=kept, names={i: labels.name_of(i) for i in ids})


def _mean_hu(volume: Volume, labels: LabelMap) -> dict[int, float]:
    """Mean image value per label, from the labelled voxels only (cheap on a big, mostly empty grid)."""
    lab = np.asarray(labels.array)
    inside = lab != 0
    ids = lab[inside]
    if ids.dtype.kind != "u":
        ids = ids.astype(np.int64)
    vals = np.asarray(volume.array)[inside]
    counts = np.bincount(ids)
    sums = np.bincount(ids, weights=vals, minlength=len(counts))
    return {int(i): float(sums[i] / counts[i]) for i in np.flatnonzero(counts)}


def _geometry(volume: Volume, *, keep_phi: bool) -> dict[str, Any]:
    geo: dict[str, Any] = {
        "shape": list(volume.shape),
        "spacing_mm": [round(float(s), 6) for s in volume.spacing],
        "affine_lps": np.round(volume.affine, 6).tolist(),
        "orientation": volume.orientation,
        "oblique": volume.is_oblique,
        "modality": volume.modality,
        "units": volume.units,
    }
    if keep_phi:
        geo.update(series_uid=volume.series_uid, series_description=volume.description, source=volume.source)
    return geo


def _safe_names(labels: LabelMap, identifiers: frozenset[str], keep_phi: bool) -> LabelMap:
    if keep_phi or not identifiers:
        return labels
    names = {k: (f"label_{k}" if contains_identifier(v, identifiers) else v) for k, v in labels.names.items()}
    return labels.replace(names=names)


def reconstruct(
    input: str | os.PathLike | Volume,  # noqa: A002 - the public name the contract gives
    outdir: str | os.PathLike | None = None,
    *,
    config: ReconstructConfig | None = None,
    progress: ProgressFn | None = None,
) -> ReconstructResult:
    """Turn one study into printable organ meshes and a report.

    Parameters
    ----------
    input : path-like or Volume
        DICOM folder/file, NIfTI, NRRD or MetaImage, or an already loaded volume.
    outdir : path-like, optional
        Output folder. ``None`` keeps everything in memory (notebooks).
    config : ReconstructConfig, optional
        Label source, organs, mesh options, format, frame, privacy (default:
        the default model, all organs, STL in LPS).
    progress : ProgressFn, optional
        Called with (stage, fraction); may raise ``Cancelled``.

    Returns
    -------
    ReconstructResult
        Volume, labels (input grid), organ meshes (LPS mm) and report. With
        ``outdir``: ``labels.nii.gz`` + ``labels.json``, ``meshes/<organ>.<fmt>``,
        ``preview.png`` (if ``config.preview``) and ``report.json`` there.

    Raises
    ------
    InputError
        Unreadable input or unknown organ/preset names.
    EmptySegmentationError
        No organ found (or a requested organ is absent).
    """
    if config is None:
        config = ReconstructConfig()
    if not isinstance(config, ReconstructConfig):
        raise TypeError(f"config must be a ReconstructConfig, got {type(config).__name__}")
    timer = _Timer()
    with timer.stage("load"):
        report(progress, "loading", 0.0)
        volume = _load(input, config, scaled(progress, 0.0, 0.1))
    source = None if isinstance(input, Volume) else input
    identifiers = frozenset() if config.keep_phi else collect_identifiers(volume, source=source)

    stage = {"model": "segment", "preset": "preset", "labels": "import"}[config.method]
    with timer.stage(stage):
        report(progress, stage, 0.1)
        labels, method_info = _labels(volume, config, scaled(progress, 0.1, 0.5))
        if not labels.same_grid(volume):  # every source should give the input grid; make sure
            labels = labels.resample_like(volume)
        labels = select_organs(labels, config.organs)
        labels = _safe_names(labels, identifiers, config.keep_phi)

    from medrecon.mesh import build_organ_meshes

    with timer.stage("meshes"):
        organ_meshes = build_organ_meshes(labels, config.mesh, progress=scaled(progress, 0.5, 0.85))
    with timer.stage("statistics"):
        mean_hu = _mean_hu(volume, labels)

    extra: dict[str, Any] = {
        "medrecon_version": __version__,
        "pipeline_report_version": PIPELINE_REPORT_VERSION,
        "disclaimer": DISCLAIMER,
        "method": config.method,
        **method_info,
        "config": config.to_dict(),
        "input": _geometry(volume, keep_phi=config.keep_phi),
    }
    out = None if outdir is None else Path(outdir)
    if out is not None:
        from medrecon.io import save
        from medrecon.io.atomic import write_text
        from medrecon.io.mesh_export import export_organs

        report(progress, "writing", 0.85)
        with timer.stage("write_labels"):
            save(labels, out / "labels.nii.gz")
        if config.preview:
            from medrecon.pipeline.preview import render_preview

            with timer.stage("preview"):
                try:
                    render_preview(volume, labels, out / "preview.png",
                                   meshes={o.label: o.mesh for o in organ_meshes},
                                   title=f"medrecon ({config.method}): {len(organ_meshes)} structures")
                except MissingDependencyError as exc:  # the meshes matter more than the picture
                    warnings.warn(f"no preview.png: {exc}", stacklevel=2)
                    extra["preview_skipped"] = str(exc)
        with timer.stage("export"):
            rep = export_organs(organ_meshes, out, fmt=config.fmt, frame=config.frame,
                                extra_report=scrub(extra, identifiers, keep_phi=config.keep_phi))
            _remove_stale_meshes(out, {o["file"] for o in rep["organs"]})
    else:
        from medrecon.io.mesh_export import SCHEMA_VERSION, check_frame

        rep = {"schema_version": SCHEMA_VERSION, "frame": check_frame(config.frame), "units": "mm",
               **extra, "organs": [dict(o.report, name=o.name, label=int(o.label)) for o in organ_meshes]}
    for entry in rep["organs"]:
        entry["mean_hu"] = round(mean_hu.get(int(entry["label"]), float("nan")), 2)
    rep["print_ready"] = all(bool(e.get("watertight")) and bool(e.get("manifold")) for e in rep["organs"])
    rep["timings_s"] = {**timer.stages, "total": timer.total()}
    rep = _jsonable(scrub(rep, identifiers, keep_phi=config.keep_phi))
    if out is not None:
        import json

        write_text(out / "report.json", json.dumps(rep, indent=1, allow_nan=False) + "\n")
    report(progress, "done", 1.0)
    return ReconstructResult(volume=volume, labels=labels, organ_meshes=organ_meshes, report=rep, outdir=out)


def _remove_stale_meshes(out: Path, written: set[str]) -> None:
    """Delete mesh files an earlier run left in ``out/meshes`` (other organs or format)."""
    from medrecon.io.formats import mesh_format_by_name

    folder = out / "meshes"
    for path in folder.iterdir() if folder.is_dir() else ():
        rel = f"meshes/{path.name}"
        if path.is_file() and mesh_format_by_name(path.name) and rel not in written:
            path.unlink(missing_ok=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value

