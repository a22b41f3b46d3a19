"""``medrecon info`` and ``medrecon convert``: output, errors, and no heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest
from _builders import write_series, z_positions

from medrecon.cli import main
from medrecon.volume import LPS_TO_RAS


def _info_json(capsys, *args) -> dict:
    assert main(["info", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_json_ge_series(dcmqi_dir, capsys):
    data = _info_json(capsys, str(dcmqi_dir))
    by_modality = {e["modality"]: e for e in data["series"]}
    assert set(by_modality) == {"CT", "SEG"}
    ct = by_modality["CT"]
    # values from the series' own headers (0.810547 mm pixels, 1 mm apart, first at z=-128.69)
    assert ct["uid"] == "1.2.392.200103.20080913.113635.1.2009.6.22.21.43.10.23430.1"
    assert ct["number"] == 2 and ct["n_slices"] == 3
    assert ct["shape"] == [512, 512, 3]
    np.testing.assert_allclose(ct["spacing"], [0.810547, 0.810547, 1.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(ct["affine"])[:3, 3], [-235.2, -226.8, -128.69],
                               atol=1e-3)
    assert ct["orientation"] == "LPS"
    lo, hi = ct["hu_range"]
    assert lo < -900 and 500 < hi < 3100
    assert by_modality["SEG"]["volume_like"] is False and by_modality["SEG"]["shape"] is None


def test_info_one_entry_per_series_and_selection(tmp_path, capsys):
    uid_a, _ = write_series(tmp_path / "a", z_positions(3), series_number=4)
    write_series(tmp_path / "b", z_positions(5, dz=0.5), series_number=5, modality="MR")
    data = _info_json(capsys, str(tmp_path))
    assert [(e["number"], e["modality"], e["shape"]) for e in data["series"]] == [
        (4, "CT", [10, 12, 3]), (5, "MR", [10, 12, 5])]
    assert data["series"][1]["hu_range"] is None  # MR values are not HU
    data = _info_json(capsys, str(tmp_path), "--series", uid_a)
    assert [e["number"] for e in data["series"]] == [4]
    assert main(["info", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "series #4 CT" in text and "series #5 MR" in text and "HU range" in text


def test_info_nifti(totalseg_dir, capsys):
    data = _info_json(capsys, str(totalseg_dir / "example_ct_sm.nii.gz"))
    (entry,) = data["series"]
    img = nib.load(totalseg_dir / "example_ct_sm.nii.gz")
    assert entry["shape"] == list(img.shape)
    np.testing.assert_allclose(entry["affine"], LPS_TO_RAS @ img.affine, atol=1e-4)


def test_convert_dicom_matches_dcm2niix(totalseg_dir, tmp_path, capsys):
    out = tmp_path / "ct.nii.gz"
    assert main(["convert", str(totalseg_dir / "example_ct_dicom"), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    ours = nib.as_closest_canonical(nib.load(out))
    ref = nib.as_closest_canonical(nib.load(totalseg_dir / "example_seg_dicom.nii.gz"))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-3)
    hu = np.asarray(ours.dataobj, dtype=np.float32)
    assert 80 <= hu[np.asarray(ref.dataobj) == 5].mean() <= 160


def test_convert_seg_labels(dcmqi_dir, tmp_path):
    out = tmp_path / "liver.nii.gz"
    assert main(["convert", str(dcmqi_dir / "liver.dcm"), str(out), "--labels"]) == 0
    assert json.loads((tmp_path / "liver.json").read_text()) == {"1": "liver"}  # segment number kept
    img = nib.load(out)
    assert int((np.asarray(img.dataobj) == 1).sum()) == 107098  # voxels in liver_seg.nrrd


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("medrecon: error: no DICOM files found in") and err.count("\n") == 1
    write_series(tmp_path / "a", z_positions(3))
    write_series(tmp_path / "b", z_positions(3))
    assert main(["convert", str(tmp_path), str(tmp_path / "x.nii.gz")]) == 1
    err = capsys.readouterr().err
    assert "choose one with --series" in err and not (tmp_path / "x.nii.gz").exists()


@pytest.mark.parametrize("command", ["info", "convert"])
def test_no_torch_or_napari_imported(dcmqi_dir, tmp_path, command):
    args = [str(dcmqi_dir / "ct-3slice")]
    if command == "convert":
        args.append(str(tmp_path / "ct.nii.gz"))
    code = textwrap.dedent(f"""
        import sys
        from medrecon.cli import main
        rc = main([{command!r}, *{args!r}])
        heavy = sorted(m for m in ("torch", "napari", "monai", "vtk", "PyQt6", "SimpleITK")
                       if m in sys.modules)
        print("RC", rc, "HEAVY", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "RC 0 HEAVY []" in out.stdout, out.stdout + out.stderr


def test_info_reports_a_broken_series_and_goes_on(tmp_path, capsys):
    write_series(tmp_path / "good", z_positions(3), series_number=1)
    write_series(tmp_path / "gappy", [(0, 0, z) for z in (0.0, 1.0, 2.0, 9.0)], series_number=2)
    data = _info_json(capsys, str(tmp_path))
    good, gappy = data["series"]
    assert good["shape"] == [10, 12, 3] and "error" not in good
    assert gappy["shape"] is None and "gap of 7.00 mm" in gappy["error"]
