"""``medrecon convert`` keeps a DICOM series' stored integers from the files to the NIfTI file.

:func:`load_dicom_stored` reads the integers as stored and :class:`StoredVolume` carries
them with their slope and intercept; the values are checked against the integers the
test wrote, against :func:`load_dicom`'s float32 volume, and the NIfTI files against the
ones the float32 path writes (byte for byte) and against nibabel's reading.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from _builders import COLS, ROWS, enhanced_ct, slice_values, write_series, z_positions
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
)

from medrecon.cli import main
from medrecon.io import dicom_pixels, save
from medrecon.io.dicom import load_dicom, load_dicom_stored
from medrecon.io.nifti import write_nifti
from medrecon.io.stored import StoredVolume, exact_scaling
from medrecon.volume import Volume

NICOM_DATA = Path(nib.__file__).parent / "nicom" / "tests" / "data"


def _written(n: int) -> np.ndarray:
    """The (I, J, K) integers the builders write: slice k holds slice_values(k) as (row, col)."""
    return np.stack([slice_values(k).T for k in range(n)], axis=-1)


def _same_as_load_dicom(stored: StoredVolume, path: Path) -> None:
    ref = load_dicom(path)
    values = stored.values()
    assert values.array.dtype == np.float32 and np.array_equal(values.array, ref.array)
    assert np.array_equal(values.affine, ref.affine)
    assert dict(values.meta) == dict(ref.meta)
    assert (values.units, values.modality, values.series_uid, values.source) == (
        ref.units, ref.modality, ref.series_uid, ref.source)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
                                    DeflatedExplicitVRLittleEndian, RLELossless, JPEGLSLossless])
def test_stored_integers_are_the_files_and_their_values_load_dicoms(tmp_path, syntax):
    write_series(tmp_path, z_positions(4), syntax=syntax)  # RescaleSlope 1, RescaleIntercept -1024
    stored = load_dicom_stored(tmp_path)
    assert isinstance(stored, StoredVolume)
    assert stored.raw.array.dtype == np.int16 and np.array_equal(stored.raw.array, _written(4))
    assert (stored.slope, stored.intercept, stored.units, stored.raw.units) == (1.0, -1024.0, "HU", "")
    assert "scaling" not in stored.raw.meta and stored.exact
    _same_as_load_dicom(stored, tmp_path)


def test_enhanced_multiframe_keeps_slope_two(tmp_path):
    positions = z_positions(5, dz=1.25)
    order = [3, 1, 4, 0, 2]  # frames stored out of order
    enhanced_ct(tmp_path / "mf.dcm", [positions[o] for o in order], lambda f: slice_values(order[f]))
    stored = load_dicom_stored(tmp_path / "mf.dcm")
    assert (stored.slope, stored.intercept) == (2.0, -1000.0)
    assert np.array_equal(stored.raw.array, _written(5))
    _same_as_load_dicom(stored, tmp_path / "mf.dcm")


@pytest.mark.parametrize("signed", [True, False])
def test_twelve_bit_pixels_with_high_bits_set(tmp_path, signed):
    # 12 bits stored in 16: the unused high bits hold garbage (signed: not sign-extended)
    rng = np.random.default_rng(1)
    truth = [rng.integers(-2048 if signed else 0, 2048 if signed else 4096, (ROWS, COLS)) for _ in range(3)]
    write_series(tmp_path, z_positions(3), values=lambda k: np.zeros((ROWS, COLS)))
    for k, path in enumerate(sorted(tmp_path.iterdir())):
        ds = pydicom.dcmread(path)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, int(signed)
        garbage = 0 if signed else 0xA000  # signed: negative numbers stored with the high bits clear
        ds.PixelData = ((truth[k] & 0x0FFF) | garbage).astype("<u2").tobytes()
        ds.save_as(path)
    stored = load_dicom_stored(tmp_path)
    assert stored.raw.array.dtype == (np.int16 if signed else np.uint16)
    assert np.array_equal(stored.raw.array, np.stack([t.T for t in truth], axis=-1))
    _same_as_load_dicom(stored, tmp_path)


def test_real_jpeg2000_and_mosaic_series(totalseg_dir, tmp_path):
    pytest.importorskip("pylibjpeg")
    series = totalseg_dir / "example_ct_dicom"
    stored = load_dicom_stored(series)
    # PixelRepresentation 0: unsigned
    assert stored.raw.array.dtype == np.uint16 and (stored.slope, stored.intercept) == (1.0, -1024.0)
    _same_as_load_dicom(stored, series)
    src = NICOM_DATA / "siemens_dwi_1000.dcm.gz"
    if not src.exists():
        pytest.skip("nibabel's test data is not installed")
    mosaic = tmp_path / "mosaic.dcm"
    mosaic.write_bytes(gzip.decompress(src.read_bytes()))
    stored = load_dicom_stored(mosaic)
    assert stored.raw.shape == (128, 128, 48)
    _same_as_load_dicom(stored, mosaic)


def test_series_that_need_values_load_as_values(tmp_path):
    # a slope per slice: no one (slope, intercept) makes every slice's values
    for k, pos in enumerate(z_positions(3)):
        write_series(tmp_path / "slopes", [pos], names=[f"s{k}.dcm"], series_uid="1.2.3", instances=[k + 1],
                     slope=1.0 + k)
    # a missing slice: resampled to even spacing
    write_series(tmp_path / "gap", [(0, 0, z) for z in (0.0, 1.5, 3.0, 6.0, 7.5)])
    for name in ("slopes", "gap"):
        got = load_dicom_stored(tmp_path / name)
        assert isinstance(got, Volume)
        ref = load_dicom(tmp_path / name)
        assert np.array_equal(got.array, ref.array) and dict(got.meta) == dict(ref.meta)


def test_a_decoder_value_outside_the_stored_type_reads_as_values(tmp_path, monkeypatch):
    # a decoder that gives uint16 where the header declares int16 (values over 32767)
    write_series(tmp_path, z_positions(3), syntax=RLELossless)
    decoded = np.full((ROWS, COLS), 40000, np.uint16)
    monkeypatch.setattr(dicom_pixels, "_frames_of", lambda path, frame, indices: iter([decoded]))
    got = load_dicom_stored(tmp_path)
    assert isinstance(got, Volume) and got.meta["scaling"] == (1.0, -1024.0)
    assert np.all(got.array == 40000 - 1024)


def test_reading_compressed_files_in_threads_leaves_the_warning_filters_alone(tmp_path):
    write_series(tmp_path, z_positions(6), syntax=RLELossless)  # decoded by several threads
    before = list(warnings.filters)
    for _ in range(20):
        load_dicom_stored(tmp_path)
        assert warnings.filters == before


@pytest.mark.parametrize(("slope", "intercept", "datatype"), [(1.0, -1024.0, 4), (2.0, -1000.0, 4),
                                                              (0.5, 0.25, 16)])
def test_convert_writes_what_the_float32_path_writes(tmp_path, capsys, slope, intercept, datatype):
    write_series(tmp_path / "ct", z_positions(4), slope=slope, intercept=intercept)
    out = tmp_path / "ours.nii"
    assert main(["convert", str(tmp_path / "ct"), str(out)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("orientation LPS, HU")  # the values' units
    ref = load_dicom(tmp_path / "ct")
    write_nifti(ref.array, ref.affine, tmp_path / "ref.nii", is_label=False, **{
        k: ref.meta[k] for k in ("scaling", "stored_dtype")})
    assert out.read_bytes() == (tmp_path / "ref.nii").read_bytes()
    with open(out, "rb") as fh:
        assert int(nib.Nifti1Header.from_fileobj(fh)["datatype"]) == datatype  # int16, or float32
    # an independent reader: the values are stored * slope + intercept
    assert np.array_equal(nib.load(out).get_fdata(), _written(4) * slope + intercept)


def test_save_stored_as_nrrd_and_gzip(tmp_path):
    write_series(tmp_path / "ct", z_positions(3))
    stored, ref = load_dicom_stored(tmp_path / "ct"), load_dicom(tmp_path / "ct")
    save(stored, tmp_path / "a.nrrd")
    save(ref, tmp_path / "b.nrrd")
    assert (tmp_path / "a.nrrd").read_bytes() == (tmp_path / "b.nrrd").read_bytes()
    save(stored, tmp_path / "a.nii.gz")
    img = nib.load(tmp_path / "a.nii.gz")
    assert img.get_data_dtype() == np.int16 and np.array_equal(img.get_fdata(), ref.array)


def test_write_nifti_refuses_stored_values_it_cannot_keep_exactly(tmp_path):
    ints = np.zeros((2, 2, 2), np.int16)
    with pytest.raises(ValueError, match="not exact"):
        write_nifti(ints, np.eye(4), tmp_path / "a.nii", is_label=False, scaling=(0.5, 0.0), as_stored=True)
    with pytest.raises(ValueError, match="integers"):
        write_nifti(ints.astype(np.float32), np.eye(4), tmp_path / "a.nii", is_label=False, as_stored=True)
    assert not list(tmp_path.iterdir())
    assert exact_scaling(np.int16, 1, -1024) and exact_scaling(np.uint16, 2, -1000)
    assert not exact_scaling(np.int32, 1, 0)  # 2**31 is not exact in float32
    assert not exact_scaling(np.int16, 1, float("nan")) and not exact_scaling(np.float32, 1, 0)
