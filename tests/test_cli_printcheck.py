"""The print checks of every ``medrecon mesh`` run, through the CLI, on analytic shapes.

Label files on oblique, reflected grids (det < 0) whose walls are known
analytically: a spherical shell with a 1.5 mm wall and a 0.6 mm plate. Drain
holes are checked for watertightness by trimesh and, when installed, admesh.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import trimesh
from _builders import CENTRE, hollow_shell, oblique_grid, world_points

from medrecon.cli import main
from medrecon.io import save
from medrecon.volume import LabelMap


def run_mesh(tmp_path, mask, affine, *options, name="part"):
    """``medrecon mesh`` of ``mask`` (label 1 named ``name``) with ``options``: (exit code, report, outdir)."""
    path = save(LabelMap(mask.astype(np.uint8), affine, names={1: name}), tmp_path / "labels.nii.gz")
    out = tmp_path / ("out" + "".join(o.replace("-", "_").replace(".", "_") for o in options))
    code = main(["mesh", str(path), "-o", str(out), *options])
    report = json.loads((out / "report.json").read_text()) if code == 0 else None
    return code, report, out


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    """A spherical shell, outer radius 5 mm, wall 1.5 mm, on an oblique reflected 0.15 mm grid."""
    return hollow_shell()


@pytest.fixture(scope="module")
def plate():
    """A 0.6 mm plate (4 voxels of 0.15 mm), 5.6 mm square, on an oblique, reflected grid."""
    affine, _ = oblique_grid((0.1, 0.1, 0.15), 3.0)
    mask = np.zeros((64, 64, 10), bool)
    mask[4:60, 4:60, 3:7] = True
    return mask, affine


def test_shell_wall_is_reported_and_judged_by_min_wall(tmp_path, shell, capsys):
    code, report, _ = run_mesh(tmp_path, *shell)
    assert code == 0
    organ = report["organs"][0]
    wall = organ["wall_thickness_mm"]
    assert set(wall) == {"min", "p5", "area_below_min_mm2"}
    assert abs(wall["min"] - 1.5) <= 0.2 and abs(wall["p5"] - 1.5) <= 0.2
    assert wall["area_below_min_mm2"] == 0.0
    assert organ["self_intersections"] == 0
    assert organ["small_features"]["pieces_below_resolution"] == 0
    assert organ["process"] == "fdm" and organ["min_wall_mm"] == 1.0
    assert 0 < organ["thickness_faces_measured"] <= organ["faces"]
    assert organ["print_ready"] is True and report["print_ready"] is True
    assert "print-ready" in capsys.readouterr().out

    code, report, _ = run_mesh(tmp_path, *shell, "--min-wall", "2.0")
    assert code == 0
    organ = report["organs"][0]
    assert organ["min_wall_mm"] == 2.0
    # the whole shell is thinner than 2 mm: inner and outer surface, 4 pi (5^2 + 3.5^2) mm^2
    assert organ["wall_thickness_mm"]["area_below_min_mm2"] == pytest.approx(4 * np.pi * (25 + 12.25), rel=0.1)
    assert organ["print_ready"] is False and report["print_ready"] is False
    assert organ["watertight"] and organ["manifold"]  # the mesh is fine, the wall is not
    assert "NOT PRINT-READY: walls under 2.0 mm" in capsys.readouterr().out


def test_plate_fails_fdm_and_passes_sla(tmp_path, plate):
    code, fdm, _ = run_mesh(tmp_path, *plate)
    assert code == 0
    organ = fdm["organs"][0]
    assert abs(organ["wall_thickness_mm"]["min"] - 0.6) <= 0.05
    assert organ["print_ready"] is False and fdm["print_ready"] is False
    code, sla, _ = run_mesh(tmp_path, *plate, "--process", "sla")
    assert code == 0
    organ = sla["organs"][0]
    assert organ["process"] == "sla" and organ["min_wall_mm"] == 0.4
    assert organ["wall_thickness_mm"]["area_below_min_mm2"] == 0.0
    assert organ["print_ready"] is True and sla["print_ready"] is True


def test_drain_holes_keep_the_shell_watertight(tmp_path):
    affine, shape = oblique_grid((0.5, 0.5, 0.5), 11.0)
    r = np.linalg.norm(world_points(affine, shape) - CENTRE, axis=1).reshape(shape)
    code, report, out = run_mesh(tmp_path, r <= 9.0, affine, "--hollow", "2", "--drain-holes", "2",
                                 "--drain-diameter", "2.5")
    assert code == 0
    organ = report["organs"][0]
    holes = organ["drain_holes"]
    assert len(holes) == 2 and all(h["diameter_mm"] == 2.5 for h in holes)
    # at the lowest points of the print orientation (+z up): the cavity's floor, 7 mm below the
    # centre, then 5 mm (two diameters) from there along the cavity's wall, at about -5.2 mm
    assert report["print"]["orientation"]["up"] == "+z"
    assert holes[0]["start"][2] - CENTRE[2] == pytest.approx(-7.0, abs=0.5)
    for h in holes:
        assert h["start"][2] - CENTRE[2] < -4.5
        assert np.linalg.norm(np.asarray(h["start"]) - CENTRE) == pytest.approx(7.0, abs=0.5)
        assert h["exit"][2] < h["start"][2]
        assert np.linalg.norm(np.asarray(h["exit"]) - CENTRE) == pytest.approx(9.0, abs=0.6)
    assert organ["watertight"] and organ["manifold"] and organ["self_intersections"] == 0
    mesh = trimesh.load(out / organ["file"], force="mesh")
    assert mesh.is_watertight and mesh.is_winding_consistent
    # drilled: one surface now, outer and cavity joined through the holes
    assert organ["shells"] == 1 and len(mesh.split(only_watertight=False)) == 1
    if shutil.which("admesh"):
        text = subprocess.run(["admesh", str(out / organ["file"])], capture_output=True, text=True,
                              check=True).stdout
        for key in ("Edges fixed", "Facets removed", "Facets added", "Facets reversed", "Backwards edges"):
            line = next(ln for ln in text.splitlines() if ln.startswith(key))
            assert int(line.split(":")[1].split()[0]) == 0, line


def test_drain_holes_need_a_hollow_shell(tmp_path, plate, capsys):
    code, _, _ = run_mesh(tmp_path, *plate, "--drain-holes", "1")
    assert code == 1
    assert "hollow" in capsys.readouterr().err
