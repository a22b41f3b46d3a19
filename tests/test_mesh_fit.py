"""Fit to the printer: one uniform scale for the scene, stated in the report, walls in print mm."""

import json

import numpy as np
import pytest
import trimesh
from _builders import CENTRE, ellipsoid_mask

from medrecon.cli import main
from medrecon.io import save
from medrecon.mesh import MeshOptions, build_organ_meshes
from medrecon.mesh.fit import fit_scale, scaled
from medrecon.triangles import TriangleMesh
from medrecon.volume import LabelMap


def test_fit_scale_shrinks_to_the_tightest_axis_and_never_enlarges():
    assert fit_scale([400.0, 100.0, 50.0], [200.0, 200.0, 200.0]) == 0.5
    assert fit_scale([150.0, 250.0, 330.0], [250.0, 210.0, 220.0]) == pytest.approx(2 / 3)
    assert fit_scale([100.0, 100.0, 100.0], [200.0, 200.0, 200.0]) == 1.0
    assert fit_scale([300.0, 0.0, 0.0], [200.0, 200.0, 200.0]) == pytest.approx(2 / 3)  # flat
    with pytest.raises(ValueError, match="bed"):
        fit_scale([1.0, 1.0, 1.0], [200.0, 0.0, 200.0])
    with pytest.raises(ValueError, match="extent"):
        fit_scale([1.0, 1.0], [200.0, 200.0, 200.0])


def test_scaled_keeps_the_centre_and_the_winding():
    box = trimesh.creation.box(extents=(10.0, 20.0, 30.0))
    box.apply_translation((-50.0, 100.0, 200.0))
    about = np.array([-50.0, 100.0, 200.0])
    half = scaled(TriangleMesh.from_trimesh(box), 0.5, about).to_trimesh()
    assert np.allclose(half.bounds, [[-52.5, 95.0, 192.5], [-47.5, 105.0, 207.5]])
    assert half.volume == pytest.approx(6000.0 / 8)  # positive: still outward
    with pytest.raises(ValueError, match="positive"):
        scaled(TriangleMesh.from_trimesh(box), -1.0, about)


def test_scale_makes_every_number_of_the_print_and_walls_stay_as_asked():
    # a 20 mm ball on an oblique, reflected grid, printed at half size with a 2 mm wall
    mask, affine = ellipsoid_mask((20.0, 20.0, 20.0), (0.8, 0.9, 1.2))
    labels = LabelMap(mask.astype(np.uint8), affine, names={1: "ball"})
    life, half = (build_organ_meshes(labels, MeshOptions(scale=s))[0] for s in (1.0, 0.5))
    assert half.report["scale"] == 0.5 and life.report["scale"] == 1.0
    assert half.report["mesh_volume_ml"] == pytest.approx(life.report["mesh_volume_ml"] / 8, rel=1e-9)
    assert half.report["voxel_volume_ml"] == pytest.approx(life.report["voxel_volume_ml"] / 8, rel=1e-9)
    assert half.report["hd95_mm"] == pytest.approx(life.report["hd95_mm"] / 2, rel=1e-9)
    assert np.allclose(np.mean(half.report["bbox_mm"], axis=0), np.mean(life.report["bbox_mm"], axis=0))
    assert np.allclose(half.raw.vertices.mean(axis=0), CENTRE, atol=0.2)  # the raw surface goes along
    (hollow,) = build_organ_meshes(labels, MeshOptions(scale=0.5, hollow_mm=2.0))
    assert hollow.report["shells"] == 2
    # a 10 mm ball with a 2 mm wall in print millimetres, not a 1 mm one
    assert hollow.report["mesh_volume_ml"] * 1000 == pytest.approx(4 / 3 * np.pi * (10**3 - 8**3), rel=0.08)


def test_mesh_fit_bed_and_scale_on_the_command_line(tmp_path, capsys):
    array = np.zeros((60, 20, 20), np.uint8)
    array[2:12, 5:15, 5:15] = 1
    array[45:58, 4:16, 3:17] = 2
    path = tmp_path / "labels.nii.gz"
    save(LabelMap(array, np.diag([2.0, 1.5, 1.5, 1.0]), names={1: "a", 2: "b"}), path)
    out = tmp_path / "out"
    assert main(["mesh", str(path), "-o", str(out), "--fit-bed", "40,40,40", "--merged", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    block = report["print"]
    life_x = (57.5 - 1.5) * 2.0  # the two boxes' outer voxel faces, less smoothing's rounding
    assert block["fit_bed_mm"] == [40.0, 40.0, 40.0] and block["scale"] == pytest.approx(40 / life_x, rel=0.02)
    assert block["scene_size_mm"][0] == pytest.approx(40.0) and max(block["scene_size_mm"]) <= 40 + 1e-9
    assert report["config"]["mesh"]["fit_bed"] == [40.0, 40.0, 40.0]
    scene = trimesh.load(out / report["merged_file"], force="mesh")
    assert np.ptp(scene.vertices, axis=0) == pytest.approx(block["scene_size_mm"], abs=1e-3)
    assert main(["mesh", str(path), "-o", str(tmp_path / "big"), "--scale", "2", "--json"]) == 0
    doubled = json.loads(capsys.readouterr().out)
    assert doubled["print"]["scale"] == 2.0 and doubled["print"]["life_size"] is False
    assert doubled["print"]["fit_bed_mm"] is None
    for name in ("--scale 0.5 --fit-bed 200,200,200", "--fit-bed 200,200", "--fit-bed 0,1,1"):
        with pytest.raises(SystemExit) as refused:
            main(["mesh", str(path), "-o", str(tmp_path / "no"), *name.split()])
        assert refused.value.code == 2
    assert main(["mesh", str(path), "-o", str(tmp_path / "no"), "--scale", "-1"]) == 1
    assert "scale" in capsys.readouterr().err
