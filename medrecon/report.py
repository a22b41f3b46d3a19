"""The report of one run: a typed object, written once as ``report.json``.

A run (:func:`medrecon.pipeline.reconstruct`) makes one :class:`Report`; each
step adds its fields to it (the label source its method and model, the input
its geometry, the meshing one entry per organ, the exporter the files, the
timer its stages) and the pipeline writes it once, at the end, with
:meth:`Report.write`. Exporters write mesh files only.

Layout of ``report.json`` (schema :data:`SCHEMA_VERSION`; later versions may
add fields, never rename or remove one)::

    {
     "schema_version": 1, "frame": "LPS" or "RAS", "units": "mm",
     <study-wide fields, in the order the steps added them>,
     "organs": [{"name": ..., "label": ..., <mesh numbers>, "print_ready": ..., "file": ..., ...}, ...],
               (an organ the plausibility checks rejected has "plausible": false and
                its "reasons", and no mesh numbers or "file")
     "print_ready": true or false (every meshed organ's),
     "timings_s": {<stage>: seconds, ..., "total": seconds}
    }

Coordinates in the organ entries (``bbox_mm``) are in the report's frame.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medrecon.atomic import write_text
from medrecon.volume import LPS_TO_RAS

#: Version of the report.json layout.
SCHEMA_VERSION = 1
#: World frames a report (and the mesh files it lists) can be written in.
FRAMES = ("LPS", "RAS")
#: Top-level names the report sets itself.
RESERVED = frozenset({"schema_version", "frame", "units", "organs", "print_ready", "timings_s"})


def jsonable(value: Any) -> Any:
    """Return ``value`` as plain JSON types: dicts with str keys, lists, numbers, str, None.

    numpy scalars and arrays become Python numbers and lists, paths become
    str, and NaN or infinite floats become None (JSON has no such numbers).
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


@dataclass(eq=False)
class Report:
    """What one run made and how, organ by organ; steps add to it, the pipeline writes it.

    Attributes
    ----------
    frame : {"LPS", "RAS"}
        World frame of the written mesh files and of the coordinates in the report.
    fields : dict
        Study-wide fields (method, model, config, input, ...), in the order added.
    organs : list of dict
        One entry per organ, in label order (see :meth:`add_organ`).
    timings_s : dict or None
        Seconds per stage and ``"total"``; left out of the JSON while None.
    """

    frame: str = "LPS"
    fields: dict[str, Any] = field(default_factory=dict)
    organs: list[dict[str, Any]] = field(default_factory=list)
    timings_s: dict[str, float] | None = None

    def __post_init__(self) -> None:
        frame = str(self.frame).upper()
        if frame not in FRAMES:
            raise ValueError(f"frame must be 'LPS' or 'RAS', got {self.frame!r}")
        self.frame = frame
        self.fields = dict(self.fields)
        self.organs = [dict(o) for o in self.organs]

    def add(self, **fields: Any) -> None:
        """Add study-wide fields (a name given again keeps its place and takes the new value).

        Raises
        ------
        ValueError
            For a name the report sets itself (:data:`RESERVED`).
        """
        reserved = sorted(RESERVED.intersection(fields))
        if reserved:
            raise ValueError(f"{', '.join(reserved)}: set by the report itself, not added as fields")
        self.fields.update(fields)

    def add_organ(self, entry: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
        """Append one organ: ``entry`` (e.g. :attr:`medrecon.mesh.OrganMesh.report`) updated by ``fields``.

        Parameters
        ----------
        entry : mapping
            The organ's numbers; coordinates (``bbox_mm``) in LPS mm. Not modified.
        **fields
            More per-organ fields (``name``, ``label``, ``file``, ``mean_hu``, ...).

        Returns
        -------
        dict
            The stored entry, its ``bbox_mm`` in the report's frame.

        Raises
        ------
        ValueError
            If the entry has no ``name`` or ``label``.
        """
        out = dict(entry)
        out.update(fields)
        missing = [key for key in ("name", "label") if key not in out]
        if missing:
            raise ValueError(f"an organ entry needs {' and '.join(missing)}")
        if self.frame == "RAS" and out.get("bbox_mm") is not None:
            out["bbox_mm"] = _ras_bbox(out["bbox_mm"])
        self.organs.append(out)
        return out

    @property
    def print_ready(self) -> bool:
        """Every meshed organ is print-ready, and some organ was meshed.

        An organ entry with its own ``print_ready`` (the print checks of
        :mod:`medrecon.mesh.printcheck` passed, and the mesh is watertight and
        manifold) counts by it; one without counts as ready when its mesh is
        watertight and manifold. Organs left unmeshed as implausible
        (``"plausible": false`` and no mesh) do not count.
        """
        meshed = [e for e in self.organs if e.get("plausible", True) or "watertight" in e]
        if self.organs and not meshed:
            return False
        return all(bool(e["print_ready"]) if "print_ready" in e
                   else bool(e.get("watertight")) and bool(e.get("manifold")) for e in meshed)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain JSON types, in the layout of the module docstring."""
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "frame": self.frame, "units": "mm",
                               **self.fields, "organs": self.organs, "print_ready": self.print_ready}
        if self.timings_s is not None:
            out["timings_s"] = self.timings_s
        return jsonable(out)

    def to_json(self) -> str:
        """``report.json``'s text (strict JSON: no NaN)."""
        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"

    def write(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_json` to ``path`` atomically and return the path."""
        return write_text(path, self.to_json())


def _ras_bbox(bbox_lps: Any) -> list[list[float]]:
    """[[min], [max]] corners in LPS mm -> the same box in RAS mm."""
    corners = np.asarray(bbox_lps, dtype=np.float64) @ LPS_TO_RAS[:3, :3].T + LPS_TO_RAS[:3, 3]
    return [corners.min(axis=0).tolist(), corners.max(axis=0).tolist()]


__all__ = ["FRAMES", "SCHEMA_VERSION", "Report", "jsonable"]
