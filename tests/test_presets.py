import json

import nibabel as nib
import numpy as np
import pytest

from medrecon.errors import EmptySegmentationError, InputError
from medrecon.sources.presets import (
    Preset,
    apply_presets,
    body_mask,
    get_preset,
    load_presets,
    preset_mask,
)
from medrecon.volume import LPS_TO_RAS, LabelMap, Volume

BONE_PREFIXES = ("vertebrae", "rib", "sacrum", "hip", "femur", "sternum", "scapula", "clavicula",
                 "humerus", "skull", "costal")


def _torso(shape=(40, 30, 24), spacing=(2.0, 2.0, 2.5), flip=False):
    """Analytic CT: air, an elliptic body of soft tissue, a bone tube, a lung cavity,
    an air tube from the top (trachea) and a separate air bubble (bowel gas)."""
    i, j, k = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    ci, cj = (shape[0] - 1) * spacing[0] / 2, (shape[1] - 1) * spacing[1] / 2
    hu = np.full(shape, -1000.0, np.float32)
    body = ((i - ci) / 34) ** 2 + ((j - cj) / 26) ** 2 <= 1
    hu[body] = 40.0
    # bone: a ring (cortex) with trabecular bone at 200 HU, along k, radius 8 mm
    r = np.hypot(i - ci, j - (cj + 12))
    hu[(r <= 8) & body] = 200.0
    hu[(r > 5) & (r <= 8) & body] = 700.0
    lung = (np.hypot(i - (ci - 14), j - (cj - 4)) <= 7) & (k > 10) & (k < 45)
    hu[lung] = -850.0
    trachea = (np.hypot(i - (ci + 14), j - (cj - 10)) <= 3) & (k >= 20)
    hu[trachea] = -1000.0
    bubble = (np.hypot(i - (ci + 14), j - (cj - 10)) <= 3) & (k < 12) & (k > 3)
    hu[bubble] = -1000.0
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-40, -30, 100]
    vol = Volume(hu, affine, modality="CT", units="HU")
    truth = {"bone": (r <= 8) & body, "trachea": trachea, "bubble": bubble, "body": body, "lung": lung}
    if flip:  # same anatomy stored with the slice axis reversed (superior at k=0)
        flip_aff = affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, shape[2] - 1], [0, 0, 0, 1]])
        vol = Volume(hu[:, :, ::-1].copy(), flip_aff, modality="CT", units="HU")
        truth = {key: m[:, :, ::-1] for key, m in truth.items()}
    return vol, truth


def test_presets_are_data_with_known_steps():
    presets = load_presets()
    assert {"bone", "skin", "lung", "airway", "soft_tissue"} <= set(presets)
    bone = presets["bone"]
    assert (bone.hu_min, bone.hu_max) == (300.0, 3000.0)
    assert [s["op"] for s in bone.steps][-2:] == ["fill_holes", "keep_components"]
    assert bone.steps[-2]["min_mean_hu"] == 150  # a closed ring around brain or fat stays open
    # labels are new ids >= 200 (TotalSegmentator has no such classes) and distinct
    labels = [p.label for p in presets.values()]
    assert len(set(labels)) == len(labels) and min(labels) >= 200
    assert json.loads(json.dumps(bone.to_dict()))["hu"] == [300.0, 3000.0]
    # the large, convoluted surfaces state the detail their meshes need; bone keeps its voxels
    assert bone.detail_mm is None and bone.to_dict()["detail_mm"] is None
    assert presets["soft_tissue"].detail_mm == presets["fat"].detail_mm == 2.0
    assert get_preset("fat:-150..-50").detail_mm == 2.0  # a changed range keeps it


def test_unknown_preset_lists_known_ones():
    with pytest.raises(InputError, match="known presets: .*bone"):
        get_preset("marrow")


def test_bone_preset_fills_trabecular_bone_inside_cortex():
    vol, truth = _torso()
    mask = preset_mask(vol, "bone")
    # trabecular bone (200 HU) is below the threshold but enclosed by cortex and bone-like: filled
    assert mask[truth["bone"]].mean() > 0.97
    assert not mask[~truth["bone"]].any()


def test_skin_preset_is_filled_body():
    vol, truth = _torso()
    mask = preset_mask(vol, "skin")
    inter = (mask & truth["body"]).sum()
    assert 2 * inter / (mask.sum() + truth["body"].sum()) > 0.97
    # lung and trachea are inside the outline, so they are filled
    assert mask[truth["lung"]].all()


@pytest.mark.parametrize("flip", [False, True])
def test_airway_keeps_air_connected_to_top_only(flip):
    vol, truth = _torso(flip=flip)
    mask = preset_mask(vol, "airway")
    assert mask[truth["trachea"]].mean() > 0.95
    assert not mask[truth["bubble"]].any()
    assert not (mask & ~truth["body"]).any()  # outside air is not airway


def test_lung_preset_inside_body():
    vol, truth = _torso()
    p = Preset("lung_small", 202, "lungs", None, -400.0,
               ({"op": "inside_body", "body_hu": -200}, {"op": "keep_components", "min_mm3": 1000}))
    mask = preset_mask(vol, p)
    assert mask[truth["lung"]].all()
    assert not (mask & ~truth["body"]).any()


def test_apply_presets_first_listed_wins_and_names():
    vol, truth = _torso()
    lm = apply_presets(vol, "bone,skin")
    assert lm.names == {200: "bone", 201: "skin"}
    assert set(lm.labels) == {200, 201}
    assert (lm.array[truth["bone"]] == 200).mean() > 0.97
    assert lm.same_grid(vol)


def test_empty_preset_and_mr_are_errors():
    vol, _ = _torso()
    air = vol.replace(array=np.full(vol.shape, -1000.0, np.float32))
    with pytest.raises(EmptySegmentationError, match="Hounsfield"):
        apply_presets(air, "bone")
    with pytest.raises(InputError, match="need a CT"):
        apply_presets(vol.replace(modality="MR"), "bone")


def test_bone_preset_on_real_ct_agrees_with_totalsegmentator(totalseg_dir):
    """Real 3 mm CT: bone found by threshold lies in TotalSegmentator's bone labels."""
    img = nib.load(totalseg_dir / "example_ct_sm.nii.gz")
    vol = Volume(np.asarray(img.dataobj, dtype=np.float32), LPS_TO_RAS @ img.affine, modality="CT")
    seg = nib.load(totalseg_dir / "example_seg.nii.gz")
    gt_lm = LabelMap(np.asarray(seg.dataobj), LPS_TO_RAS @ seg.affine)
    assert gt_lm.same_grid(vol)
    names = {int(k): v for k, v in json.loads((totalseg_dir / "class_map_total.json").read_text()).items()}
    bone_ids = [k for k, v in names.items() if v.startswith(BONE_PREFIXES)]
    gt = np.isin(gt_lm.array, bone_ids)
    pred = preset_mask(vol, "bone")
    precision = (pred & gt).sum() / pred.sum()
    assert precision > 0.85
    # every organ voxel TotalSegmentator found lies inside the skin preset
    skin = preset_mask(vol, "skin")
    assert skin[gt_lm.array > 0].mean() > 0.97
    body = body_mask(vol)
    assert body[gt_lm.array > 0].mean() > 0.97


def test_presets_command_lists_every_preset(capsys):
    from medrecon.cli import main

    assert main(["presets", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in listed] == list(load_presets())
    assert main(["presets"]) == 0
    text = capsys.readouterr().out
    assert "bone" in text and "300 .. 3000" in text
