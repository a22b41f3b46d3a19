"""One study from image to printable organ meshes: :func:`reconstruct`.

load -> labels (network, HU presets or an imported segmentation; or a label
map given as it is) -> organ selection -> plausibility checks -> meshes -> ``labels.nii.gz`` +
``labels.json``, ``meshes/``, ``preview.png`` and ``report.json``. The CLI
(``reconstruct``, ``demo``, ``batch``, ``mesh``), the batch runner and the
napari plugin all call this one function. Everything is in LPS millimetres
until the exporter writes the chosen frame. The run's
:class:`~medrecon.report.Report` collects what each step adds and is written
once, at the end.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medrecon import __version__
from medrecon.errors import ImplausibleSegmentationError, MissingDependencyError
from medrecon.pipeline.config import DISCLAIMER, ReconstructConfig
from medrecon.pipeline.phi import collect_identifiers, contains_identifier, scrub
from medrecon.progress import ProgressFn, report, scaled
from medrecon.report import Report
from medrecon.volume import LabelMap, Volume

if TYPE_CHECKING:
    from medrecon.io.mesh_export import MeshFiles
    from medrecon.mesh import OrganMesh

#: Version of the pipeline's additions to the mesh report schema.
PIPELINE_REPORT_VERSION = 1
#: The one line that says a model found organs but none is plausible.
NO_PLAUSIBLE_ORGAN = "no plausible abdominal organ in this study; is it an abdominal CT?"


@dataclass(frozen=True, eq=False)
class ReconstructResult:
    """What :func:`reconstruct` made.

    Attributes
    ----------
    volume : Volume or None
        The input image, (I, J, K), LPS affine; None when a label map was given.
    labels : LabelMap
        Organ labels on the input grid (only the selected organs, and of a model's
        only those that passed the plausibility checks unless ``keep_implausible``).
    organ_meshes : list of medrecon.mesh.OrganMesh
        One printable mesh per organ, LPS mm.
    report : dict
        The report (also ``report.json`` when written).
    outdir : Path or None
        Output folder, or None for an in-memory run.
    """

    volume: Volume | None
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


def _labels(volume: Volume, config: ReconstructConfig,
            progress: ProgressFn | None) -> tuple[LabelMap, dict, dict[int, float] | None]:
    """Labels from the config's source, its report fields, and the model's confidence per label."""
    source = config.label_source()
    if config.method in ("model", "preset"):
        from medrecon.imagekind import require_image
        from medrecon.sources.plausibility import require_ct, required_modality

        require_image(volume.array, source=volume.source or "the input", modality=volume.modality,
                      force=config.force_image)
        if required_modality(source) == "CT":
            what = "HU presets" if config.method == "preset" else f"CT-only models such as {config.model!r}"
            require_ct(volume, what=what, override=config.modality)
    segment_scored = getattr(source, "segment_scored", None)
    confidence = scored = None
    if segment_scored is not None:  # network sources give their confidence alongside the labels
        scored = segment_scored(volume, progress=progress)
        labels, confidence = scored.labels, dict(scored.confidence)
    else:
        labels = source.segment(volume, progress=progress)
    about = source.describe()
    info: dict[str, Any] = {"label_source": {k: about[k] for k in ("kind", "name", "version")}}
    # the report's earlier keys for each kind of source, kept for its readers
    if about["kind"] == "network":
        info["model"] = {k: v for k, v in about.items() if k != "kind"}
    elif about["kind"] == "engine":
        info["engine"] = {k: v for k, v in about.items() if k != "kind"}
    elif about["kind"] == "preset":
        info["presets"] = about["presets"]
    elif about["kind"] == "imported":
        info["labels_source"] = about["format"]
    if scored is not None and scored.planes:
        # what planes="auto" chose, and the confidences it chose by
        info.setdefault("model", {}).update(planes_used=list(scored.planes))
        if scored.plane_confidence:
            info["model"]["plane_confidence"] = dict(scored.plane_confidence)
    return labels, info, confidence


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


def _series(volume: Volume) -> dict[str, Any] | None:
    """Describe the DICOM series used and why (scrub drops UID and description unless keep_phi)."""
    choice = volume.meta.get("series_choice")
    if not choice:
        return None
    return {"series_number": volume.meta.get("series_number"), "series_uid": volume.series_uid,
            "series_description": volume.description, "modality": volume.modality,
            "chosen_by": choice.get("rule"), "other_series": len(choice.get("others") or ())}


def _safe_names(labels: LabelMap, identifiers: frozenset[str], keep_phi: bool) -> LabelMap:
    if keep_phi or not identifiers:
        return labels
    names = {k: (f"label_{k}" if contains_identifier(v, identifiers) else v) for k, v in labels.names.items()}
    return labels.replace(names=names)


def reconstruct(
    input: str | os.PathLike | Volume | LabelMap,  # noqa: A002 - the public name the contract gives
    outdir: str | os.PathLike | None = None,
    *,
    config: ReconstructConfig | None = None,
    progress: ProgressFn | None = None,
) -> ReconstructResult:
    """Turn one study (or a label map) into printable organ meshes and a report.

    Parameters
    ----------
    input : path-like, Volume or LabelMap
        DICOM folder/file, NIfTI, NRRD or MetaImage, or an already loaded
        volume; or a label map to mesh as it is (``medrecon mesh``, napari's
        Labels layers): then the label source settings of ``config`` are not
        used and there is no image for ``labels.nii.gz``, ``preview.png`` or
        mean HU.
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
        ``outdir``: ``labels.nii.gz`` + ``labels.json`` (not for a label map
        input), ``meshes/<organ>.<fmt>``, ``preview.png`` (if ``config.preview``)
        and ``report.json`` there.

    Raises
    ------
    InputError
        Unreadable input or unknown organ/preset names.
    EmptySegmentationError
        No organ found (or a requested organ is absent).
    ImageKindError
        A label map given as the image, or a study that is not a CT for a CT-only
        model or HU preset (``config.modality`` overrides).
    ImplausibleSegmentationError
        A model found organs but none passed the plausibility checks
        (:mod:`medrecon.sources.plausibility`); ``report.json`` says why.
    """
    if config is None:
        config = ReconstructConfig()
    if not isinstance(config, ReconstructConfig):
        raise TypeError(f"config must be a ReconstructConfig, got {type(config).__name__}")
    given = input if isinstance(input, LabelMap) else None
    timer = _Timer()
    volume = None
    if given is None:
        with timer.stage("load"):
            report(progress, "loading", 0.0)
            volume = _load(input, config, scaled(progress, 0.0, 0.1))
        source = None if isinstance(input, Volume) else input
    else:
        source = given.source or None
    identifiers = frozenset() if config.keep_phi else collect_identifiers(volume, source=source)

    stages = {"model": "segment", "preset": "preset", "labels": "import"}
    stage = stages[config.method] if given is None else "select"
    confidence = None
    with timer.stage(stage):
        if given is None:
            report(progress, stage, 0.1)
            labels, method_info, confidence = _labels(volume, config, scaled(progress, 0.1, 0.5))
            if not labels.same_grid(volume):  # every source should give the input grid; make sure
                labels = labels.resample_like(volume)
        else:
            labels, method_info = given, {}
        labels = select_organs(labels, config.organs)
        labels = _safe_names(labels, identifiers, config.keep_phi)

    kind = method_info["label_source"]["kind"] if given is None else "imported"
    with timer.stage("checks"):
        checks, rejected = _check(labels, volume, kind=kind, confidence=confidence, config=config)
    labels = _without(labels, rejected)
    nothing_plausible = bool(checks) and len(rejected) == len(checks)

    from medrecon.mesh import build_organ_meshes

    organ_meshes = []
    if not nothing_plausible:
        detail = _preset_detail(method_info, config)
        with timer.stage("meshes"):
            start = 0.5 if given is None else 0.0
            organ_meshes = build_organ_meshes(labels, config.mesh, detail_mm=detail,
                                              progress=scaled(progress, start, 0.85))
        # each mesh carries its organ's verdict (napari's table shows it)
        organ_meshes = [replace(om, report={**om.report, **checks[om.label].report_fields()})
                        if om.label in checks else om for om in organ_meshes]
        if detail:
            organ_meshes = [replace(om, report={**om.report, "surface_detail_mm": detail[om.label]})
                            if om.label in detail else om for om in organ_meshes]
    mean_hu: dict[int, float] | None = None
    if volume is not None:
        with timer.stage("statistics"):
            mean_hu = _mean_hu(volume, labels)

    rep = _new_report(config.frame)
    if volume is not None:
        rep.add(method=config.method, **method_info, config=config.to_dict(),
                input=_geometry(volume, keep_phi=config.keep_phi), series=_series(volume))
    else:
        name = os.fspath(source or "") if config.keep_phi else Path(source or "").name
        rep.add(method="labels", config=config.to_dict(label_source=False), input=name,
                options=config.mesh.to_dict())
    out = None if outdir is None else Path(outdir)
    files = None
    if out is not None and not nothing_plausible:
        from medrecon.io.mesh_export import export_organs

        report(progress, "writing", 0.85)
        if given is None:
            from medrecon.io import save

            with timer.stage("write_labels"):
                save(labels, out / "labels.nii.gz")
        if config.preview and volume is None:
            rep.add(preview_skipped="a label map was given: there is no image to draw it over")
        elif config.preview:
            from medrecon.pipeline.preview import render_preview

            with timer.stage("preview"):
                try:
                    render_preview(volume, labels, out / "preview.png",
                                   meshes={o.label: o.mesh for o in organ_meshes},
                                   title=f"medrecon ({config.method}): {len(organ_meshes)} structures")
                except MissingDependencyError as exc:  # the meshes matter more than the picture
                    warnings.warn(f"no preview.png: {exc}", stacklevel=2)
                    rep.add(preview_skipped=str(exc))
        with timer.stage("export"):
            files = export_organs(organ_meshes, out, fmt=config.fmt, frame=config.frame,
                                  merged=config.merged)
            _remove_stale_meshes(out, files.all)
    _add_organs(rep, organ_meshes, files)
    _add_print(rep, fit_bed=config.mesh.fit_bed)
    if mean_hu is not None:
        for entry in rep.organs:
            entry["mean_hu"] = round(mean_hu.get(int(entry["label"]), float("nan")), 2)
    if rejected:
        _add_checks(rep, checks, rejected)
        rep.organs.sort(key=lambda e: int(e["label"]))
    rep.timings_s = {**timer.stages, "total": timer.total()}
    rep = _scrubbed(rep, identifiers, keep_phi=config.keep_phi)
    if out is not None:
        if nothing_plausible:
            _remove_stale_meshes(out, set())
        rep.write(out / "report.json")
    if nothing_plausible:
        raise ImplausibleSegmentationError(
            f"{NO_PLAUSIBLE_ORGAN} (the reasons are in report.json; --keep-implausible meshes them anyway)",
            report=rep.to_dict(),
        )
    report(progress, "done", 1.0)
    return ReconstructResult(volume=volume, labels=labels, organ_meshes=organ_meshes,
                             report=rep.to_dict(), outdir=out)


def export_meshes(
    organ_meshes: Sequence[OrganMesh],
    outdir: str | os.PathLike,
    *,
    fmt: str = "stl",
    frame: str = "LPS",
    merged: bool = False,
    fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write organ meshes made earlier, and their ``report.json``, into ``outdir``.

    The files and the report of :func:`reconstruct`, for meshes already built
    (the napari Mesh and export widget exports the organs it shows this way).

    Parameters
    ----------
    organ_meshes : sequence of OrganMesh
        Meshes in LPS mm with their reports.
    outdir : path-like
        Output folder: ``meshes/<organ>.<fmt>`` and ``report.json``.
    fmt : {"stl", "obj", "ply", "3mf"}
        Mesh file format.
    frame : {"LPS", "RAS"}
        World frame of the written coordinates.
    merged : bool
        Also write every organ into one ``meshes/all_organs.<fmt>`` scene.
    fields : mapping, optional
        Study-wide report fields (where the meshes came from, their options).

    Returns
    -------
    dict
        The report written.
    """
    from medrecon.io.mesh_export import export_organs

    rep = _new_report(frame)
    rep.add(**dict(fields or {}))
    files = export_organs(organ_meshes, outdir, fmt=fmt, frame=frame, merged=merged)
    _add_organs(rep, organ_meshes, files)
    _add_print(rep)
    rep.write(Path(outdir) / "report.json")
    return rep.to_dict()


def _preset_detail(method_info: Mapping[str, Any], config: ReconstructConfig) -> dict[int, float]:
    """Label -> ``detail_mm`` of the HU presets that state one (none when ``iso_spacing`` resamples)."""
    if config.mesh.iso_spacing is not None:
        return {}
    return {int(p["label"]): float(p["detail_mm"]) for p in method_info.get("presets", ())
            if p.get("detail_mm") is not None}


def _new_report(frame: str) -> Report:
    rep = Report(frame=frame)
    rep.add(medrecon_version=__version__, pipeline_report_version=PIPELINE_REPORT_VERSION,
            disclaimer=DISCLAIMER)
    return rep


def _add_organs(rep: Report, organ_meshes: Sequence[OrganMesh], files: MeshFiles | None) -> None:
    """One report entry per organ (with its file when written), and the merged scene's file."""
    if files is not None and files.merged:
        rep.add(merged_file=files.merged)
    for n, organ in enumerate(organ_meshes):
        entry = rep.add_organ(organ.report, name=organ.name, label=organ.label)
        if files is not None:
            entry["file"] = files.organs[n]


def _add_print(rep: Report, *, fit_bed: Sequence[float] | None = None) -> None:
    """Say at which scale the meshes were made, the scene's size and the print orientation.

    ``print``: ``scale`` (1: life size; lengths in the files and the report are
    the model's, anatomy x scale), ``life_size``, ``fit_bed_mm`` (the bed asked
    to fit, or None), ``scene_size_mm`` and ``scene_centre_mm`` (the box of
    every organ, in the report's frame; a scale keeps the centre in place) and
    ``orientation`` (:func:`medrecon.mesh.fit.print_orientation`).
    """
    from medrecon.mesh.fit import print_orientation

    boxes = [np.asarray(e["bbox_mm"], dtype=np.float64) for e in rep.organs if e.get("bbox_mm")]
    if not boxes:
        return
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    scale = float(rep.organs[0].get("scale", 1.0))
    if fit_bed is None:  # meshes made earlier (napari's export) carry the bed they were fitted to
        fit_bed = rep.organs[0].get("fit_bed_mm")
    rep.add(print={"scale": scale, "life_size": scale == 1.0,
                   "fit_bed_mm": None if fit_bed is None else list(fit_bed),
                   "scene_size_mm": (hi - lo).tolist(), "scene_centre_mm": ((lo + hi) / 2).tolist(),
                   "orientation": print_orientation()})


def _check(labels: LabelMap, volume: Volume | None, *, kind: str, confidence: Mapping[int, float] | None,
           config: ReconstructConfig) -> tuple[dict, set[int]]:
    """Plausibility verdicts for ``labels`` and the labels not to mesh (see :mod:`medrecon.sources.plausibility`).

    Model sources of every kind are enforced (failing organs are not meshed unless
    ``config.keep_implausible``), imported labels are warned about, presets are not checked.
    """
    from medrecon.sources.plausibility import check_organs, checks_for

    mode = checks_for(kind)
    if mode == "none" or not np.any(labels.array):
        return {}, set()
    checks = check_organs(labels, volume, confidence=confidence)
    failed = {label for label, c in checks.items() if not c.plausible}
    if failed and mode == "warn":
        warnings.warn("implausible organs in the given labels (meshed all the same, see report.json): "
                      + "; ".join(f"{checks[k].name}: {', '.join(checks[k].reasons)}" for k in sorted(failed)),
                      stacklevel=3)
    if mode == "warn" or config.keep_implausible:
        return checks, set()
    return checks, failed


def _without(labels: LabelMap, rejected: set[int]) -> LabelMap:
    """``labels`` with the ``rejected`` ids set to 0 and left out of the names table."""
    if not rejected:
        return labels
    array = np.asarray(labels.array)
    return labels.replace(array=np.where(np.isin(array, sorted(rejected)), 0, array).astype(array.dtype),
                          names={k: v for k, v in labels.names.items() if k not in rejected})


def _add_checks(rep: Report, checks: Mapping[int, Any], labels: Iterable[int]) -> None:
    """Add an entry with its verdict and no mesh or file for each of ``labels`` (its volume and mean HU).

    ``reconstruct`` adds the organs it rejected this way (meshed organs carry their
    verdict), ``segment_study`` every organ it checked.
    """
    for label in sorted(labels):
        check = checks[label]
        measured = {k: check.measured[k] for k in ("label_volume_ml", "mean_hu") if k in check.measured}
        rep.add_organ(measured, name=check.name, label=label, **check.report_fields())


def _scrubbed(rep: Report, identifiers: frozenset[str], *, keep_phi: bool) -> Report:
    """``rep`` without identifiers (see :func:`~medrecon.pipeline.phi.scrub`)."""
    if keep_phi:
        return rep
    return Report(frame=rep.frame, fields=scrub(rep.fields, identifiers),
                  organs=scrub(rep.organs, identifiers), timings_s=rep.timings_s)


def _remove_stale_meshes(out: Path, written: set[str]) -> None:
    """Delete mesh files an earlier run left in ``out/meshes`` (other organs or format)."""
    from medrecon.io.formats import mesh_format_by_name

    folder = out / "meshes"
    for path in folder.iterdir() if folder.is_dir() else ():
        rel = f"meshes/{path.name}"
        if path.is_file() and mesh_format_by_name(path.name) and rel not in written:
            path.unlink(missing_ok=True)

