"""Real CT data: our DICOM geometry against grids made by dcm2niix and 3D Slicer."""

from __future__ import annotations

import nibabel as nib
import nrrd
import numpy as np
import pytest

from medrecon.io.dicom import list_series, load_dicom
from medrecon.io.dicom_seg import read_seg
from medrecon.volume import LPS_TO_RAS, LabelMap


@pytest.fixture(scope="module")
def totalseg_ct(totalseg_dir):
    return load_dicom(totalseg_dir / "example_ct_dicom")


@pytest.fixture(scope="module")
def totalseg_labels(totalseg_dir):
    """TotalSegmentator's labels on dcm2niix's grid, read with nibabel (RAS -> LPS here)."""
    img = nib.load(totalseg_dir / "example_seg_dicom.nii.gz")
    return LabelMap(np.asarray(img.dataobj), LPS_TO_RAS @ img.affine)


def _nrrd_labels(path) -> LabelMap:
    """A Slicer NRRD label map read with pynrrd (its space is LPS)."""
    data, header = nrrd.read(str(path))
    assert header["space"] == "left-posterior-superior"
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(header["space directions"], dtype=float).T
    affine[:3, 3] = header["space origin"]
    return LabelMap(data, affine)


def test_jpeg2000_ct_matches_dcm2niix_grid(totalseg_ct, totalseg_labels):
    vol = totalseg_ct
    assert vol.modality == "CT" and vol.units == "HU" and vol.array.dtype == np.float32
    # dcm2niix flips the row axis for display; the voxel centres must be the same points
    assert vol.orientation == "LPS" and totalseg_labels.orientation == "LAS"
    same = vol.reorient(totalseg_labels.orientation)
    assert same.shape == totalseg_labels.shape == (512, 512, 20)
    np.testing.assert_allclose(same.affine, totalseg_labels.affine, atol=1e-3)
    np.testing.assert_allclose(vol.spacing, [0.9765625, 0.9765625, 2.0], atol=1e-6)


def test_hounsfield_units_inside_organs(totalseg_ct, totalseg_labels):
    hu = np.asarray(totalseg_ct.reorient(totalseg_labels.orientation).array)
    labels = np.asarray(totalseg_labels.array)
    liver = float(hu[labels == 5].mean())
    aorta = float(hu[labels == 52].mean())
    assert 80 <= liver <= 160  # contrast-enhanced liver
    assert aorta > liver + 30  # contrast in the aorta
    assert -1024 <= hu.min() and hu.max() < 3100  # HU = raw - 1024, never raw


def test_left_right_not_flipped(totalseg_ct, totalseg_labels):
    """The liver lies on the patient's right (-x in LPS) of the spleen, in our own grid."""
    labels = totalseg_labels.resample_like(totalseg_ct)  # onto our grid, nearest neighbour
    liver = totalseg_ct.voxel_to_world(np.argwhere(labels.array == 5).mean(0)[None])[0]
    spleen = totalseg_ct.voxel_to_world(np.argwhere(labels.array == 1).mean(0)[None])[0]
    assert liver[0] < spleen[0] - 50
    # and the labels really sit on liver/spleen tissue in our grid (no flip of any axis)
    assert 80 <= float(totalseg_ct.array[labels.array == 5].mean()) <= 160
    assert 60 <= float(totalseg_ct.array[labels.array == 1].mean()) <= 200


def test_ge_three_slices_share_the_slicer_label_grid(dcmqi_dir):
    ct = load_dicom(dcmqi_dir / "ct-3slice")
    assert ct.shape == (512, 512, 3)
    for name in ("liver_seg.nrrd", "spine_seg.nrrd", "heart_seg.nrrd", "liver_spine_seg.nrrd"):
        labels = _nrrd_labels(dcmqi_dir / name)
        assert ct.same_grid(labels, atol=1e-3), name
    liver = _nrrd_labels(dcmqi_dir / "liver_seg.nrrd")
    assert 20 <= float(ct.array[liver.array == 1].mean()) <= 200  # soft tissue HU


def test_folder_with_seg_and_ct_picks_the_ct(dcmqi_dir):
    infos = list_series(dcmqi_dir)
    assert sorted((s.modality, s.volume_like) for s in infos) == [("CT", True), ("SEG", False)]
    assert load_dicom(dcmqi_dir).modality == "CT"


def test_dicom_seg_matches_slicer_labels(dcmqi_dir):
    seg = read_seg(dcmqi_dir / "liver.dcm")
    ref = _nrrd_labels(dcmqi_dir / "liver_seg.nrrd")
    assert dict(seg.names) == {1: "liver"}  # segment 1 "Liver" keeps its number
    assert seg.same_grid(ref, atol=1e-3)
    np.testing.assert_array_equal(seg.array == 1, ref.array == 1)
    assert seg.same_grid(load_dicom(dcmqi_dir / "ct-3slice"), atol=1e-3)


def test_series_without_uid_can_be_chosen_beside_another(tmp_path, totalseg_dir, dcmqi_dir):
    # the TotalSegmentator example was anonymised without a SeriesInstanceUID
    import shutil

    from medrecon.errors import SeriesSelectionError

    shutil.copytree(totalseg_dir / "example_ct_dicom", tmp_path / "a")
    shutil.copytree(dcmqi_dir / "ct-3slice", tmp_path / "b")
    with pytest.raises(SeriesSelectionError, match="--series NOUID"):
        load_dicom(tmp_path)
    volume = load_dicom(tmp_path, series="NOUID")
    assert volume.shape == (512, 512, 20)
    assert load_dicom(tmp_path, series="auto").shape[2] == 3  # CT, then thinnest slices (1 mm < 2 mm)
