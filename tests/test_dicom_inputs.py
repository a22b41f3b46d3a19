"""Real-world DICOM inputs, each checked against an independent reader.

Siemens mosaics (real ones from nibabel's installed test data) against dcm2niix;
deflated files with trailing bytes against pydicom; non-finite rescale values;
enhanced multi-frame files whose per-frame groups were cut (SimpleITK reads the
pixels); slice gaps against dcm2niix; and the loader's smaller refusals.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.tag import Tag

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
