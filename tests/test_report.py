"""The run report: its layout, strict JSON, frames and the one writer."""

import json
from pathlib import Path

import numpy as np
import pytest

from medrecon.report import SCHEMA_VERSION, Report, jsonable


def test_jsonable_gives_plain_json_types():
    value = {1: np.float32(0.5), "a": (np.int64(3), np.arange(3)), "p": Path("x/y.nii.gz"),
             "bad": [float("nan"), np.float64("inf"), np.array([1.0, np.nan])], "ok": True}
    out = jsonable(value)
    assert out == {"1": 0.5, "a": [3, [0, 1, 2]], "p": "x/y.nii.gz", "bad": [None, None, [1.0, None]],
                   "ok": True}
    assert type(out["a"][0]) is int and type(out["a"][1][0]) is int
    json.dumps(out, allow_nan=False)


def test_layout_order_and_print_ready():
    rep = Report()
    rep.add(method="preset", config={"fmt": "stl"})
    rep.add_organ({"name": "bone", "label": 200, "watertight": True, "manifold": True}, file="meshes/bone.stl")
    rep.timings_s = {"meshes": 0.5, "total": 1.0}
    out = rep.to_dict()
    assert list(out) == ["schema_version", "frame", "units", "method", "config", "organs", "print_ready",
                         "timings_s"]
    assert out["schema_version"] == SCHEMA_VERSION and out["frame"] == "LPS" and out["units"] == "mm"
    assert out["organs"] == [{"name": "bone", "label": 200, "watertight": True, "manifold": True,
                              "file": "meshes/bone.stl"}]
    assert out["print_ready"] is True
    rep.add_organ({"name": "liver", "label": 5, "watertight": True, "manifold": False})
    assert rep.print_ready is False
    assert "timings_s" not in Report().to_dict()


def test_reserved_names_and_incomplete_entries_are_refused():
    rep = Report(frame="ras")
    assert rep.frame == "RAS"
    with pytest.raises(ValueError, match="organs"):
        rep.add(organs=[])
    with pytest.raises(ValueError, match="label"):
        rep.add_organ({"name": "liver"})
    with pytest.raises(ValueError, match="frame"):
        Report(frame="XYZ")


def test_bbox_is_written_in_the_report_frame():
    # LPS box x -55..-45, y 90..110, z 185..215; RAS negates x and y
    lps = [[-55.0, 90.0, 185.0], [-45.0, 110.0, 215.0]]
    entry = {"name": "liver", "label": 5, "bbox_mm": lps}
    ras = Report(frame="RAS").add_organ(entry)
    assert ras["bbox_mm"] == [[45.0, -110.0, 185.0], [55.0, -90.0, 215.0]]
    assert Report().add_organ(entry)["bbox_mm"] == lps
    assert entry["bbox_mm"] is lps  # the given entry is not modified


def test_write_is_strict_json_and_atomic(tmp_path):
    rep = Report()
    rep.add(input="x.nii.gz")
    rep.add_organ({"name": "liver", "label": 5, "hd95_mm": float("nan")}, mean_hu=np.float64(61.5))
    path = rep.write(tmp_path / "out" / "report.json")
    text = path.read_text()
    assert text.endswith("}\n") and "NaN" not in text
    assert json.loads(text) == rep.to_dict()
    assert json.loads(text)["organs"][0] == {"name": "liver", "label": 5, "hd95_mm": None, "mean_hu": 61.5}
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temporary file left
