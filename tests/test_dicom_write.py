"""DICOM series writer, checked with independent readers (SimpleITK/GDCM and pydicom)."""

import warnings

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

from medrecon.errors import GeometryError, InputError
from medrecon.io.dicom_write import write_dicom_series
from medrecon.volume import Volume

sitk = pytest.importorskip("SimpleITK")


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _volume(direction: np.ndarray, *, shape=(20, 14, 6), spacing=(0.7, 0.9, 2.5), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    array = rng.integers(-1024, 2000, size=shape).astype(np.float32)
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction, float) * np.asarray(spacing)
    affine[:3, 3] = [-101.5, 37.25, -412.0]
    return Volume(array, affine, modality="CT", units="HU", description="writer test")


def _read_sitk(folder) -> tuple[np.ndarray, np.ndarray]:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    affine = np.eye(4)
    affine[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), affine  # SimpleITK arrays are (k, j, i)


def _assert_same_voxels(volume: Volume, array: np.ndarray, affine: np.ndarray) -> None:
    """Every voxel the other reader returns lies where ours does and holds the same value."""
    assert array.shape == volume.shape or sorted(array.shape) == sorted(volume.shape)
    ours = np.linalg.inv(volume.affine) @ affine  # their voxel index -> our voxel index
    assert np.allclose(ours[:3, :3], np.round(ours[:3, :3]), atol=1e-4), ours
    assert np.allclose(ours[:3, 3], np.round(ours[:3, 3]), atol=1e-3), ours
    idx = np.indices(array.shape).reshape(3, -1)
    mapped = np.rint(ours[:3, :3] @ idx + ours[:3, 3][:, None]).astype(int)
    assert mapped.min() >= 0 and np.all(mapped.max(axis=1) < np.array(volume.shape))
    np.testing.assert_array_equal(array.reshape(-1), np.asarray(volume.array)[tuple(mapped)])


ORIENTATIONS = {
    "LPS": np.eye(3),
    "RAI (flipped)": np.diag([-1.0, -1.0, -1.0]),
    "sagittal (k along x)": np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float),
    "left-handed (k against the normal)": np.diag([1.0, 1.0, -1.0]),
    "oblique": _rotation(0.3, -0.2, 0.5),
}


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_simpleitk_reads_the_same_geometry_and_values(tmp_path, name):
    volume = _volume(ORIENTATIONS[name])
    paths = write_dicom_series(volume, tmp_path)
    assert len(paths) == volume.shape[2]
    array, affine = _read_sitk(tmp_path)
    assert array.shape == volume.shape
    _assert_same_voxels(volume, array, affine)
    if np.linalg.det(volume.direction) > 0:  # slices already run along the normal: identical affine
        np.testing.assert_allclose(affine, volume.affine, atol=1e-4)


def test_pixel_layout_and_plane_tags(tmp_path):
    volume = _volume(np.eye(3), spacing=(0.7, 0.9, 2.5))
    paths = write_dicom_series(volume, tmp_path)
    ds = pydicom.dcmread(paths[2])
    # rows run along j, columns along i; PixelSpacing is (row spacing = j, column spacing = i)
    assert (ds.Rows, ds.Columns) == (14, 20)
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.9, 0.7])
    assert [float(v) for v in ds.ImageOrientationPatient] == pytest.approx([1, 0, 0, 0, 1, 0])
    assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx([-101.5, 37.25, -412.0 + 2 * 2.5])
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(hu, np.asarray(volume.array)[:, :, 2].T)


def test_series_has_the_modules_of_a_pacs_export(tmp_path):
    volume = _volume(np.eye(3))
    paths = write_dicom_series(volume, tmp_path, patient_name="DOE^JANE", patient_id="X1", series_number=7)
    sets = [pydicom.dcmread(p) for p in paths]
    first = sets[0]
    assert first.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert first.file_meta.MediaStorageSOPClassUID == CTImageStorage == first.SOPClassUID
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    for keyword in (
        "PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyTime", "Modality",
        "SeriesInstanceUID", "SeriesNumber", "FrameOfReferenceUID", "Manufacturer", "InstanceNumber",
        "ImageType", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness",
        "SpacingBetweenSlices", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
        "BitsStored", "HighBit", "PixelRepresentation", "RescaleIntercept", "RescaleSlope", "KVP",
    ):
        assert keyword in first, keyword
    assert str(first.PatientName) == "DOE^JANE" and first.Modality == "CT" and first.SeriesNumber == 7
    uids = {ds.SOPInstanceUID for ds in sets}
    assert len(uids) == len(sets)
    for ds in sets:
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID):
            assert UID(uid).is_valid
    assert len({ds.SeriesInstanceUID for ds in sets}) == 1
    assert [ds.InstanceNumber for ds in sets] == list(range(1, len(sets) + 1))
    assert float(first.SpacingBetweenSlices) == pytest.approx(2.5)


def test_long_descriptions_fit_their_vr(tmp_path):
    volume = _volume(np.eye(3)).replace(description="abdomen " * 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom warns on values longer than the VR allows
        paths = write_dicom_series(volume, tmp_path, study_description="study " * 20)
    ds = pydicom.dcmread(paths[0])
    assert ds.SeriesDescription == ("abdomen " * 20)[:64].rstrip() and ds.StudyDescription.startswith("study study")


def test_same_volume_gives_identical_files(tmp_path):
    volume = _volume(np.eye(3))
    a = write_dicom_series(volume, tmp_path / "a")
    b = write_dicom_series(volume, tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    other = write_dicom_series(volume.replace(array=np.asarray(volume.array) + 1), tmp_path / "c")
    assert pydicom.dcmread(other[0]).SeriesInstanceUID != pydicom.dcmread(a[0]).SeriesInstanceUID


def test_values_beyond_uint16_and_fractions(tmp_path):
    wide = _volume(np.eye(3)).replace(array=np.full((4, 3, 2), -3000.0, np.float32))
    paths = write_dicom_series(wide, tmp_path / "wide")
    ds = pydicom.dcmread(paths[0])
    assert ds.PixelRepresentation == 1
    assert np.all(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) == -3000)

    frac = np.linspace(-1.25, 3.75, 24, dtype=np.float32).reshape(4, 3, 2)
    paths = write_dicom_series(wide.replace(array=frac), tmp_path / "frac")
    array, _ = _read_sitk(tmp_path / "frac")
    slope = float(pydicom.dcmread(paths[0]).RescaleSlope)
    assert np.max(np.abs(array - frac)) <= slope


def test_refuses_what_dicom_cannot_hold(tmp_path):
    volume = _volume(np.eye(3))
    sheared = volume.affine.copy()
    sheared[:3, 1] = [0.3, 0.9, 0.0]
    with pytest.raises(GeometryError, match="orthogonal"):
        write_dicom_series(volume.replace(affine=sheared), tmp_path / "s")
    bad = np.asarray(volume.array).copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        write_dicom_series(volume.replace(array=bad), tmp_path / "n")
    with pytest.raises(InputError, match="CT"):
        write_dicom_series(volume.replace(modality="MR"), tmp_path / "m")
    assert not any((tmp_path / d).exists() and any((tmp_path / d).iterdir()) for d in "snm")


@pytest.mark.parametrize("name", ["left-handed (k against the normal)", "oblique", "sagittal (k along x)"])
def test_medrecon_loader_agrees(tmp_path, name):
    from medrecon.io import load

    volume = _volume(ORIENTATIONS[name])
    write_dicom_series(volume, tmp_path)
    loaded = load(tmp_path)
    assert loaded.units == "HU" and loaded.modality == "CT"
    _assert_same_voxels(volume, np.asarray(loaded.array), loaded.affine)
    image_type = pydicom.dcmread(sorted(tmp_path.iterdir())[0], stop_before_pixels=True).ImageType
    assert list(image_type)[2] == ("REFORMATTED" if name.startswith("sagittal") else "AXIAL")
