"""DICOM loading on small synthetic series written with pydicom: known geometry, known values.

The series builders (``write_slice``, ``write_series``) live in ``_builders.py``.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pydicom
import pytest
from _builders import (
    COLS,
    DX,
    DY,
    ROWS,
    enhanced_ct,
    slice_values,
    write_series,
    write_slice,
    z_positions,
)
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from medrecon.errors import DicomError, SeriesSelectionError
from medrecon.io.dicom import list_series, load_dicom

# --- ordering and plain geometry ---------------------------------------------------------------

def test_shuffled_names_and_instances_sorted_by_position(tmp_path):
    rng = np.random.default_rng(0)
    n = 6
    perm = rng.permutation(n)
    # file k written at position perm[k]; names and InstanceNumbers both lie
    positions = [z_positions(n)[p] for p in perm]
    write_series(tmp_path, positions, names=[f"z{9 - k}.dcm" for k in range(n)],
                 instances=list(range(n, 0, -1)))
    vol = load_dicom(tmp_path)
    assert vol.shape == (COLS, ROWS, n)
    assert vol.units == "HU" and vol.array.dtype == np.float32
    expected = np.diag([DX, DY, 1.5, 1.0])
    expected[:3, 3] = (-3.0, 4.0, -20.0)
    np.testing.assert_allclose(vol.affine, expected, atol=1e-6)
    for k in range(n):
        src = int(np.flatnonzero(perm == k)[0])  # file written at position k
        np.testing.assert_array_equal(vol.array[:, :, k], slice_values(src).T - 1024.0)


def test_oblique_keeps_full_affine(tmp_path):
    a = np.radians(25)
    row = np.array([np.cos(a), np.sin(a), 0.0])
    col = np.array([0.0, np.cos(0.3) * 1.0, -np.sin(0.3)])
    col -= row * (row @ col)
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    origin = np.array([10.0, -5.0, 30.0])
    positions = [origin + normal * 2.0 * k for k in (3, 0, 2, 1)]
    write_series(tmp_path, positions, orientation=(*row, *col))
    vol = load_dicom(tmp_path)
    assert vol.is_oblique
    np.testing.assert_allclose(vol.affine[:3, 0], row * DX, atol=1e-6)
    np.testing.assert_allclose(vol.affine[:3, 1], col * DY, atol=1e-6)
    np.testing.assert_allclose(vol.affine[:3, 2], normal * 2.0, atol=1e-6)
    np.testing.assert_allclose(vol.origin, origin, atol=1e-5)
    # voxel (i, j, k) = pixel (row j, column i) of the slice at origin + k * 2 mm * normal
    np.testing.assert_array_equal(vol.array[4, 7, 0], slice_values(1)[7, 4] - 1024.0)
    np.testing.assert_array_equal(vol.array[4, 7, 3], slice_values(0)[7, 4] - 1024.0)


# --- hard geometry -------------------------------------------------------------------------------

def test_gantry_tilt_resampled_to_orthogonal_grid(tmp_path):
    n, dz = 8, 2.0
    x0, y0 = 1.0, 2.0
    shift = DY  # each slice's origin moves one row in y: a tilt of atan(DY / dz)
    positions = [(x0, y0 + shift * k, 10.0 + dz * k) for k in range(n)]
    target = np.array([x0 + 4 * DX, y0 + 8 * DY])  # a vertical line in the world

    def values(k):
        v = np.zeros((ROWS, COLS), np.int16)
        j = int(round((target[1] - positions[k][1]) / DY))
        v[j, 4] = 2000
        return v

    write_series(tmp_path, positions, values=values)
    with pytest.warns(UserWarning, match="gantry tilt"):
        vol = load_dicom(tmp_path)
    assert vol.meta["gantry_tilt_deg"] == pytest.approx(np.degrees(np.arctan(DY / dz)), abs=1e-3)
    assert not vol.is_oblique
    np.testing.assert_allclose(vol.affine[:3, 2], [0, 0, dz], atol=1e-9)
    # after resampling, the bright line sits at the same world (x, y) in every inner slice:
    # its value-weighted centroid (exact under linear interpolation) and its total are kept
    ijk = np.stack(np.meshgrid(np.arange(COLS), np.arange(ROWS), indexing="ij"), -1)
    for k in range(2, n - 2):
        weight = vol.array[:, :, k] + 1024.0
        assert weight.sum() == pytest.approx(2000.0, rel=1e-5)
        centre = (ijk * weight[..., None]).sum((0, 1)) / weight.sum()
        xyz = vol.voxel_to_world([[*centre, k]])[0]
        np.testing.assert_allclose(xyz[:2], target, atol=1e-4)


def test_missing_slice_resampled_to_even_spacing(tmp_path):
    zs = [0.0, 2.0, 4.0, 8.0, 10.0, 12.0]  # 6.0 is missing
    positions = [(0.0, 0.0, z) for z in zs]
    write_series(tmp_path, positions,
                 values=lambda k: np.full((ROWS, COLS), 10 * zs[k], np.int16), intercept=0)
    with pytest.warns(UserWarning, match="1 slice missing .* interpolated"):
        vol = load_dicom(tmp_path)
    assert vol.shape[2] == 7
    np.testing.assert_allclose(vol.spacing, [DX, DY, 2.0])
    # value = 10 * z is linear in z, so interpolation reproduces it exactly
    np.testing.assert_allclose(vol.array[0, 0, :], 10 * np.arange(0.0, 13.0, 2.0), atol=1e-4)
    assert "geometry_warnings" in vol.meta


def test_absurd_gap_refused(tmp_path):
    positions = [(0.0, 0.0, z) for z in (0.0, 1.0, 2.0, 3.0, 9.0, 10.0)]
    write_series(tmp_path, positions)
    with pytest.raises(DicomError, match="gap of 6.00 mm"):
        load_dicom(tmp_path)


def test_duplicate_file_dropped(tmp_path):
    _, paths = write_series(tmp_path, z_positions(4))
    shutil.copy(paths[2], tmp_path / "copy_of_s002.dcm")
    with pytest.warns(UserWarning, match="duplicate"):
        vol = load_dicom(tmp_path)
    assert vol.shape[2] == 4
    np.testing.assert_array_equal(vol.array[:, :, 2], slice_values(2).T - 1024.0)


def test_conflicting_duplicate_refused(tmp_path):
    uid, _ = write_series(tmp_path, z_positions(4))
    write_slice(tmp_path / "other.dcm", slice_values(7), z_positions(4)[1], series_uid=uid)
    with pytest.raises(DicomError, match="two different slices at the same position"):
        load_dicom(tmp_path)


def test_identical_pixels_under_new_uid_dropped(tmp_path):
    uid, _ = write_series(tmp_path, z_positions(4))
    write_slice(tmp_path / "again.dcm", slice_values(1), z_positions(4)[1], series_uid=uid)
    with pytest.warns(UserWarning, match="duplicate"):
        assert load_dicom(tmp_path).shape[2] == 4


# --- several series, localizers, mixed sizes -----------------------------------------------------

def test_two_series_need_a_choice(tmp_path):
    ct_uid, _ = write_series(tmp_path / "a", z_positions(5, dz=2.0), series_number=3,
                             description="thick")
    mr_uid, _ = write_series(tmp_path / "b", z_positions(4, dz=1.0), series_number=7,
                             modality="MR", description="mr")
    thin_uid, _ = write_series(tmp_path / "c", z_positions(4, dz=1.0), series_number=9,
                               description="thin")
    with pytest.raises(SeriesSelectionError, match="3 volume-like") as err:
        load_dicom(tmp_path)
    assert "#3 CT 'thick'" in str(err.value) and "#7 MR 'mr'" in str(err.value)
    assert len(err.value.series) == 3
    assert load_dicom(tmp_path, series="7").series_uid == mr_uid
    assert load_dicom(tmp_path, series=ct_uid).shape[2] == 5
    auto = load_dicom(tmp_path, series="auto")
    # CT first, then the thinnest slices
    assert auto.series_uid == thin_uid and auto.modality == "CT"
    assert auto.meta["series_choice"]["candidates"][-1] == mr_uid
    with pytest.raises(SeriesSelectionError, match="matches no series"):
        load_dicom(tmp_path, series="42")


def test_localizer_ignored(tmp_path):
    uid, _ = write_series(tmp_path, z_positions(4))
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    write_slice(tmp_path / "loc.dcm", slice_values(0), (0, -50, 50), orientation=sagittal,
                series_uid=uid, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    write_slice(tmp_path / "scout" / "x.dcm", slice_values(0), (0, -50, 50),
                orientation=sagittal, series_uid=generate_uid(), series_number=99,
                image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    infos = list_series(tmp_path)
    assert [s.volume_like for s in infos] == [True, False, False]
    assert {s.reason for s in infos[1:]} == {"localizer"}
    vol = load_dicom(tmp_path)
    assert vol.shape == (COLS, ROWS, 4)


def test_mixed_sizes_split_into_parts(tmp_path):
    uid, _ = write_series(tmp_path / "a", z_positions(4))
    write_series(tmp_path / "b", z_positions(3, z0=100.0), series_uid=uid,
                 values=lambda k: slice_values(k, rows=8, cols=8))
    infos = list_series(tmp_path)
    assert [(s.n_slices, s.rows, s.part, s.n_parts) for s in infos] == [(4, 12, 0, 2), (3, 8, 1, 2)]
    with pytest.raises(SeriesSelectionError):
        load_dicom(tmp_path)
    assert load_dicom(tmp_path, series=f"{uid}:1").shape == (8, 8, 3)
    assert load_dicom(tmp_path, series="1:0").shape == (COLS, ROWS, 4)


# --- encodings and containers --------------------------------------------------------------------

# JPEG 2000 is covered by the real Siemens series (openjpeg cannot encode 12x10 images)
@pytest.mark.parametrize("syntax", [ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian, RLELossless,
                                    JPEGLSLossless])
def test_encodings_give_identical_volumes(tmp_path, syntax):
    positions = z_positions(3)
    write_series(tmp_path / "ref", positions, series_uid="1.2.3.4")
    write_series(tmp_path / "enc", positions, series_uid="1.2.3.4", syntax=syntax)
    ref, enc = load_dicom(tmp_path / "ref"), load_dicom(tmp_path / "enc")
    assert enc.meta["transfer_syntax"] == syntax
    assert enc.same_grid(ref, atol=1e-9)
    np.testing.assert_array_equal(enc.array, ref.array)


def test_enhanced_multiframe_ct(tmp_path):
    positions = z_positions(5, dz=1.25)
    order = [3, 1, 4, 0, 2]  # frames stored out of order
    enhanced_ct(tmp_path / "mf.dcm", [positions[o] for o in order],
                 lambda f: slice_values(order[f]))
    vol = load_dicom(tmp_path / "mf.dcm")
    assert vol.shape == (COLS, ROWS, 5)
    np.testing.assert_allclose(vol.spacing, [DX, DY, 1.25])
    for k in range(5):
        np.testing.assert_array_equal(vol.array[:, :, k], 2.0 * slice_values(k).T - 1000.0)


def test_dicomdir(tmp_path):
    from pydicom.fileset import FileSet

    write_series(tmp_path / "src", z_positions(4))
    fs = FileSet()
    for f in sorted((tmp_path / "src").iterdir()):
        fs.add(pydicom.dcmread(f))
    fs.write(tmp_path / "media")
    vol = load_dicom(tmp_path / "media" / "DICOMDIR")
    ref = load_dicom(tmp_path / "src")
    assert vol.same_grid(ref, atol=1e-9)
    np.testing.assert_array_equal(vol.array, ref.array)


def test_single_file_is_a_one_slice_volume(tmp_path):
    _, paths = write_series(tmp_path, z_positions(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol = load_dicom(paths[1])
    assert vol.shape == (COLS, ROWS, 1)
    np.testing.assert_allclose(vol.origin, z_positions(3)[1])
    np.testing.assert_array_equal(vol.array[:, :, 0], slice_values(1).T - 1024.0)


def test_mr_echoes_split_into_parts(tmp_path):
    uid, paths = write_series(tmp_path / "e1", z_positions(4), modality="MR", intercept=0)
    _, paths2 = write_series(tmp_path / "e2", z_positions(4), modality="MR", intercept=0,
                             series_uid=uid, values=lambda k: slice_values(k) // 2)
    for p, echo in [(p, 1) for p in paths] + [(p, 2) for p in paths2]:
        ds = pydicom.dcmread(p)
        ds.EchoNumbers = echo
        ds.save_as(p)
    infos = list_series(tmp_path)
    assert [(s.echo, s.part, s.n_slices, s.volume_like) for s in infos] == [
        (1, 0, 4, True), (2, 1, 4, True)]
    with pytest.raises(SeriesSelectionError, match="echo 2"):
        load_dicom(tmp_path)
    second = load_dicom(tmp_path, series=f"{uid}:1")
    assert second.units == "" and second.modality == "MR"
    np.testing.assert_array_equal(second.array[:, :, 3], (slice_values(3) // 2).T)
