"""reconstruct() on the real CT (bone preset, TotalSegmentator labels) and on the sample study."""

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
import trimesh

from medrecon.errors import EmptySegmentationError, InputError
from medrecon.mesh import MeshOptions
from medrecon.pipeline import DISCLAIMER, ReconstructConfig, reconstruct
from medrecon.volume import LPS_TO_RAS, LabelMap, Volume

BONE_PREFIXES = ("vertebrae", "rib", "sacrum", "hip", "femur", "sternum", "scapula", "clavicula",
                 "humerus", "skull", "costal")


@pytest.fixture(scope="module")
def dicom_hu(totalseg_dir):
    """HU lookup at LPS points on the real CT, decoded with plain pydicom (not medrecon)."""
    slices = [pydicom.dcmread(f) for f in sorted((totalseg_dir / "example_ct_dicom").iterdir())]
    slices.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    z = np.array([float(d.ImagePositionPatient[2]) for d in slices])
    d0 = slices[0]
    row_dir, col_dir = np.array(d0.ImageOrientationPatient[:3], float), np.array(d0.ImageOrientationPatient[3:], float)
    dr, dc = (float(v) for v in d0.PixelSpacing)  # row spacing, column spacing
    ipp = np.array(d0.ImagePositionPatient, float)
    stack = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in slices])

    def at(points_lps):
        k = np.abs(points_lps[:, 2][:, None] - z[None]).argmin(1)
        col = np.rint((points_lps - ipp) @ row_dir / dc).astype(int)
        row = np.rint((points_lps - ipp) @ col_dir / dr).astype(int)
        return stack[k, row, col]

    return at


def _all_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_bone_preset_on_real_dicom(tmp_path, totalseg_dir, dicom_hu):
    out = tmp_path / "bone"
    cfg = ReconstructConfig.for_preset("bone", preview=False, mesh=MeshOptions(iso_spacing=2.0))
    result = reconstruct(totalseg_dir / "example_ct_dicom", out, config=cfg)
    assert _all_files(out) == ["labels.json", "labels.nii.gz", "meshes/bone.stl", "report.json"]
    mesh = trimesh.load(out / "meshes" / "bone.stl")
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    # TotalSegmentator's bone labels of this CT: the threshold bone is plausible against them
    seg = nib.load(totalseg_dir / "example_seg_dicom.nii.gz")
    names = json.loads((totalseg_dir / "class_map_total.json").read_text())
    bone_ids = [int(k) for k, v in names.items() if v.startswith(BONE_PREFIXES)]
    ts_bone_ml = np.isin(np.asarray(seg.dataobj), bone_ids).sum() * np.prod(seg.header.get_zooms()) / 1000
    rep = result.report["organs"][0]
    assert rep["name"] == "bone" and rep["label"] == 200 and rep["watertight"]
    assert 0.35 * ts_bone_ml < rep["mesh_volume_ml"] < 1.2 * ts_bone_ml
    assert abs(mesh.volume / 1000 - rep["mesh_volume_ml"]) < 1e-3 * rep["mesh_volume_ml"]
    # the written label map lies on the DICOM grid and its bone voxels are bone by pydicom's HU
    lab = nib.load(out / "labels.nii.gz")
    assert lab.shape == (512, 512, 20)
    ijk = np.argwhere(np.asarray(lab.dataobj) == 200)[::50]
    lps = (LPS_TO_RAS @ lab.affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]
    assert np.median(dicom_hu(lps)) > 300
    assert json.loads((out / "labels.json").read_text()) == {"200": "bone"}
    report = json.loads((out / "report.json").read_text())
    assert report["disclaimer"] == DISCLAIMER
    assert report["method"] == "preset" and report["presets"][0]["hu"] == [300.0, 3000.0]
    assert "bone" in report["presets"][0]["description"]
    assert "series_uid" not in report["input"] and "source" not in report["input"]
    assert report["input"]["shape"] == [512, 512, 20]
    assert np.allclose(report["input"]["spacing_mm"], [0.976562, 0.976562, 2.0], atol=1e-5)
    assert {"load", "preset", "meshes", "export", "total"} <= set(report["timings_s"])


def test_totalsegmentator_labels_with_names_on_real_dicom(tmp_path, totalseg_dir, dicom_hu):
    out = tmp_path / "ts"
    cfg = ReconstructConfig.for_labels(totalseg_dir / "example_seg_dicom.nii.gz",
                                       names=totalseg_dir / "class_map_total.json",
                                       organs=("liver", "spleen"), mesh=MeshOptions(iso_spacing=2.0))
    result = reconstruct(totalseg_dir / "example_ct_dicom", out, config=cfg)
    assert (out / "meshes" / "liver.stl").is_file() and (out / "meshes" / "spleen.stl").is_file()
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "meshes").iterdir()) == ["liver.stl", "spleen.stl"]
    seg = nib.load(totalseg_dir / "example_seg_dicom.nii.gz")
    arr = np.asarray(seg.dataobj)
    voxel_ml = float(np.prod(seg.header.get_zooms())) / 1000
    by_name = {o["name"]: o for o in result.report["organs"]}
    for name, label in (("liver", 5), ("spleen", 1)):
        truth_ml = (arr == label).sum() * voxel_ml
        assert by_name[name]["label"] == label
        assert by_name[name]["voxel_volume_ml"] == pytest.approx(truth_ml, rel=1e-6)
        assert by_name[name]["mesh_volume_ml"] == pytest.approx(truth_ml, rel=0.05)
        assert trimesh.load(out / "meshes" / f"{name}.stl").is_watertight
        # mean HU in the report agrees with pydicom's pixels under TotalSegmentator's mask
        ijk = np.argwhere(arr == label)
        lps = (LPS_TO_RAS @ seg.affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]
        truth_hu = dicom_hu(lps).mean()
        assert by_name[name]["mean_hu"] == pytest.approx(truth_hu, abs=0.5)
    assert 40 < by_name["liver"]["mean_hu"] < 200  # contrast-enhanced parenchyma
    # labels.nii.gz holds only the chosen organs, on the input (DICOM) grid
    lab = nib.load(out / "labels.nii.gz")
    assert set(np.unique(np.asarray(lab.dataobj))) == {0, 1, 5}
    assert np.allclose(LPS_TO_RAS @ lab.affine, result.volume.affine, atol=1e-4)
    assert json.loads((out / "labels.json").read_text()) == {"1": "spleen", "5": "liver"}


def _ball_volume():
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in (40, 40, 30)], indexing="ij"), -1)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    hu = np.full((40, 40, 30), 40.0, np.float32)
    centre = np.array([20, 20, 15]) * [1.5, 1.5, 2.0]
    r = np.linalg.norm(ijk * [1.5, 1.5, 2.0] - centre, axis=-1)
    hu[r <= 12] = 800.0
    return Volume(hu, affine, modality="CT", units="HU"), 4 / 3 * np.pi * 12**3


def test_in_memory_run_returns_everything_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    vol, truth_mm3 = _ball_volume()
    result = reconstruct(vol, None, config=ReconstructConfig.for_preset("bone"))
    assert result.outdir is None and result.mesh_files == []
    assert list(tmp_path.iterdir()) == []
    assert result.labels.same_grid(vol) and result.labels.names == {200: "bone"}
    organ = result.organ_meshes[0]
    assert organ.name == "bone" and organ.trimesh().is_watertight
    assert organ.trimesh().volume == pytest.approx(truth_mm3, rel=0.05)
    rep = result.report
    assert rep["organs"][0]["mean_hu"] == pytest.approx(800.0)
    assert rep["print_ready"] is True and rep["units"] == "mm" and rep["frame"] == "LPS"
    json.dumps(rep, allow_nan=False)


def test_ras_frame_and_obj_format(tmp_path):
    vol, _ = _ball_volume()
    out = tmp_path / "o"
    (out / "meshes").mkdir(parents=True)
    (out / "meshes" / "liver.stl").write_bytes(b"left by an earlier run")
    res = reconstruct(vol, out, config=ReconstructConfig.for_preset("bone", fmt="obj", frame="RAS", preview=False))
    assert [p.name for p in (out / "meshes").iterdir()] == ["bone.obj"]  # no stale mesh beside the report
    mesh = trimesh.load(out / "meshes" / "bone.obj", force="mesh")
    lps = res.organ_meshes[0].trimesh()
    assert np.allclose(mesh.bounds[:, 2], lps.bounds[:, 2], atol=1e-3)
    assert np.allclose(np.sort(-mesh.bounds[:, 0]), lps.bounds[:, 0], atol=1e-3)
    assert res.report["frame"] == "RAS"


def test_organ_selection_errors(totalseg_dir):
    vol, _ = _ball_volume()
    with pytest.raises(InputError, match="no label named 'liver'"):
        reconstruct(vol, None, config=ReconstructConfig.for_preset("bone", organs=("liver",)))
    air = vol.replace(array=np.full(vol.shape, -1000.0, np.float32))
    with pytest.raises(EmptySegmentationError):
        reconstruct(air, None, config=ReconstructConfig.for_preset("bone"))
    with pytest.raises(ValueError, match="method 'labels' needs"):
        ReconstructConfig(method="labels")


def test_demo_default_model_on_sample_study(tmp_path, sample_dir, capsys):
    """``medrecon demo``: the sample study through the default model to STL files."""
    from medrecon.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"STL files: {out / 'meshes'}" in printed
    report = json.loads((out / "report.json").read_text())
    names = {o["name"] for o in report["organs"]}
    assert {"liver", "spleen"} <= names
    assert report["model"]["name"] == "default" and report["method"] == "model"
    truth = nib.load(sample_dir / "labels.nii.gz")
    liver_truth_ml = (np.asarray(truth.dataobj) == 5).sum() * np.prod(truth.header.get_zooms()) / 1000
    liver = next(o for o in report["organs"] if o["name"] == "liver")
    assert liver["voxel_volume_ml"] == pytest.approx(liver_truth_ml, rel=0.25)
    assert all((out / o["file"]).is_file() and o["watertight"] for o in report["organs"])


def test_a_label_map_is_meshed_by_the_same_pipeline(tmp_path):
    vol, truth_mm3 = _ball_volume()
    ball = (np.asarray(vol.array) > 300).astype(np.uint8) * 7
    labels = LabelMap(ball, vol.affine, names={7: "ball"}, source=str(tmp_path / "patient" / "ball.nii.gz"))
    out = tmp_path / "o"
    res = reconstruct(labels, out, config=ReconstructConfig(fmt="ply", frame="RAS", merged=True))
    assert res.volume is None and res.labels.names == {7: "ball"}
    # meshes and report only: the labels are the input, and there is no image for a preview
    assert _all_files(out) == ["meshes/all_organs.ply", "meshes/ball.ply", "report.json"]
    rep = json.loads((out / "report.json").read_text())
    assert rep == res.report
    assert rep["method"] == "labels" and rep["input"] == "ball.nii.gz"  # no folder names
    assert rep["options"] == MeshOptions().to_dict() and rep["config"]["mesh"] == rep["options"]
    assert rep["merged_file"] == "meshes/all_organs.ply" and "preview_skipped" in rep
    (entry,) = rep["organs"]
    assert entry["name"] == "ball" and entry["file"] == "meshes/ball.ply" and "mean_hu" not in entry
    mesh = trimesh.load(out / "meshes" / "ball.ply", force="mesh")
    assert np.allclose(mesh.bounds, entry["bbox_mm"], atol=1e-4)  # RAS, as the file
    assert mesh.volume == pytest.approx(truth_mm3, rel=0.05)
    # the same mask reached through the bone preset gives the same mesh
    preset = reconstruct(vol, None, config=ReconstructConfig.for_preset("bone"))
    assert np.array_equal(preset.organ_meshes[0].mesh.vertices, res.organ_meshes[0].mesh.vertices)
    assert np.array_equal(preset.organ_meshes[0].mesh.faces, res.organ_meshes[0].mesh.faces)
