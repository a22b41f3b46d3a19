"""NIfTI reading/writing against SimpleITK, nibabel and hand-built headers."""

import gzip
import os
import tracemalloc
import warnings

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medrecon.errors import GeometryError, InputError, ResourceLimitError, UnsupportedFormatError
from medrecon.io.nifti import read_nifti, write_nifti
from medrecon.volume import LPS_TO_RAS


def sitk_lps(image):
    """Array (i, j, k) and LPS affine of a SimpleITK image (ground truth we did not write)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image).T, affine


def oblique_flipped_affine():
    """An LPS affine with rotation about two axes, a reflection and anisotropic spacing."""
    a, b = np.deg2rad(20), np.deg2rad(-35)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-1.0, 1.0, 1.0]) @ np.diag([0.7, 0.9, 2.5])
    affine[:3, 3] = [-120.5, 33.25, 410.0]
    return affine


def raw_nifti(path, *, shape=(4, 5, 6), dtype=np.int16, data=None, sform=None, qform=None,
              pixdim=None, slope=np.nan, inter=np.nan, datatype=None, trailing=b""):
    """Write a NIfTI-1 file byte by byte from a nibabel header (no image writer involved)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr["dim"] = [len(shape), *shape, *([1] * (7 - len(shape)))]
    hdr["pixdim"] = [1, 1, 1, 1, 1, 1, 1, 1] if pixdim is None else pixdim
    hdr["vox_offset"] = 352
    hdr["scl_slope"], hdr["scl_inter"] = slope, inter
    if sform is not None:
        hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = sform[:3]
        hdr["sform_code"] = 1
    if qform is not None:
        hdr.set_qform(qform, code=1)
        if pixdim is not None:
            hdr["pixdim"][1:4] = pixdim[1:4]
    if datatype is not None:
        hdr["datatype"] = datatype
    if data is None:
        data = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape, order="F")
    body = hdr.binaryblock + b"\0" * 4 + np.asarray(data, dtype=dtype).tobytes(order="F") + trailing
    if str(path).endswith(".gz"):
        body = gzip.compress(body, compresslevel=1)
    path.write_bytes(body)
    return data


@pytest.mark.parametrize("name", ["example_ct_sm.nii.gz", "example_seg.nii.gz", "example_seg_dicom.nii.gz"])
def test_real_files_match_simpleitk(totalseg_dir, name):
    array, affine, meta = read_nifti(totalseg_dir / name)
    ref_array, ref_affine = sitk_lps(sitk.ReadImage(str(totalseg_dir / name)))
    assert array.dtype == ref_array.dtype
    assert np.array_equal(array, ref_array)
    np.testing.assert_allclose(affine, ref_affine, atol=1e-4)
    assert meta["affine_source"] == "sform"


def test_roundtrip_oblique_flipped_checked_by_other_readers(tmp_path):
    affine = oblique_flipped_affine()
    rng = np.random.default_rng(3)
    image = rng.normal(0, 100, size=(7, 6, 5)).astype(np.float32)
    labels = rng.integers(0, 4, size=(7, 6, 5)).astype(np.int64)
    write_nifti(image, affine, tmp_path / "img.nii.gz", is_label=False)
    write_nifti(labels, affine, tmp_path / "lab.nii", is_label=True)

    for name, expected, dtype in (("img.nii.gz", image, np.float32), ("lab.nii", labels, np.uint8)):
        ref_array, ref_affine = sitk_lps(sitk.ReadImage(str(tmp_path / name)))
        np.testing.assert_allclose(ref_affine, affine, atol=1e-4)
        assert np.array_equal(ref_array, expected)
        img = nib.load(tmp_path / name)
        hdr = img.header
        assert int(hdr["sform_code"]) == 1 and int(hdr["qform_code"]) == 1
        assert hdr.get_xyzt_units()[0] == "mm"
        np.testing.assert_allclose(hdr.get_qform(), LPS_TO_RAS @ affine, atol=1e-4)
        np.testing.assert_allclose(hdr.get_sform(), LPS_TO_RAS @ affine, atol=1e-4)
        assert hdr.get_data_dtype() == dtype
        array, ours, _ = read_nifti(tmp_path / name)
        assert array.dtype == dtype and np.array_equal(array, expected)
        np.testing.assert_allclose(ours, affine, atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["img.nii.gz", "lab.nii"]  # no temporary files left


def test_label_dtype_grows_with_values(tmp_path):
    write_nifti(np.full((2, 2, 2), 300), np.eye(4), tmp_path / "l.nii.gz", is_label=True)
    assert nib.load(tmp_path / "l.nii.gz").header.get_data_dtype() == np.int16
    with pytest.raises(ValueError, match="integers"):
        write_nifti(np.full((2, 2, 2), 0.5), np.eye(4), tmp_path / "x.nii.gz", is_label=True)


def test_qform_only_and_no_transform(tmp_path):
    ras = np.array([[0, 0, 2.0, 10], [-1.5, 0, 0, 20], [0, 1.5, 0, -30], [0, 0, 0, 1]])
    raw_nifti(tmp_path / "q.nii", qform=ras, pixdim=[1, 1.5, 1.5, 2.0, 1, 1, 1, 1])
    _, affine, meta = read_nifti(tmp_path / "q.nii")
    assert meta["affine_source"] == "qform"
    np.testing.assert_allclose(affine, LPS_TO_RAS @ ras, atol=1e-5)  # det < 0: qfac = -1
    np.testing.assert_allclose(affine, sitk_lps(sitk.ReadImage(str(tmp_path / "q.nii")))[1], atol=1e-5)

    raw_nifti(tmp_path / "none.nii", pixdim=[1, 0.5, 0.75, 3.0, 1, 1, 1, 1])
    with pytest.warns(UserWarning, match="neither sform nor qform"):
        _, affine, meta = read_nifti(tmp_path / "none.nii")
    assert meta["affine_source"] == "pixdim"
    np.testing.assert_allclose(affine, LPS_TO_RAS @ np.diag([0.5, 0.75, 3.0, 1.0]))


def test_scaling_applied_as_float32_and_labels_stay_integer(tmp_path):
    stored = raw_nifti(tmp_path / "ct.nii.gz", sform=np.eye(4), slope=2.0, inter=-1024.0)
    array, _, meta = read_nifti(tmp_path / "ct.nii.gz")
    assert array.dtype == np.float32 and meta["scaling"] == (2.0, -1024.0)
    assert np.array_equal(array, stored.astype(np.float32) * 2 - 1024)
    np.testing.assert_allclose(array, nib.load(tmp_path / "ct.nii.gz").get_fdata())

    stored = raw_nifti(tmp_path / "lab.nii.gz", dtype=np.uint8, sform=np.eye(4), slope=1.0, inter=0.0)
    array, _, meta = read_nifti(tmp_path / "lab.nii.gz")
    assert array.dtype == np.uint8 and meta["scaling"] is None and np.array_equal(array, stored)


def test_big_endian_and_singleton_4d(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(data, np.eye(4), header=nib.Nifti1Header(endianness=">"))
    img.set_data_dtype(np.int16)
    nib.save(img, tmp_path / "be.nii")
    assert (tmp_path / "be.nii").read_bytes()[:4] == (348).to_bytes(4, "big")
    array, _, _ = read_nifti(tmp_path / "be.nii")
    assert array.dtype == np.dtype("=i2") and np.array_equal(array, data)

    stored = raw_nifti(tmp_path / "s4.nii.gz", shape=(3, 4, 5, 1), sform=np.eye(4))
    array, _, _ = read_nifti(tmp_path / "s4.nii.gz")
    assert array.shape == (3, 4, 5) and np.array_equal(array, stored[..., 0])


def test_nifti2_and_long_axes(tmp_path):
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    ras = np.diag([-2.0, 1.0, 3.0, 1.0])
    nib.save(nib.Nifti2Image(data, ras), tmp_path / "two.nii.gz")
    array, affine, _ = read_nifti(tmp_path / "two.nii.gz")
    assert np.array_equal(array, data)
    np.testing.assert_allclose(affine, LPS_TO_RAS @ ras)
    # More than 32767 voxels along an axis needs NIfTI-2.
    write_nifti(np.ones((40000, 1, 2), np.uint8), np.eye(4), tmp_path / "long.nii.gz", is_label=True)
    assert isinstance(nib.load(tmp_path / "long.nii.gz"), nib.Nifti2Image)
    assert read_nifti(tmp_path / "long.nii.gz")[0].shape == (40000, 1, 2)


def test_highly_compressible_file_needs_no_second_buffer(tmp_path):
    labels = np.zeros((256, 256, 256), np.uint8)
    labels[100:120, 100:120, 100:120] = 5
    write_nifti(labels, np.eye(4), tmp_path / "lab.nii.gz", is_label=True)
    tracemalloc.start()
    try:
        array, _, _ = read_nifti(tmp_path / "lab.nii.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(array, labels)
    assert peak - array.nbytes < 12 * 1024**2


def test_real_4d_is_refused(tmp_path):
    raw_nifti(tmp_path / "fmri.nii.gz", shape=(3, 4, 5, 6), sform=np.eye(4))
    with pytest.raises(InputError, match="6 volumes"):
        read_nifti(tmp_path / "fmri.nii.gz")


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_huge_header_refused_without_allocating(tmp_path, suffix):
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr["dim"] = [3, 30000, 30000, 30000, 1, 1, 1, 1]
    hdr["vox_offset"] = 352
    block = hdr.binaryblock + b"\0" * 4
    path = tmp_path / f"huge{suffix}"
    path.write_bytes(gzip.compress(block) if suffix.endswith("gz") else block)
    tracemalloc.start()
    try:
        with pytest.raises(ResourceLimitError, match="30000x30000x30000"):
            read_nifti(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024**2


def test_limit_is_configurable(tmp_path, monkeypatch):
    raw_nifti(tmp_path / "small.nii", shape=(10, 10, 10), sform=np.eye(4))
    monkeypatch.setenv("MEDRECON_MAX_VOXELS", "999")
    with pytest.raises(ResourceLimitError, match="MEDRECON_MAX_VOXELS"):
        read_nifti(tmp_path / "small.nii")
    monkeypatch.setenv("MEDRECON_MAX_VOXELS", "1000")
    assert read_nifti(tmp_path / "small.nii")[0].shape == (10, 10, 10)


def test_byte_limit_with_size_suffix(tmp_path, monkeypatch):
    raw_nifti(tmp_path / "small.nii", shape=(32, 32, 1), sform=np.eye(4))  # 2048 bytes of int16
    monkeypatch.setenv("MEDRECON_MAX_BYTES", "2K")
    assert read_nifti(tmp_path / "small.nii")[0].shape == (32, 32, 1)
    monkeypatch.setenv("MEDRECON_MAX_BYTES", "2047")
    with pytest.raises(ResourceLimitError, match="2.0 KiB"):
        read_nifti(tmp_path / "small.nii")
    monkeypatch.setenv("MEDRECON_MAX_BYTES", "lots")
    with pytest.raises(InputError, match="MEDRECON_MAX_BYTES"):
        read_nifti(tmp_path / "small.nii")


def test_gzip_bomb_is_not_inflated_past_the_declared_size(tmp_path):
    # One gzip member: a valid 1000-voxel image, then 64 MiB of zeros; then bytes
    # that are not gzip at all. A reader that inflated past the declared size
    # would need 64 MiB and would then fail on the garbage.
    hdr_data = raw_nifti(tmp_path / "plain.nii", shape=(10, 10, 10), sform=np.eye(4))
    body = (tmp_path / "plain.nii").read_bytes()
    stream = gzip.compress(body + b"\0" * (64 << 20), compresslevel=9) + b"garbage, not gzip" * 1000
    (tmp_path / "bomb.nii.gz").write_bytes(stream)
    tracemalloc.start()
    try:
        array, _, _ = read_nifti(tmp_path / "bomb.nii.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(array, hdr_data)
    assert peak < 16 * 1024**2


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_data_is_a_clean_error(tmp_path, suffix):
    raw_nifti(tmp_path / "full.nii", shape=(10, 10, 10), sform=np.eye(4))
    body = (tmp_path / "full.nii").read_bytes()[:-500]
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(gzip.compress(body) if suffix.endswith("gz") else body)
    with pytest.raises(InputError, match="truncated"):
        read_nifti(path)


def test_zero_or_negative_dimension(tmp_path):
    path = tmp_path / "z.nii"
    raw_nifti(path, shape=(4, 5, 6), sform=np.eye(4))
    body = bytearray(path.read_bytes())
    body[44:46] = np.int16(-5).tobytes()  # dim[2]
    path.write_bytes(bytes(body))
    with pytest.raises(InputError, match="positive"):
        read_nifti(path)


def test_not_nifti_and_corrupt_gzip(tmp_path):
    (tmp_path / "a.nii").write_text("this is a text file, not an image\n" * 20)
    with pytest.raises(InputError, match="not a NIfTI"):
        read_nifti(tmp_path / "a.nii")
    raw_nifti(tmp_path / "ok.nii.gz", sform=np.eye(4))
    data = bytearray((tmp_path / "ok.nii.gz").read_bytes())
    data[30:60] = b"\xff" * 30
    (tmp_path / "bad.nii.gz").write_bytes(bytes(data))
    with pytest.raises(InputError):
        read_nifti(tmp_path / "bad.nii.gz")


@pytest.mark.parametrize("pix", [np.nan, np.inf, 0.0, -1.0])
def test_bad_spacing_is_a_geometry_error(tmp_path, pix):
    ras = np.diag([1.0, 1.0, 1.0, 1.0])
    raw_nifti(tmp_path / "p.nii", qform=ras, pixdim=[1, 1.0, pix, 1.0, 1, 1, 1, 1])
    with pytest.raises(GeometryError, match="spacing"):
        read_nifti(tmp_path / "p.nii")


def test_bad_quaternion_is_a_geometry_error(tmp_path):
    raw_nifti(tmp_path / "q.nii", qform=np.eye(4))
    body = bytearray((tmp_path / "q.nii").read_bytes())
    body[256:268] = np.array([0.9, 0.9, 0.9], dtype="<f4").tobytes()  # quatern_b, c, d
    (tmp_path / "q.nii").write_bytes(bytes(body))
    with pytest.raises(GeometryError, match="quaternion"):
        read_nifti(tmp_path / "q.nii")


@pytest.mark.parametrize("bad", ["nan", "singular"])
def test_bad_sform_is_a_geometry_error(tmp_path, bad):
    sform = np.eye(4)
    if bad == "nan":
        sform[1, 1] = np.nan
    else:
        sform[:3, 2] = sform[:3, 0]
    raw_nifti(tmp_path / "s.nii", sform=sform)
    with pytest.raises(GeometryError):
        read_nifti(tmp_path / "s.nii")


def test_rgb_is_unsupported(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw_nifti(tmp_path / "rgb.nii", dtype=np.uint8, datatype=128, sform=np.eye(4))
    with pytest.raises(UnsupportedFormatError, match="RGB"):
        read_nifti(tmp_path / "rgb.nii")


def nibabel_file(data, affine_lps):
    """The bytes nibabel writes for this image, set up as medrecon's writer promises."""
    ras = LPS_TO_RAS @ affine_lps
    klass = nib.Nifti1Image if max(data.shape) <= 32767 else nib.Nifti2Image
    img = klass(data, ras)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(ras, code=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a sheared affine only approximates as a qform
        img.set_qform(ras, code=1)
    img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    return img.to_bytes()


def sheared_affine():
    affine = oblique_flipped_affine()
    affine[:3, :3] += [[0, 0.2, 0], [0, 0, 0], [0.1, 0, 0]]
    return affine


@pytest.mark.parametrize("affine", [np.diag([0.8, 0.8, 2.5, 1.0]), oblique_flipped_affine(), sheared_affine()],
                         ids=["axial", "oblique-flipped", "sheared"])
@pytest.mark.parametrize(("dtype", "is_label"), [(np.float32, False), (np.int16, False), (np.uint8, True)])
def test_written_file_is_nibabels_byte_for_byte(tmp_path, affine, dtype, is_label):
    rng = np.random.default_rng(5)
    data = rng.integers(0, 200, size=(9, 7, 5)).astype(dtype)
    write_nifti(data, affine, tmp_path / "a.nii", is_label=is_label)
    assert (tmp_path / "a.nii").read_bytes() == nibabel_file(data, affine)
    write_nifti(data, affine, tmp_path / "a.nii.gz", is_label=is_label)
    assert gzip.decompress((tmp_path / "a.nii.gz").read_bytes()) == nibabel_file(data, affine)


def test_nifti2_file_is_nibabels_byte_for_byte(tmp_path):
    data = np.arange(40000 * 2, dtype=np.uint8).reshape(40000, 1, 2, order="F")
    write_nifti(data, oblique_flipped_affine(), tmp_path / "long.nii", is_label=True)
    assert (tmp_path / "long.nii").read_bytes() == nibabel_file(data, oblique_flipped_affine())


@pytest.mark.parametrize(("stored", "slope", "inter"), [
    (np.int16, 1.0, -1024.0), (np.int16, 2.0, -1000.0), (np.uint16, 1.0, -1024.0), (np.uint8, 1.0, 0.0),
])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_image_keeps_its_stored_integers(tmp_path, stored, slope, inter, suffix):
    rng = np.random.default_rng(7)
    info = np.iinfo(stored)
    raw = rng.integers(info.min, info.max, size=(11, 9, 4), endpoint=True).astype(stored)
    raw[0, 0, 0], raw[1, 0, 0] = info.min, info.max
    image = raw.astype(np.float32) * np.float32(slope) + np.float32(inter)  # as the DICOM loader makes it
    path = tmp_path / f"ct{suffix}"
    write_nifti(image, np.eye(4), path, is_label=False, scaling=(slope, inter), stored_dtype=stored)
    img = nib.load(path)
    assert img.get_data_dtype() == stored
    assert (img.dataobj.slope, img.dataobj.inter) == (slope, inter)
    assert np.array_equal(img.dataobj.get_unscaled(), raw)
    assert np.array_equal(img.get_fdata(), image)  # float64, from nibabel's own scaling
    assert np.array_equal(sitk_lps(sitk.ReadImage(str(path)))[0], image)
    array, _, meta = read_nifti(path)
    assert np.array_equal(array, image) and meta["stored_dtype"] == np.dtype(stored).name
    assert os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize("case", ["fraction", "nan", "out-of-range", "non-integer-slope", "no-stored-type"])
def test_inexact_images_stay_float32(tmp_path, case):
    image = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) - 1024
    scaling, stored = (1.0, -1024.0), np.int16
    if case == "fraction":
        image[1, 2, 3] = 0.5
    elif case == "nan":
        image[0, 0, 3] = np.nan
    elif case == "out-of-range":
        image[0, 1, 2] = 40000.0
    elif case == "non-integer-slope":
        scaling = (2.5, -1024.0)
    else:
        stored = None
    for suffix in (".nii", ".nii.gz"):
        write_nifti(image, np.eye(4), tmp_path / f"x{suffix}", is_label=False, scaling=scaling,
                    stored_dtype=stored)
        img = nib.load(tmp_path / f"x{suffix}")
        assert img.get_data_dtype() == np.float32 and (img.dataobj.slope, img.dataobj.inter) == (1.0, 0.0)
        assert np.array_equal(img.get_fdata(), image, equal_nan=True)
    assert sorted(os.listdir(tmp_path)) == ["x.nii", "x.nii.gz"]


def test_scaled_nifti_converts_to_the_same_stored_integers(tmp_path):
    from medrecon.io import load, save

    stored = raw_nifti(tmp_path / "in.nii.gz", sform=np.eye(4), slope=2.0, inter=-1024.0)
    save(load(tmp_path / "in.nii.gz"), tmp_path / "out.nii")
    img = nib.load(tmp_path / "out.nii")
    assert img.get_data_dtype() == np.int16 and (img.dataobj.slope, img.dataobj.inter) == (2.0, -1024.0)
    assert np.array_equal(img.dataobj.get_unscaled(), stored)
