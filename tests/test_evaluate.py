import json

import numpy as np
import pytest

from medrecon.cli import main
from medrecon.errors import GeometryError
from medrecon.evaluate import evaluate, organ_scores
from medrecon.io import save
from medrecon.volume import LabelMap


def cubes(shift: int, spacing=(2.0, 1.0, 1.0)):
    """Two 20-voxel cubes, the second shifted by ``shift`` voxels along i."""
    a = np.zeros((50, 30, 30), np.uint8)
    b = np.zeros_like(a)
    a[5:25, 5:25, 5:25] = 5
    b[5 + shift:25 + shift, 5:25, 5:25] = 5
    affine = np.diag([*spacing, 1.0])
    return LabelMap(a, affine, names={5: "liver"}), LabelMap(b, affine, names={5: "liver"})


def test_shifted_cubes_known_dice_and_distance():
    pred, gt = cubes(5)
    result = evaluate(pred, gt)
    (organ,) = result["organs"]
    # overlap 15 of 20 slabs: Dice = 2 * 15 / 40
    assert organ["dice"] == pytest.approx(0.75, abs=1e-6)
    # the faces across the shift are 5 voxels * 2 mm apart, the others touch
    assert organ["hd95_mm"] == pytest.approx(10.0, abs=1e-6)
    assert 0.0 < organ["nsd"] < 1.0
    assert result["mean_dice"] == pytest.approx(0.75, abs=1e-6)
    assert organ["name"] == "liver" and organ["label"] == 5


def test_identical_and_disjoint_masks():
    same = organ_scores(*(np.pad(np.ones((4, 4, 4), bool), 3),) * 2, (1, 1, 1))
    assert same == {"dice": 1.0, "hd95_mm": 0.0, "nsd": 1.0}
    a = np.zeros((20, 20, 20), bool)
    a[2:6, 2:6, 2:6] = True
    empty = organ_scores(np.zeros_like(a), a, (1, 1, 1))
    assert empty["dice"] == 0.0 and np.isnan(empty["hd95_mm"])


def test_missing_organ_scores_zero_and_json_null():
    pred, gt = cubes(0)
    pred = pred.replace(array=np.zeros(pred.shape, np.uint8))
    (organ,) = evaluate(pred, gt)["organs"]
    assert organ["dice"] == 0.0 and organ["hd95_mm"] is None and organ["nsd"] is None


def test_grids_must_match():
    pred, gt = cubes(0)
    moved = pred.affine.copy()
    moved[0, 3] = 3.0
    with pytest.raises(GeometryError, match="resample"):
        evaluate(pred.replace(affine=moved), gt)


def test_cli_json_schema(tmp_path, capsys):
    pred, gt = cubes(5)
    save(pred.replace(names={}), tmp_path / "pred.nii.gz")
    save(gt, tmp_path / "gt.nii.gz")
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"5": "hepar"}))
    assert main(["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "gt.nii.gz"),
                 "--names", str(names), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"organs", "mean_dice"}
    (organ,) = result["organs"]
    assert set(organ) == {"name", "label", "dice", "hd95_mm", "nsd"}
    assert organ["name"] == "hepar" and organ["label"] == 5
    assert organ["dice"] == pytest.approx(0.75, abs=1e-6)
    # the table form names the organ too
    assert main(["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "gt.nii.gz")]) == 0
    assert "liver" in capsys.readouterr().out
    # a label the ground truth lacks scores 0 when asked for
    assert main(["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "gt.nii.gz"),
                 "--labels", "5,7", "--json"]) == 0
    organs = json.loads(capsys.readouterr().out)["organs"]
    assert [o["label"] for o in organs] == [5, 7] and organs[1]["dice"] == 1.0


def test_organs_are_matched_by_name_when_ids_differ(tmp_path, capsys):
    pred, gt = cubes(5)
    a, b = np.asarray(pred.array), np.asarray(gt.array)
    # a second organ, identical in both maps; the prediction numbers both differently
    a2, b2 = a.copy(), b.copy()
    a2[30:40, 5:15, 5:15] = 9
    b2[30:40, 5:15, 5:15] = 1
    pred = LabelMap(np.where(a2 == 5, 3, a2).astype(np.uint8), pred.affine, names={3: "Liver", 9: "spleen"})
    gt = LabelMap(b2, gt.affine, names={5: "liver", 1: "spleen"})
    result = evaluate(pred, gt)
    assert result["matched_by"] == "name"
    organs = {o["name"]: o for o in result["organs"]}
    assert (organs["liver"]["label"], organs["liver"]["pred_label"]) == (5, 3)
    assert organs["liver"]["dice"] == pytest.approx(0.75, abs=1e-6)  # the shifted cube, as by id above
    assert (organs["spleen"]["label"], organs["spleen"]["pred_label"]) == (1, 9)
    assert organs["spleen"]["dice"] == 1.0
    # the prediction's organs, whatever their ids; one the truth lacks scores 0
    extra = np.array(pred.array)
    extra[45:48, 25:28, 25:28] = 7
    extra = pred.replace(array=extra, names={**pred.names, 7: "gallbladder"})
    by_pred = evaluate(extra, gt, labels="predicted")["organs"]
    assert [(o["name"], o["label"], o["pred_label"]) for o in by_pred] == \
        [("Liver", 5, 3), ("gallbladder", None, 7), ("spleen", 1, 9)]
    assert by_pred[1]["dice"] == 0.0
    # without the prediction's names, ids are all there is: liver 5 is missing from it
    by_id = evaluate(pred.replace(names={}), gt)
    assert by_id["matched_by"] == "id" and "pred_label" not in by_id["organs"][0]
    assert {o["label"]: o["dice"] for o in by_id["organs"]} == {1: 0.0, 5: 0.0}
    # the command line says which it used
    save(pred, tmp_path / "pred.nii.gz")
    save(gt, tmp_path / "gt.nii.gz")
    assert main(["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "gt.nii.gz")]) == 0
    table = capsys.readouterr().out
    assert "organs matched by name" in table and "0.7500" in table and "1.0000" in table
    assert main(["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "gt.nii.gz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["matched_by"] == "name"
