"""Checks on every label source: CT only where CT is needed, plausible organs only, auto planes.

Ground truth: TotalSegmentator's own labels of the real CTs in data/totalseg, a real
head CT (data/dcm_qa_ct_ge), real MR data from nibabel (data/nibabel_mr) and the
phantoms' exact labels.
"""

from __future__ import annotations

import json
import math
import shutil
from importlib import resources

import numpy as np
import pytest
import torch
from _builders import write_series, z_positions

from medrecon.anatomy import load_anatomy
from medrecon.cli import main
from medrecon.errors import ImageKindError
from medrecon.io import load, load_labels, save
from medrecon.models import segment_scored
from medrecon.models.card import ModelCard, SegModel
from medrecon.models.inference import choose_fusion
from medrecon.models.nets import NetSpec
from medrecon.phantom import PhantomConfig, make_phantom
from medrecon.pipeline import ReconstructConfig, reconstruct
from medrecon.pipeline.segment import segment_study
from medrecon.sources import NetworkSource
from medrecon.sources.plausibility import check_organs, require_ct
from medrecon.volume import LabelMap

REAL = [("example_ct_sm.nii.gz", "example_seg.nii.gz"), ("example_ct_dicom", "example_seg_dicom.nii.gz")]
MODEL_ORGANS = ("spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
                "heart", "aorta", "inferior_vena_cava")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def test_the_anatomy_table_covers_the_model_and_names_its_sources():
    data = json.loads(resources.files("medrecon").joinpath("data", "anatomy.json").read_text())
    table = load_anatomy()
    refs = set(data["references"])
    cited = set()
    for name in MODEL_ORGANS:
        norm = table.organ(name)
        assert norm is not None, name
        assert norm.volume_ml[0] < norm.volume_ml[1] and norm.hu[0] < norm.hu[1]
        sources = data["organs"][name]["from"]
        for field in ("volume_ml", "hu", "side"):
            text = sources[field]
            used = {r for r in refs if r in text} | ({"as"} if text.startswith("as ") else set())
            assert used, f"{name}.{field} names no reference: {text}"
            cited |= used
    for part in ("body", "pieces", "order", "confidence"):
        cited |= {r for r in refs if r in data[part]["from"]}
    assert refs <= cited, f"references never used: {sorted(refs - cited)}"
    # left and right are the anatomy's, in LPS: + is the patient's left
    assert table.organ("liver").side[1] < 0 < table.organ("spleen").side[0]
    assert table.organ("kidney_right").side[1] < 0 < table.organ("kidney_left").side[0]


@pytest.mark.parametrize("image, seg", REAL)
def test_totalsegmentators_own_labels_are_never_rejected(totalseg_dir, image, seg):
    volume = load(totalseg_dir / image)
    truth = load_labels(totalseg_dir / seg).resample_like(volume)
    checks = check_organs(truth, volume)
    assert len(checks) > 25  # every structure TotalSegmentator found, organs, bones and vessels
    failed = {c.name: c.reasons for c in checks.values() if not c.plausible}
    assert not failed
    assert {"liver", "spleen", "aorta"} <= {c.name for c in checks.values()}


@pytest.mark.parametrize("seed, orientation", [(0, "axial"), (5, "random"), (12, "random")])
def test_phantom_ground_truth_passes_in_any_array_layout(seed, orientation):
    volume, truth = make_phantom(seed, config=PhantomConfig(orientation=orientation))
    checks = {c.name: c for c in check_organs(truth, volume).values()}
    assert all(c.plausible for c in checks.values()), {n: c.reasons for n, c in checks.items() if not c.plausible}
    # the side is measured in the LPS world, whatever the array layout
    assert checks["liver"].measured["lateral"] < -0.1 < 0.1 < checks["spleen"].measured["lateral"]


@pytest.fixture(scope="module")
def real_runs(totalseg_dir):
    runs = []
    for image, seg in REAL:
        volume = load(totalseg_dir / image)
        truth = np.asarray(load_labels(totalseg_dir / seg).resample_like(volume).array)
        scored = NetworkSource().segment_scored(volume)
        runs.append((image, volume, truth, scored, check_organs(scored.labels, volume,
                                                                 confidence=scored.confidence)))
    return runs


def test_default_model_organs_below_half_dice_are_rejected_and_the_liver_passes(real_runs):
    rejected_bad = 0
    for image, _volume, truth, scored, checks in real_runs:
        pred = np.asarray(scored.labels.array)
        for label, check in checks.items():
            d = dice(pred == label, truth == label)
            if d < 0.5:
                assert not check.plausible, f"{image}: {check.name} (Dice {d:.2f}) passed"
                rejected_bad += 1
        liver = next(c for c in checks.values() if c.name == "liver")
        assert liver.plausible, (image, liver.reasons)
        assert dice(pred == liver.label, truth == liver.label) > 0.85
        assert all(0.0 < c.confidence <= 1.0 for c in checks.values())
    assert rejected_bad >= 8  # the model's wrong organs on these two studies (issue 12: 5 + 5)


def test_reconstruct_meshes_plausible_organs_only_unless_asked(tmp_path, totalseg_dir, capsys):
    ct = totalseg_dir / "example_ct_sm.nii.gz"
    out = tmp_path / "out"
    assert main(["reconstruct", str(ct), "-o", str(out), "--quiet", "--no-preview"]) == 0
    printed = capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())
    organs = {o["name"]: o for o in rep["organs"]}
    rejected = [o for o in organs.values() if not o["plausible"]]
    assert rejected and organs["liver"]["plausible"]
    for o in organs.values():
        assert 0 < o["confidence"] <= 1 and isinstance(o["cut_at_edge"], bool)
        if o["plausible"]:
            assert (out / o["file"]).is_file() and o["reasons"] == []
        else:
            assert "file" not in o and o["reasons"] and o["label_volume_ml"] > 0
            assert not (out / "meshes" / f"{o['name']}.stl").exists()
            assert f"{o['name']}: not meshed, implausible" in printed
    # the study's verdict is that of its meshed organs (rejected ones have no mesh to print)
    assert rep["print_ready"] == all(o["print_ready"] for o in organs.values() if o["plausible"])
    written = np.asarray(load_labels(out / "labels.nii.gz").array)
    assert not np.isin(written, [o["label"] for o in rejected]).any()
    # the model card's Dice is its phantom validation, said so beside it
    assert "phantom" in rep["model"]["metrics_scope"] and "not measured on this study" in rep["model"]["metrics_scope"]
    assert rep["model"]["planes_used"] == ["axial"]  # a 90 mm slab: axial only

    kept = tmp_path / "kept"
    assert main(["reconstruct", str(ct), "-o", str(kept), "--quiet", "--no-preview", "--keep-implausible"]) == 0
    assert "IMPLAUSIBLE" in capsys.readouterr().out
    again = {o["name"]: o for o in json.loads((kept / "report.json").read_text())["organs"]}
    assert set(again) == set(organs)
    for name, o in again.items():
        assert (kept / o["file"]).is_file()
        assert o["plausible"] == organs[name]["plausible"]


@pytest.mark.slow
def test_a_head_ct_gives_no_plausible_abdominal_organ(tmp_path, data_dir, capsys):
    out = tmp_path / "head"
    code = main(["reconstruct", str(data_dir / "dcm_qa_ct_ge" / "GE"), "-o", str(out), "--quiet", "--no-preview"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("medrecon: error: no plausible abdominal organ in this study; is it an abdominal CT?")
    rep = json.loads((out / "report.json").read_text())
    assert rep["organs"] and not any(o["plausible"] for o in rep["organs"])
    assert not any("file" in o for o in rep["organs"]) and rep["print_ready"] is False
    assert not (out / "meshes").exists() or not any((out / "meshes").iterdir())
    liver = [o for o in rep["organs"] if o["name"] == "liver"]
    if liver:  # the brain, labelled liver by the abdominal model, sits on the midline
        assert any("wrong side" in r for r in liver[0]["reasons"])


@pytest.mark.slow
def test_batch_fails_a_study_without_plausible_organs(tmp_path, data_dir):
    from medrecon.batch import discover_studies, run_batch

    studies_dir = tmp_path / "studies"
    shutil.copytree(data_dir / "dcm_qa_ct_ge" / "GE", studies_dir / "head")
    summary = run_batch(discover_studies(studies_dir), tmp_path / "batch",
                        config=ReconstructConfig(preview=False), show_progress=False)
    assert summary.exit_code == 1 and len(summary.failed) == 1
    assert "no plausible abdominal organ in this study" in summary.failed[0]["error"]


def test_segment_leaves_implausible_organs_out_of_its_labels(tmp_path, totalseg_dir, capsys):
    ct = totalseg_dir / "example_ct_dicom"
    seg, rep_path = tmp_path / "seg.nii.gz", tmp_path / "report.json"
    assert main(["segment", str(ct), "-o", str(seg), "--quiet", "--report", str(rep_path)]) == 0
    printed = capsys.readouterr().out
    rep = json.loads(rep_path.read_text())
    organs = {o["name"]: o for o in rep["organs"]}
    assert organs["liver"]["plausible"] and organs["liver"]["kept"]
    rejected = [o for o in organs.values() if not o["plausible"]]
    assert rejected
    # the same verdicts, in the same fields, as reconstruct's report and check_organs on the same labels
    volume = load(ct)
    scored = NetworkSource().segment_scored(volume)
    checks = {c.name: c for c in check_organs(scored.labels, volume, confidence=scored.confidence).values()}
    assert set(checks) == set(organs)
    for name, o in organs.items():
        assert {k: o[k] for k in ("plausible", "reasons", "cut_at_edge", "confidence")} == \
            checks[name].report_fields()
        assert o["kept"] == o["plausible"] and o["label_volume_ml"] > 0 and "file" not in o
        assert (f"{name}: plausible" if o["plausible"] else f"{name}: left out, implausible") in printed
    # the written map holds the plausible organs only, voxel for voxel the model's
    written = load_labels(seg)
    model = np.asarray(scored.labels.array)
    keep = [o["label"] for o in organs.values() if o["plausible"]]
    assert np.array_equal(np.asarray(written.array), np.where(np.isin(model, keep), model, 0))
    assert set(json.loads((tmp_path / "seg.json").read_text())) == {str(k) for k in keep}
    # --keep-implausible writes every organ, still marked
    assert main(["segment", str(ct), "-o", str(tmp_path / "all.nii.gz"), "--quiet", "--keep-implausible"]) == 0
    assert np.array_equal(np.asarray(load_labels(tmp_path / "all.nii.gz").array), model)
    assert "implausible (" in capsys.readouterr().out


@pytest.mark.slow
def test_segment_on_a_head_ct_writes_nothing_and_fails(tmp_path, data_dir, capsys):
    seg, rep_path = tmp_path / "head.nii.gz", tmp_path / "report.json"
    code = main(["segment", str(data_dir / "dcm_qa_ct_ge" / "GE"), "-o", str(seg), "--quiet",
                 "--report", str(rep_path)])
    captured = capsys.readouterr()
    assert code == 1
    err = captured.err.strip().splitlines()
    assert err[-1].startswith("medrecon: error: no plausible abdominal organ in this study; is it an abdominal CT?")
    assert not seg.exists()
    rep = json.loads(rep_path.read_text())
    assert rep["organs"] and not any(o["plausible"] or o["kept"] for o in rep["organs"])
    for o in rep["organs"]:
        assert f"{o['name']}: left out, implausible ({'; '.join(o['reasons'])})" in captured.out


def test_segment_study_with_a_preset_labels_the_hu_range_and_refuses_mr(data_dir, totalseg_dir):
    ct = load(totalseg_dir / "example_ct_sm.nii.gz")
    result = segment_study(ct, config=ReconstructConfig.for_preset("bone"))
    bone = np.asarray(result.labels.array) > 0
    hu = np.asarray(ct.array)
    # presets get the modality check, not the organ checks: the mask is the preset's own
    assert bone.any() and np.median(hu[bone]) > 300
    assert not any("plausible" in o and not o["plausible"] for o in result.report["organs"])
    assert np.mean(hu[bone] < 150) < 0.05  # what the bone preset promises on real CTs
    with pytest.raises(ImageKindError, match="not a CT"):
        segment_study(load(data_dir / "nibabel_mr" / "anatomical.nii"), config=ReconstructConfig.for_preset("bone"))


def test_mr_is_refused_by_the_ct_model_and_the_presets(tmp_path, data_dir, capsys):
    t1 = np.asarray(load(data_dir / "nibabel_mr" / "anatomical.nii").array)  # real T1 MR, scanner units
    write_series(tmp_path / "mr", z_positions(t1.shape[2], dz=2.0), values=lambda k: t1[:, :, k].T,
                 modality="MR", intercept=0.0)
    mr_dicom = load(tmp_path / "mr")
    assert mr_dicom.modality == "MR"
    for config in (ReconstructConfig(), ReconstructConfig.for_preset("bone")):
        with pytest.raises(ImageKindError, match="not a CT.*--labels.*totalsegmentator:total_mr"):
            reconstruct(mr_dicom, None, config=config)
    mr_nifti = data_dir / "nibabel_mr" / "anatomical.nii"
    assert load(mr_nifti).modality == ""  # nothing in the file says MR: the intensities must
    for extra in ([], ["--preset", "bone"]):
        assert main(["reconstruct", str(mr_nifti), "-o", str(tmp_path / "o"), "--quiet", *extra]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not a CT" in err[0] and "--modality CT" in err[0]
    assert main(["segment", str(mr_nifti), "-o", str(tmp_path / "seg.nii.gz"), "--quiet"]) == 1
    assert "not a CT" in capsys.readouterr().err
    assert not (tmp_path / "seg.nii.gz").exists()
    # --modality CT is the user's word for a file that has none
    assert require_ct(load(mr_nifti), what="x", override="CT").kind == "ct"


def test_imported_labels_are_warned_about_never_rejected(tmp_path, totalseg_dir):
    volume = load(totalseg_dir / "example_ct_sm.nii.gz")
    truth = load_labels(totalseg_dir / "example_seg.nii.gz").resample_like(volume)
    arr = np.asarray(truth.array)
    swapped = np.where(arr == 5, 1, np.where(arr == 1, 5, 0)).astype(arr.dtype)  # liver <-> spleen
    save(LabelMap(swapped, truth.affine, names={1: "spleen", 5: "liver"}), tmp_path / "wrong.nii.gz")
    with pytest.warns(UserWarning, match="implausible organs in the given labels"):
        result = reconstruct(volume, tmp_path / "out",
                             config=ReconstructConfig.for_labels(tmp_path / "wrong.nii.gz", preview=False))
    organs = {o["name"]: o for o in result.report["organs"]}
    assert set(organs) == {"liver", "spleen"}
    for o in organs.values():
        assert o["plausible"] is False and any("wrong side" in r for r in o["reasons"])
        assert (tmp_path / "out" / o["file"]).is_file() and "confidence" not in o



def test_imported_labels_on_an_mr_are_not_refused(tmp_path, data_dir):
    mr = load(data_dir / "nibabel_mr" / "anatomical.nii")
    block = np.zeros(mr.shape, np.uint8)
    block[10:20, 12:28, 8:16] = 5
    save(LabelMap(block, mr.affine, names={5: "liver"}), tmp_path / "mine.nii.gz")
    with pytest.warns(UserWarning, match="liver"):
        result = reconstruct(mr, tmp_path / "out",
                             config=ReconstructConfig.for_labels(tmp_path / "mine.nii.gz", preview=False))
    (liver,) = result.report["organs"]
    assert liver["plausible"] is False and (tmp_path / "out" / liver["file"]).is_file()


def test_auto_planes_follow_the_models_confidence(monkeypatch, totalseg_dir):
    assert choose_fusion({"axial": 0.97, "all": 0.94})
    assert not choose_fusion({"axial": 0.89, "all": 0.54})
    assert choose_fusion({"axial": math.nan, "all": 0.5})  # the axial pass found nothing to prefer
    assert not choose_fusion({"axial": 0.9, "all": math.nan})
    # a real study, with the slab rule out of the way: the coronal and sagittal passes
    # disagree with the axial one, fusion loses confidence and auto keeps axial, which
    # is the better answer against TotalSegmentator's labels
    import medrecon.models.inference as inference

    monkeypatch.setattr(inference, "AUTO_FUSION_MIN_MM", 0.0)
    volume = load(totalseg_dir / "example_ct_sm.nii.gz")
    truth = np.asarray(load_labels(totalseg_dir / "example_seg.nii.gz").resample_like(volume).array)
    auto = segment_scored(volume, planes="auto")
    fused = segment_scored(volume, planes="all")
    assert auto.planes == ("axial",) and fused.planes == ("axial", "coronal", "sagittal")
    assert auto.plane_confidence["all"] < auto.plane_confidence["axial"] - inference.AUTO_FUSION_MAX_DROP
    for label in (2, 3):  # kidneys: 0.57 / 0.61 axial, near 0 fused (issue 12)
        a = dice(np.asarray(auto.labels.array) == label, truth == label)
        f = dice(np.asarray(fused.labels.array) == label, truth == label)
        assert a > f + 0.2


def _constant_model(probs: list[float]) -> SegModel:
    """A "network" whose logits are log(probs) at every voxel: its confidence is known exactly."""
    spec = NetSpec("unet2d", 3, len(probs), {"channels": [4, 8], "strides": [2], "num_res_units": 0})
    card = ModelCard(net=spec.to_dict(), labels={1: "spleen", 5: "liver"}, channel_ids=(0, 1, 5),
                     spacing_mm=(4.0, 4.0, 4.0), context=3, planes=("axial", "coronal", "sagittal"))
    logits = torch.log(torch.tensor(probs))

    class Constant(torch.nn.Module):
        def forward(self, x):
            n, _, h, w = x.shape
            return logits.view(1, -1, 1, 1).expand(n, -1, h, w).clone()

    return SegModel(network=Constant().eval(), card=card)


@pytest.mark.parametrize("planes, upsample", [("axial", "nearest"), ("all", "linear"), ("auto", "linear")])
def test_confidence_is_the_mean_top_class_probability(small_phantom, planes, upsample):
    volume, _ = small_phantom
    model = _constant_model([0.1, 0.2, 0.7])  # liver wins everywhere with probability 0.7
    scored = segment_scored(volume, model=model, planes=planes, upsample=upsample)
    assert set(np.unique(np.asarray(scored.labels.array))) == {5}
    assert scored.confidence.keys() == {5}
    assert scored.confidence[5] == pytest.approx(0.7, abs=1e-3)


@pytest.mark.slow
def test_the_confidence_check_flags_the_bad_organs_of_an_unseen_phantom():
    # seed 700444: the bad case (spleen 0.880, left kidney 0.877, aorta 0.844)
    volume, truth = make_phantom(700444)
    scored = segment_scored(volume)
    checks = check_organs(scored.labels, volume, confidence=scored.confidence)
    pred, gt = np.asarray(scored.labels.array), np.asarray(truth.array)
    bad = set()
    for label, check in checks.items():
        if check.name != "pancreas" and dice(pred == label, gt == label) < 0.93:
            assert any("the model is unsure" in r for r in check.reasons), (check.name, check.confidence)
            bad.add(check.name)
    assert {"spleen", "kidney_left", "aorta"} <= bad


@pytest.mark.parametrize("lab_order", ["C", "F"])
@pytest.mark.parametrize("hu_order", ["C", "F"])
def test_label_sums_are_the_same_in_every_array_order(lab_order, hu_order):
    from medrecon.sources.measure import label_sums

    rng = np.random.default_rng(0)
    lab = rng.integers(0, 12, (60, 50, 40)).astype(np.uint8)
    lab[lab < 5] = 0
    hu = rng.normal(0.0, 100.0, lab.shape).astype(np.float32)
    counts, sums = label_sums(np.asarray(lab, order=lab_order), np.asarray(hu, order=hu_order))
    assert np.array_equal(counts[5:], np.bincount(lab.ravel(), minlength=12)[5:])
    np.testing.assert_allclose(sums[5:], np.bincount(lab.ravel(), weights=hu.ravel(), minlength=12)[5:])
