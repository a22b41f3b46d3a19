"""``medrecon info`` and ``medrecon convert``: output, errors, and no heavy imports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

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
        # nibabel, pydicom and scipy too: their imports were most of a convert's time
        heavy = sorted(m for m in ("torch", "napari", "monai", "vtk", "PyQt6", "SimpleITK",
                                   "nibabel", "pydicom", "scipy") if m in sys.modules)
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


def _dcm2niix() -> str:
    beside = Path(sys.executable).with_name("dcm2niix")
    found = str(beside) if beside.exists() else shutil.which("dcm2niix")
    if not found:
        pytest.skip("dcm2niix is not installed (pip install dcm2niix)")
    return found


def _raw_header(path: Path):
    # nibabel's loaded images move scl_slope/scl_inter into the data proxy; the raw header keeps them
    with open(path, "rb") as fh:
        return nib.Nifti1Header.from_fileobj(fh)


def test_convert_keeps_stored_int16_with_rescale_like_dcm2niix(tmp_path, capsys):
    from medrecon.io.dicom import load_dicom

    write_series(tmp_path / "ct", z_positions(6))  # int16 pixels, RescaleSlope 1, RescaleIntercept -1024
    assert main(["convert", str(tmp_path / "ct"), str(tmp_path / "ours.nii")]) == 0
    (tmp_path / "d2n").mkdir()
    subprocess.run([_dcm2niix(), "-z", "n", "-b", "n", "-f", "theirs", "-o", str(tmp_path / "d2n"),
                    str(tmp_path / "ct")], check=True, capture_output=True, timeout=120)
    ours_path, theirs_path = tmp_path / "ours.nii", tmp_path / "d2n" / "theirs.nii"
    ours, theirs = _raw_header(ours_path), _raw_header(theirs_path)
    for field in ("datatype", "bitpix", "scl_slope", "scl_inter", "xyzt_units", "vox_offset"):
        assert ours[field] == theirs[field], field
    assert ours.get_data_dtype() == np.int16 and (ours["scl_slope"], ours["scl_inter"]) == (1, -1024)
    # values: nibabel's scaling of our integers is medrecon's HU volume, and dcm2niix's voxels
    hu = load_dicom(tmp_path / "ct").array
    img = nib.load(ours_path)
    assert np.array_equal(img.get_fdata(), hu)
    a, b = nib.as_closest_canonical(img), nib.as_closest_canonical(nib.load(theirs_path))
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    assert np.array_equal(a.get_fdata(), b.get_fdata())
    assert ours_path.stat().st_size == theirs_path.stat().st_size


def test_seg_error_says_what_to_do_on_the_command_line(dcmqi_dir, tmp_path, capsys):
    assert main(["convert", str(dcmqi_dir / "liver.dcm"), str(tmp_path / "x.nii.gz")]) == 1
    err = capsys.readouterr().err
    assert "convert --labels" in err and "read_seg" not in err


def test_debug_works_before_and_after_the_subcommand(tmp_path, capsys):
    for argv in (["--debug", "info", str(tmp_path)], ["info", str(tmp_path), "--debug"],
                 ["info", str(tmp_path)]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.rstrip().endswith(f"medrecon: error: no DICOM files found in {tmp_path}")
        assert ("Traceback" in err) == ("--debug" in argv)


def _block(k: int) -> np.ndarray:
    raw = np.full((32, 32), 1000, np.int16)  # -24 HU
    raw[8:24, 8:24] = 2000  # 976 HU: bone for the bone preset
    return raw


def test_reconstruct_names_its_series_and_shows_clean_warnings(tmp_path, capsys):
    from medrecon.io.dicom_series import AUTO_RULE

    missing_slice = [(0.0, 0.0, float(z)) for z in (0, 1, 2, 3, 4, 6, 7, 8, 9, 10)]
    uid, _ = write_series(tmp_path / "in" / "a", missing_slice, values=_block, series_number=7,
                          description="thin")
    write_series(tmp_path / "in" / "b", z_positions(6, dz=2.0), values=_block, series_number=8,
                 description="thick")
    for keep_phi in (False, True):
        argv = ["reconstruct", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--preset", "bone",
                "--no-preview", "--quiet"] + ["--keep-phi"] * keep_phi
        assert main(argv) == 0
        err = capsys.readouterr().err
        warnings_shown = [line for line in err.splitlines() if "warning" in line.lower()]
        assert warnings_shown and all(w.startswith("medrecon: warning: DICOM series") for w in warnings_shown)
        assert "UserWarning" not in err and "warnings.warn" not in err
        (note,) = [line for line in err.splitlines() if "using series" in line]
        assert note.startswith("medrecon: using series #7 CT 'thin'") and "--series auto" in note
        assert "also in the input: #8 CT 'thick'" in note
        series = json.loads((tmp_path / "out" / "report.json").read_text())["series"]
        assert series["series_number"] == 7 and series["chosen_by"] == AUTO_RULE
        assert series["other_series"] == 1 and series["modality"] == "CT"
        if keep_phi:
            assert series["series_uid"] == uid and series["series_description"] == "thin"
        else:
            assert "series_uid" not in series and "series_description" not in series
