"""Bad DICOM input gives clean errors of our own, before any large allocation."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pydicom
import pytest
from _builders import write_series, z_positions

from medrecon.errors import DicomError, InputError, ResourceLimitError
from medrecon.io.dicom import load_dicom, looks_like_dicom
from medrecon.io.dicom_pixels import read_frames
from medrecon.io.dicom_scan import scan


def test_text_file_named_dcm(tmp_path):
    bad = tmp_path / "notes.dcm"
    bad.write_text("this is not an image\n" * 20)
    assert not looks_like_dicom(bad)
    with pytest.raises(DicomError, match="not a DICOM file"):
        load_dicom(bad)


def test_empty_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "README.txt").write_text("nothing here")
    with pytest.raises(InputError, match="no DICOM files found in"):
        load_dicom(tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_dicom(tmp_path / "nope")


def test_truncated_pixel_data(tmp_path):
    _, paths = write_series(tmp_path, z_positions(3))
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 50])
    with pytest.raises(DicomError, match="truncated"):
        load_dicom(tmp_path)


def test_truncated_header_single_file(tmp_path):
    _, paths = write_series(tmp_path, z_positions(3))
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[:300])
    with pytest.raises(DicomError, match="truncated|not a readable|no volume"):
        load_dicom(paths[0])


def test_truncated_file_in_folder_is_skipped_with_warning(tmp_path):
    _, paths = write_series(tmp_path, z_positions(4))
    paths[3].write_bytes(paths[3].read_bytes()[:200])  # header cut: unreadable
    with pytest.warns(UserWarning, match="could not be read"):
        vol = load_dicom(tmp_path)
    assert vol.shape[2] == 3 and len(vol.meta["skipped_files"]) == 1


def test_header_larger_than_pixel_data(tmp_path):
    _, paths = write_series(tmp_path, z_positions(3))
    ds = pydicom.dcmread(paths[2])
    ds.Rows = 400  # claims 400 x 10 pixels, holds 12 x 10
    ds.save_as(paths[2])
    # a different size splits it off; load that part alone to reach the pixel check
    frames = [f for f in scan(paths[2]).frames]
    with pytest.raises(DicomError, match="declares"):
        read_frames(frames)


def test_size_limit_checked_before_allocation(tmp_path, monkeypatch):
    write_series(tmp_path, z_positions(3))
    monkeypatch.setenv("MEDRECON_MAX_VOXELS", "300")  # 3 slices of 12 x 10 = 360 voxels
    with pytest.raises(ResourceLimitError, match="MEDRECON_MAX_VOXELS"):
        load_dicom(tmp_path)


def test_huge_multiframe_claim_refused(tmp_path):
    _, paths = write_series(tmp_path, z_positions(1))
    ds = pydicom.dcmread(paths[0])
    ds.NumberOfFrames = 2_000_000
    ds.Rows = ds.Columns = 4096
    ds.save_as(paths[0])
    with pytest.raises(ResourceLimitError):
        read_frames(scan(paths[0]).frames)


def test_bad_orientation(tmp_path):
    write_series(tmp_path, z_positions(3), orientation=(1, 0, 0, 1, 0, 0))
    with pytest.raises(DicomError, match="not two orthogonal directions"):
        load_dicom(tmp_path)


def test_positions_off_one_line(tmp_path):
    positions = [(0, 0, 0), (0, 0, 1.5), (40, 0, 3.0), (0, 0, 4.5)]
    write_series(tmp_path, positions)
    with pytest.raises(DicomError, match="not on one line"):
        load_dicom(tmp_path)


def test_segmentation_only_folder(dcmqi_dir):
    with pytest.raises(DicomError, match="no volume-like DICOM series"):
        load_dicom(dcmqi_dir / "liver.dcm")


def test_missing_codec_names_the_extra(totalseg_dir):
    """With every JPEG 2000 plugin hidden, decoding asks for medrecon[dicom-codecs]."""
    code = textwrap.dedent(f"""
        import sys
        for name in ("pylibjpeg", "openjpeg", "libjpeg", "PIL", "gdcm"):
            sys.modules[name] = None
        from medrecon.errors import MissingDependencyError
        from medrecon.io.dicom import load_dicom
        try:
            load_dicom({str(totalseg_dir / "example_ct_dicom")!r})
        except MissingDependencyError as exc:
            print("MISSING", exc.extra, exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "MISSING dicom-codecs" in out.stdout, out.stdout + out.stderr
    assert "pip install 'medrecon[dicom-codecs]'" in out.stdout


def test_listing_reads_headers_only(tmp_path):
    """Pixel data cut off in every file: listing still works, loading refuses."""
    _, paths = write_series(tmp_path, z_positions(3))
    for p in paths:
        p.write_bytes(p.read_bytes()[:-100])
    from medrecon.io.dicom import list_series

    assert [s.n_slices for s in list_series(tmp_path)] == [3]
    with pytest.raises(DicomError, match="truncated"):
        load_dicom(tmp_path)
