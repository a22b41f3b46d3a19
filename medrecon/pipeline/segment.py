"""One study to a checked label map, without meshes: :func:`segment_study` (``medrecon segment``).

The same label source, CT check before running and plausibility checks after it
as :func:`~medrecon.pipeline.run.reconstruct`, from the same functions: a model's
organs that fail the checks are left out of the written label map (unless
``keep_implausible``), and the report lists every organ with its verdict
(``plausible``, ``reasons``, ``cut_at_edge``, ``confidence``) as
``reconstruct``'s report does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medrecon.errors import ImplausibleSegmentationError
from medrecon.pipeline.config import ReconstructConfig
from medrecon.pipeline.phi import collect_identifiers
from medrecon.pipeline.run import (
    NO_PLAUSIBLE_ORGAN,
    _add_checks,
    _check,
    _geometry,
    _labels,
    _load,
    _mean_hu,
    _new_report,
    _safe_names,
    _scrubbed,
    _Timer,
    _without,
    select_organs,
)
from medrecon.progress import ProgressFn, report, scaled
from medrecon.report import Report
from medrecon.volume import LabelMap, Volume

#: Label map settings of a config that a run without meshes reports.
_MESH_SETTINGS = ("fmt", "frame", "merged", "mesh")


@dataclass(frozen=True, eq=False)
class SegmentResult:
    """What :func:`segment_study` made.

    Attributes
    ----------
    volume : Volume
        The input image, (I, J, K), LPS affine.
    labels : LabelMap
        Labels on the input grid: the selected organs, and of a model's only
        those that passed the plausibility checks unless ``keep_implausible``.
    report : dict
        One entry per organ found, each with ``kept`` (in ``labels``) and, where
        checked, its verdict; also written to ``report_path`` when given.
    output : Path or None
        The label map written, or None.
    """

    volume: Volume
    labels: LabelMap
    report: dict[str, Any] = field(default_factory=dict)
    output: Path | None = None


def segment_study(
    input: str | os.PathLike | Volume,  # noqa: A002 - the name reconstruct uses
    output: str | os.PathLike | None = None,
    *,
    config: ReconstructConfig | None = None,
    report_path: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
) -> SegmentResult:
    """Label one study's organs, check them, and write the label map of the plausible ones.

    Parameters
    ----------
    input : path-like or Volume
        DICOM folder or file, NIfTI, NRRD or MetaImage, or a loaded volume.
    output : path-like, optional
        Label map to write (NIfTI or NRRD, with its ``<stem>.json`` names
        sidecar); None keeps it in memory.
    config : ReconstructConfig, optional
        Label source, organs, ``modality`` and ``keep_implausible`` (default: the
        default model); its mesh settings are not used.
    report_path : path-like, optional
        Where to write the report as JSON.
    progress : ProgressFn, optional
        Called with (stage, fraction); may raise ``Cancelled``.

    Returns
    -------
    SegmentResult
        Volume, checked labels on the input grid and the report.

    Raises
    ------
    ImageKindError
        A label map given as the image, or a study that is not a CT for a CT-only
        model (``config.modality`` overrides).
    ImplausibleSegmentationError
        A model found organs but none passed the checks; nothing is written but
        the report, which the error carries as ``report``.
    """
    if config is None:
        config = ReconstructConfig()
    if not isinstance(config, ReconstructConfig):
        raise TypeError(f"config must be a ReconstructConfig, got {type(config).__name__}")
    if config.method == "labels":
        raise ValueError("segment_study runs a model or presets; import labels with reconstruct")
    timer = _Timer()
    with timer.stage("load"):
        report(progress, "loading", 0.0)
        volume = _load(input, config, scaled(progress, 0.0, 0.1))
    identifiers = frozenset() if config.keep_phi else collect_identifiers(
        volume, source=None if isinstance(input, Volume) else input)
    with timer.stage("segment"):
        report(progress, "segment", 0.1)
        labels, info, confidence = _labels(volume, config, scaled(progress, 0.1, 0.9))
        if not labels.same_grid(volume):
            labels = labels.resample_like(volume)
        labels = select_organs(labels, config.organs)
        labels = _safe_names(labels, identifiers, config.keep_phi)
    with timer.stage("checks"):
        checks, rejected = _check(labels, volume, kind=info["label_source"]["kind"],
                                  confidence=confidence, config=config)
    kept = _without(labels, rejected)
    nothing_plausible = bool(checks) and len(rejected) == len(checks)

    rep = _new_report(config.frame)
    settings = {k: v for k, v in config.to_dict().items() if k not in _MESH_SETTINGS}
    rep.add(method=config.method, **info, config=settings,
            input=_geometry(volume, keep_phi=config.keep_phi))
    _add_checks(rep, checks, checks)
    if not checks:  # sources the checks skip (HU presets); checked ones cover every label present
        _add_unchecked(rep, labels, volume)
    rep.organs.sort(key=lambda e: int(e["label"]))
    for entry in rep.organs:
        entry["kept"] = int(entry["label"]) not in rejected
    out = None if output is None or nothing_plausible else Path(output)
    if out is not None:
        from medrecon.io import save

        report(progress, "writing", 0.9)
        with timer.stage("write_labels"):
            save(kept, out)
    rep.timings_s = {**timer.stages, "total": timer.total()}
    rep = _scrubbed(rep, identifiers, keep_phi=config.keep_phi)
    if report_path is not None:
        rep.write(report_path)
    if nothing_plausible:
        raise ImplausibleSegmentationError(
            f"{NO_PLAUSIBLE_ORGAN} (no labels written; --keep-implausible writes them anyway)",
            report=rep.to_dict(),
        )
    report(progress, "done", 1.0)
    return SegmentResult(volume=volume, labels=kept, report=rep.to_dict(), output=out)


def _add_unchecked(rep: Report, labels: LabelMap, volume: Volume) -> None:
    """Add an entry with its volume and mean HU for each label, without a verdict."""
    lab = np.asarray(labels.array)
    counts = np.bincount(lab[lab != 0].astype(np.int64, copy=False))
    ml_per_voxel = labels.voxel_volume_mm3 / 1000.0
    for label, hu in _mean_hu(volume, labels).items():
        rep.add_organ({"label_volume_ml": round(int(counts[label]) * ml_per_voxel, 2),
                       "mean_hu": round(hu, 2)}, name=labels.name_of(label), label=label)
