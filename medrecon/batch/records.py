"""Completion markers, failure records and the batch summary.

A study's output folder is finished only when ``DONE.json`` exists; it is
written last, atomically, after every other output. ``FAILED.json`` records a
failure and its reason. A folder with neither is unfinished: its outputs are
cleared and the study is redone.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medrecon.atomic import write_text

DONE = "DONE.json"
FAILED = "FAILED.json"
SUMMARY_VERSION = 1
#: Outputs of a study that clearing removes (besides every plain file in the folder).
OUTPUT_DIRS = ("meshes",)


def study_state(folder: Path) -> str:
    """``"done"``, ``"failed"`` or ``"todo"`` for a study's output folder."""
    if (folder / DONE).is_file():
        return "done"
    if (folder / FAILED).is_file():
        return "failed"
    return "todo"


def read_record(folder: Path) -> dict[str, Any] | None:
    """Read the study's DONE or FAILED record; None when unfinished or unreadable."""
    for name in (DONE, FAILED):
        path = folder / name
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
    return None


def clear_outputs(folder: Path) -> None:
    """Remove a study's outputs (files in ``folder`` and its ``meshes/``), keeping sub-folders.

    Sub-folders other than ``meshes/`` may be other studies' output folders
    (a DICOM study in ``a/`` and an image study ``a/b.nii.gz``), so they stay.
    """
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.is_file() or entry.is_symlink():
            entry.unlink(missing_ok=True)
        elif entry.name in OUTPUT_DIRS:
            shutil.rmtree(entry, ignore_errors=True)


def write_record(folder: Path, record: Mapping[str, Any]) -> Path:
    """Write ``DONE.json`` or ``FAILED.json`` (by ``record["status"]``) atomically."""
    name = DONE if record.get("status") == "done" else FAILED
    return write_text(folder / name, json.dumps(dict(record), indent=1, allow_nan=False) + "\n")


def done_record(key: str, source: str, report: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """Make the DONE record of a finished study from its reconstruction report.

    ``organs`` lists the meshed organs; ``implausible`` names the organs that failed the
    plausibility checks (left unmeshed, or meshed on request).
    """
    organs = [
        {"name": o["name"], "label": o["label"], "mesh_volume_ml": round(float(o["mesh_volume_ml"]), 3),
         "watertight": bool(o.get("watertight")), "manifold": bool(o.get("manifold"))}
        for o in report.get("organs", []) if "mesh_volume_ml" in o
    ]
    implausible = [o["name"] for o in report.get("organs", []) if o.get("plausible") is False]
    return {"study": key, "source": source, "status": "done", "seconds": round(seconds, 3),
            "print_ready": bool(report.get("print_ready")), "organs": organs, "implausible": implausible,
            "error": ""}


def failed_record(key: str, source: str, exc: BaseException | str, seconds: float) -> dict[str, Any]:
    """Make the FAILED record of a study, with the reason as one line."""
    if isinstance(exc, BaseException):
        reason, kind = " ".join(str(exc).split()) or type(exc).__name__, type(exc).__name__
    else:
        reason, kind = str(exc), "WorkerError"
    return {"study": key, "source": source, "status": "failed", "seconds": round(seconds, 3),
            "print_ready": False, "organs": [], "error_type": kind, "error": reason}


def write_summary(outdir: Path, records: Iterable[Mapping[str, Any]], *, input_path: str) -> dict[str, Any]:
    """Write ``summary.json`` and ``summary.csv`` (one row per study) atomically.

    The CSV has fixed columns (study, status, print_ready, n_organs, seconds,
    error, output) and one ``volume_ml:<organ>`` column per organ seen anywhere.
    """
    rows = sorted((dict(r) for r in records), key=lambda r: r["study"])
    counts = {"done": sum(r["status"] == "done" for r in rows),
              "failed": sum(r["status"] == "failed" for r in rows)}
    summary = {"schema_version": SUMMARY_VERSION, "input": input_path, "total": len(rows),
               "counts": counts, "studies": rows}
    write_text(outdir / "summary.json", json.dumps(summary, indent=1, allow_nan=False) + "\n")
    organs = sorted({o["name"] for r in rows for o in r.get("organs", [])})
    fields = ["study", "status", "print_ready", "n_organs", "seconds", "error", "source"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(fields + [f"volume_ml:{n}" for n in organs])
    for r in rows:
        vols = {o["name"]: o["mesh_volume_ml"] for o in r.get("organs", [])}
        writer.writerow([r["study"], r["status"], r.get("print_ready", False), len(r.get("organs", [])),
                         r.get("seconds", ""), r.get("error", ""), r.get("source", "")]
                        + [vols.get(n, "") for n in organs])
    write_text(outdir / "summary.csv", buf.getvalue())
    return summary
