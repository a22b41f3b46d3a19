"""Real-world DICOM inputs, each checked against an independent reader.

Siemens mosaics (real ones from nibabel's installed test data) against dcm2niix;
deflated files with trailing bytes against pydicom; non-finite rescale values;
enhanced multi-frame files whose per-frame groups were cut (SimpleITK reads the
pixels); slice gaps against dcm2niix; and the loader's smaller refusals.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from _builders import (
    COLS,
    ROWS,
    enhanced_ct,
    slice_values,
    write_series,
    write_slice,
    z_positions,
)
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medrecon.errors import DicomError
from medrecon.io.dicom import load_dicom
from medrecon.io.dicom_mosaic import read_csa
from medrecon.volume import LPS_TO_RAS, Volume

NICOM_DATA = Path(nib.__file__).parent / "nicom" / "tests" / "data"
DCM2NIIX = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")
needs_dcm2niix = pytest.mark.skipif(not Path(DCM2NIIX).exists(), reason="dcm2niix not installed")
CSA_IMAGE = Tag(0x0029, 0x1010)  # "SIEMENS CSA HEADER" block 0x10, element 0x10
MR_MOSAIC_COUNT = Tag(0x0019, 0x100A)


def dcm2niix(folder: Path, out: Path) -> list[Path]:
    """Run dcm2niix on ``folder``; return the NIfTI files it wrote (main file first)."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([DCM2NIIX, "-z", "n", "-b", "n", "-f", "x", "-o", str(out), str(folder)],
                   check=True, capture_output=True, timeout=120)
    return sorted(out.glob("x*.nii"), key=lambda p: (len(p.name), p.name))


def assert_same_as_nifti(vol: Volume, path: Path, *, atol: float = 0.0) -> None:
    """Same voxel centres (up to axis flips and order) and the same values as a dcm2niix file."""
    img = nib.load(path)
    ref = np.asarray(img.get_fdata(dtype=np.float32))
    # our voxel -> their voxel; RAS (NIfTI) and LPS (medrecon) differ by LPS_TO_RAS
    m = np.linalg.inv(img.affine) @ LPS_TO_RAS @ vol.affine
    np.testing.assert_allclose(np.abs(m[:3, :3]), np.round(np.abs(m[:3, :3])), atol=2e-3)
    np.testing.assert_allclose(m[:3, 3], np.round(m[:3, 3]), atol=2e-3)
    assert sorted(np.asarray(ref.shape)) == sorted(vol.shape) and ref.ndim == 3
    ijk = np.indices(vol.shape).reshape(3, -1)
    theirs = np.rint(m[:3, :3] @ ijk + m[:3, 3:]).astype(int)
    np.testing.assert_allclose(vol.array.reshape(-1), ref[tuple(theirs)], atol=atol)


# --- Siemens mosaic ------------------------------------------------------------------------------

def _real_mosaic(tmp_path: Path, name: str = "siemens_dwi_1000.dcm.gz") -> Path:
    src = NICOM_DATA / name
    if not src.exists():
        pytest.skip("nibabel's test data is not installed")
    out = tmp_path / "in" / name.removesuffix(".gz")
    out.parent.mkdir(parents=True)
    out.write_bytes(gzip.decompress(src.read_bytes()))
    return out


def _nibabel_csa(ds) -> dict[str, dict]:
    from nibabel.nicom import csareader

    return csareader.read(ds[CSA_IMAGE].value)["tags"]


@pytest.mark.parametrize("name", ["siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz"])
def test_csa_parser_agrees_with_nibabel(tmp_path, name):
    ds = pydicom.dcmread(_real_mosaic(tmp_path, name))
    ours = read_csa(ds[CSA_IMAGE].value)
    theirs = _nibabel_csa(ds)
    assert int(ours["NumberOfImagesInMosaic"][0]) == 48 == theirs["NumberOfImagesInMosaic"]["items"][0]
    np.testing.assert_allclose([float(v) for v in ours["SliceNormalVector"]],
                               theirs["SliceNormalVector"]["items"])


@needs_dcm2niix
@pytest.mark.parametrize("name", ["siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz"])
def test_real_mosaic_matches_dcm2niix(tmp_path, name):
    path = _real_mosaic(tmp_path, name)
    vol = load_dicom(path)
    assert vol.shape == (128, 128, 48)  # a 896x896 mosaic of 7x7 tiles, 48 slices
    np.testing.assert_allclose(vol.spacing, [1.796875, 1.796875, 3.0], atol=1e-5)
    (ref, *_), = [dcm2niix(path.parent, tmp_path / "out")]
    assert_same_as_nifti(vol, ref)


@needs_dcm2niix
def test_mosaic_count_from_the_mr_header_and_slices_in_descending_order(tmp_path):
    # the real file with its CSA header edited in place: the slice normal reversed (slices
    # stored head to foot) and NumberOfImagesInMosaic blanked, leaving the count in (0019,100A)
    path = _real_mosaic(tmp_path)
    ds = pydicom.dcmread(path)
    csa = ds[CSA_IMAGE].value
    for old, new in [(b"0.00523632\0", b"-.00523632\0"), (b"0.99998629\0", b"-.99998629\0"),
                     (b"48      \0", b"        \0")]:
        assert csa.count(old) == 1
        csa = csa.replace(old, new)
    ds[CSA_IMAGE].value = csa
    ds.save_as(path)
    vol = load_dicom(path)
    assert vol.shape == (128, 128, 48)
    ref, *_ = dcm2niix(path.parent, tmp_path / "out")
    assert_same_as_nifti(vol, ref)
    # descending: the first stored tile is the highest slice of the volume
    first_tile = pydicom.dcmread(path).pixel_array[:128, :128].T
    np.testing.assert_array_equal(vol.array[:, :, -1], first_tile)


def test_mosaic_without_a_count_is_refused(tmp_path):
    path = _real_mosaic(tmp_path)
    ds = pydicom.dcmread(path)
    del ds[CSA_IMAGE]
    del ds[MR_MOSAIC_COUNT]
    ds.save_as(path)
    with pytest.raises(DicomError, match="mosaic .* without NumberOfImagesInMosaic"):
        load_dicom(path)


def test_mosaic_that_does_not_tile_is_refused():
    # nibabel's 0.dcm: a 256x256 mosaic declaring 48 images (7x7 tiles of 36.57 pixels)
    if not (NICOM_DATA / "0.dcm").exists():
        pytest.skip("nibabel's test data is not installed")
    with pytest.raises(DicomError, match="256x256 pixels cannot hold 48 slices"):
        load_dicom(NICOM_DATA / "0.dcm")


@needs_dcm2niix
def test_oblique_mosaic_matches_dcm2niix(tmp_path):
    # nibabel's csa_slice_norm.dcm: a real oblique 384x384 mosaic header (32 slices of 64x64,
    # count in the CSA header only) whose pixel data was removed; give it pixels back
    src = NICOM_DATA / "csa_slice_norm.dcm"
    if not src.exists():
        pytest.skip("nibabel's test data is not installed")
    ds = pydicom.dcmread(src)
    pixels = (np.arange(384 * 384, dtype=np.uint32) % 4093).astype(np.uint16).reshape(384, 384)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    path = tmp_path / "in" / "oblique.dcm"
    path.parent.mkdir()
    ds.save_as(path)
    vol = load_dicom(path)
    assert vol.shape == (64, 64, 32) and vol.is_oblique
    ref, *_ = dcm2niix(path.parent, tmp_path / "out")
    assert_same_as_nifti(vol, ref)


# --- deflated data set with bytes after the deflate stream -------------------------------------

@pytest.mark.parametrize("trailing", [0, 1, 8, 1000])
def test_deflated_file_with_trailing_bytes_reads_as_pydicom_reads_it(tmp_path, trailing):
    path = write_slice(tmp_path / "d.dcm", slice_values(3), (1.0, 2.0, 3.0), series_uid="1.2.3",
                       syntax=DeflatedExplicitVRLittleEndian, slope=2.0, intercept=-1000.0)
    data = path.read_bytes()
    start = 144 + pydicom.dcmread(path).file_meta.FileMetaInformationGroupLength
    inflater = zlib.decompressobj(-15)
    inflated = inflater.decompress(data[start:])
    assert inflater.eof
    tails = {0: b"", 1: b"\x5a", 1000: np.random.default_rng(0).bytes(1000),
             # a gzip trailer (CRC-32 and size of the inflated data), as a writer that
             # stripped only the gzip header leaves it
             8: struct.pack("<II", zlib.crc32(inflated), len(inflated))}
    path.write_bytes(data + tails[trailing])
    ref = pydicom.dcmread(path)
    expected = ref.pixel_array.astype(np.float32) * 2.0 - 1000.0
    vol = load_dicom(path)
    np.testing.assert_array_equal(vol.array[:, :, 0], expected.T)
    np.testing.assert_array_equal(expected, slice_values(3) * 2.0 - 1000.0)


# --- rescale values that are not numbers ---------------------------------------------------------

@pytest.mark.parametrize(("slope", "intercept"), [("nan", "0"), ("1", "inf"), ("1e308", "0"),
                                                  ("1", "-1e308"), ("-inf", "0")])
def test_non_finite_or_absurd_rescale_is_refused_with_the_file_name(tmp_path, slope, intercept):
    path = write_slice(tmp_path / "s.dcm", slice_values(0), (0.0, 0.0, 0.0), series_uid="1.2.3")
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.save_as(path)
    with pytest.raises(DicomError, match=r"s\.dcm: Rescale(Slope|Intercept) \S+ is not a usable number"):
        load_dicom(path)


def test_a_slice_with_nan_rescale_is_treated_as_missing(tmp_path):
    zs = [0.0, 2.0, 4.0, 6.0, 8.0]
    _, paths = write_series(tmp_path, [(0.0, 0.0, z) for z in zs], intercept=0,
                            values=lambda k: np.full((ROWS, COLS), 10 * zs[k], np.int16))
    ds = pydicom.dcmread(paths[2])
    ds.RescaleSlope = "NaN"
    ds.save_as(paths[2])
    with pytest.warns(UserWarning) as caught:
        vol = load_dicom(tmp_path)
    text = " ".join(str(w.message) for w in caught)
    assert "s002.dcm: RescaleSlope nan" in text and "1 slice missing" in text
    assert np.isfinite(vol.array).all() and vol.shape[2] == 5
    # the value is 10 * z: linear, so the interpolated slice is exact
    np.testing.assert_allclose(vol.array[0, 0, :], [0, 20, 40, 60, 80], atol=1e-4)


# --- enhanced multi-frame file whose per-frame groups were cut ----------------------------------

def test_cut_per_frame_groups_are_refused_where_simpleitk_sees_all_frames(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    path = tmp_path / "mf.dcm"
    enhanced_ct(path, z_positions(6, dz=1.25), slice_values)
    ds = pydicom.dcmread(path)
    ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:3]
    ds.save_as(path)
    assert sitk.ReadImage(str(path)).GetSize()[2] == 6  # the pixel data holds all 6 frames
    with pytest.raises(DicomError, match="declares 6 frames .* describe 3"):
        load_dicom(path)
    # the complete file loads all 6, as SimpleITK reads them
    enhanced_ct(path, z_positions(6, dz=1.25), slice_values, slope=1.0, intercept=0.0)
    vol = load_dicom(path)
    image = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    np.testing.assert_allclose(vol.origin, image.GetOrigin(), atol=1e-6)


# --- a file with an image header and no pixel data ----------------------------------------------

@pytest.mark.parametrize("command", ["info", "convert"])
def test_file_without_pixel_data_is_skipped_with_a_warning(tmp_path, capsys, command):
    from medrecon.cli import main

    _, paths = write_series(tmp_path / "ct", z_positions(5))
    ds = pydicom.dcmread(paths[4])
    del ds.PixelData
    ds.save_as(paths[4])
    args = [command, str(tmp_path / "ct")] + ([str(tmp_path / "x.nii.gz")] if command == "convert" else [])
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "s004.dcm: the header describes a 10x12 image but the file ends without its Pixel Data" in err


# --- uneven slice spacing ----------------------------------------------------------------------

def _linear_series(folder: Path, zs: list[float]) -> None:
    """Slices whose values are 4 * z (+ column): linear interpolation along z reproduces them."""
    write_series(folder, [(0.0, 0.0, z) for z in zs], intercept=0,
                 values=lambda k: np.full((ROWS, COLS), round(4 * zs[k]), np.int16)
                 + np.arange(COLS, dtype=np.int16))


@pytest.mark.parametrize("end", ["last", "first"])
def test_one_short_step_at_an_end_keeps_the_grid_as_dcm2niix_does(tmp_path, end):
    # a head CT of 108 slices 1.5 mm apart whose last (or first) slice is only 1.0 mm away
    zs = [1.5 * k for k in range(107)]
    zs = zs + [zs[-1] + 1.0] if end == "last" else [-1.0] + zs
    write_series(tmp_path / "ct", [(0.0, 0.0, z) for z in zs], values=slice_values)
    with pytest.warns(UserWarning) as caught:
        vol = load_dicom(tmp_path / "ct")
    (note,) = [str(w.message) for w in caught]
    assert note.endswith(f"the {end} slice is 1.00 mm from its neighbour where the others are "
                         "1.50 mm apart: kept unchanged one step away, 0.50 mm from its recorded "
                         "position" + (" (as dcm2niix stacks it)" if end == "last" else ""))
    assert vol.shape == (COLS, ROWS, 108)
    np.testing.assert_allclose(vol.spacing, [0.7, 0.9, 1.5])
    np.testing.assert_allclose(vol.origin, [0.0, 0.0, -1.5 if end == "first" else 0.0], atol=1e-9)
    # every slice holds its own values, unchanged: the regular part on its own grid
    for k in range(108):
        np.testing.assert_array_equal(vol.array[:, :, k], slice_values(k).T - 1024.0)
    if end == "last":  # dcm2niix stacks from the first slice; its main output is this grid
        if not Path(DCM2NIIX).exists():
            pytest.skip("dcm2niix not installed")
        ref, *_ = dcm2niix(tmp_path / "ct", tmp_path / "out")
        assert_same_as_nifti(vol, ref)


def test_variable_spacing_resampled_on_the_grid_of_the_longest_run(tmp_path):
    # laid out like the real GE head CT of dcm_qa_ct (dcm2niix: "Interslice distance varies
    # in this volume"): 13 steps of 4 mm, one short step, 13 steps of 7 mm
    zs = [float(z) for z in np.cumsum([0.0] + [4.0] * 13 + [1.25] + [7.0] * 13)]
    _linear_series(tmp_path, zs)
    with pytest.warns(UserWarning, match=r"slice spacing varies \(1.25 to 7.00 mm\): resampled "
                      r"linearly to 37 slices 4.000 mm apart, .* 14 of 28 slices lie on that grid"):
        vol = load_dicom(tmp_path)
    assert vol.shape[2] == 37
    np.testing.assert_allclose(vol.affine[:3, 2], [0, 0, 4.0], atol=1e-9)
    np.testing.assert_allclose(vol.origin, [0, 0, 0], atol=1e-9)
    expected = 4 * (4.0 * np.arange(37))[None, :] + np.arange(COLS)[:, None]
    np.testing.assert_allclose(vol.array[:, 0, :], expected, atol=1e-3)
    # the slices on the grid are copied from the files, as pydicom reads them
    for k, path in enumerate(sorted(tmp_path.iterdir())[:14]):
        np.testing.assert_array_equal(vol.array[:, :, k], pydicom.dcmread(path).pixel_array.T)


def test_missing_slices_inside_are_interpolated_and_the_rest_kept(tmp_path):
    zs = [0.0, 2.0, 4.0, 10.0, 12.0, 14.0, 16.0]  # 6 and 8 missing
    _linear_series(tmp_path, zs)
    with pytest.warns(UserWarning, match=r"2 slices missing \(a gap of 6.00 mm between the slices "
                      r"at 4.00 and 10.00 mm along the normal, where the spacing is 2.00 mm\)"):
        vol = load_dicom(tmp_path)
    assert vol.shape[2] == 9
    expected = 4 * np.arange(0.0, 17.0, 2.0)[None, :] + np.arange(COLS)[:, None]
    np.testing.assert_allclose(vol.array[:, 0, :], expected, atol=1e-4)


# --- smaller refusals: they name the file and say what is wrong, in plain words -----------------

def _edited_slice(tmp_path: Path, **tags) -> Path:
    path = write_slice(tmp_path / "s.dcm", slice_values(0), (0.0, 0.0, 0.0), series_uid="1.2.3")
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    return path


@pytest.mark.parametrize(("tags", "message"), [
    ({"ImagePositionPatient": ["nan", "0", "0"]},
     r"s\.dcm: ImagePositionPatient \[nan, 0, 0\] holds NaN, infinite or absurd values"),
    ({"ImageOrientationPatient": ["1", "0", "0", "inf", "1", "0"]},
     r"s\.dcm: ImageOrientationPatient \[1, 0, 0, inf, 1, 0\] holds NaN"),
    ({"PixelSpacing": ["1e30", "1e30"]}, r"s\.dcm: PixelSpacing \[1e\+30, 1e\+30\] mm is outside"),
    ({"PixelSpacing": ["0", "0.7"]}, r"s\.dcm: PixelSpacing \[0, 0.7\] mm is outside"),
    ({"ImageOrientationPatient": ["0", "0", "0", "0", "1", "0"]},
     r"s\.dcm: ImageOrientationPatient \[0, 0, 0, 0, 1, 0\] is not two orthogonal directions"),
    ({"Rows": 65535, "Columns": 65535, "NumberOfFrames": "50000"},
     r"s\.dcm: the header declares a 50000x65535x65535x1 array of uint16"),
])
def test_corrupt_header_values_are_refused_in_plain_words(tmp_path, tags, message):
    from medrecon.errors import InputError

    path = _edited_slice(tmp_path, **tags)
    with pytest.raises(InputError, match=message) as caught:
        load_dicom(path)
    assert "np." not in str(caught.value) and "void" not in str(caught.value)


def test_truncated_jpeg2000_is_reported_as_truncated(tmp_path, totalseg_dir):
    pytest.importorskip("pylibjpeg")
    intact = sorted((totalseg_dir / "example_ct_dicom").iterdir())[0]
    reference = pydicom.dcmread(intact).pixel_array  # pydicom decodes the intact file
    vol = load_dicom(intact)
    np.testing.assert_array_equal(vol.array[:, :, 0], reference.T - 1024.0)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(intact.read_bytes()[:120_000])
    with pytest.raises(DicomError, match=r"cut\.dcm: the file ends inside its compressed pixel data "
                       r"\(120,000 bytes\): it is truncated"):
        load_dicom(cut)


def test_link_to_a_device_is_named_for_what_it_is(tmp_path):
    from medrecon.errors import InputError

    write_series(tmp_path / "ct", z_positions(3))
    (tmp_path / "ct" / "zero.dcm").symlink_to("/dev/zero")
    with pytest.warns(UserWarning, match=r"zero\.dcm: not a regular file \(a link to /dev/zero, "
                      r"a character device\)"):
        assert load_dicom(tmp_path / "ct").shape[2] == 3
    with pytest.raises(InputError, match=r"zero\.dcm is a link to /dev/zero, a character device, "
                       "not a DICOM file or folder"):
        load_dicom(tmp_path / "ct" / "zero.dcm")
