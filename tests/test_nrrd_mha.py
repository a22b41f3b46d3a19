"""NRRD and MetaImage readers against SimpleITK and hand-written headers."""

import bz2
import gzip
import tracemalloc
import zlib

import numpy as np
import pytest
import SimpleITK as sitk

from medrecon.errors import InputError, ResourceLimitError, UnsupportedFormatError
from medrecon.io.metaimage import read_metaimage
from medrecon.io.nrrd import read_nrrd, write_nrrd


def sitk_lps(image):
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image).T, affine


def oblique_flipped_affine():
    a, b = np.deg2rad(-25), np.deg2rad(40)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ np.diag([1.0, -1.0, 1.0]) @ np.diag([0.6, 1.1, 3.0])
    affine[:3, 3] = [12.5, -140.0, 77.0]
    return affine


def vec(v):
    return "(" + ",".join(repr(float(x)) for x in v) + ")"


def nrrd_file(path, data, fields, *, encoding="raw", tail=b""):
    """Write an NRRD file by hand: header lines + encoded little-endian data."""
    types = {np.dtype("int16"): "short", np.dtype("uint8"): "uchar", np.dtype("float32"): "float"}
    lines = ["NRRD0004", f"type: {types[data.dtype]}", f"dimension: {data.ndim}",
             "sizes: " + " ".join(map(str, data.shape)), "endian: little", f"encoding: {encoding}", *fields]
    body = data.astype(data.dtype.newbyteorder("<")).tobytes(order="F")
    if encoding == "gzip":
        body = gzip.compress(body)
    path.write_bytes(("\n".join(lines) + "\n\n").encode() + body + tail)


def test_slicer_label_map_matches_simpleitk_and_the_dicom_grid(dcmqi_dir):
    array, affine, meta = read_nrrd(dcmqi_dir / "liver_seg.nrrd")
    ref_array, ref_affine = sitk_lps(sitk.ReadImage(str(dcmqi_dir / "liver_seg.nrrd")))
    assert np.array_equal(array, ref_array) and array.shape == (512, 512, 3)
    np.testing.assert_allclose(affine, ref_affine, atol=1e-6)
    assert set(np.unique(array)) == {0, 1}
    # The label map was drawn on the 3-slice GE series: same grid as SimpleITK's DICOM reading.
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(dcmqi_dir / "ct-3slice")))
    _, dicom_affine = sitk_lps(reader.Execute())
    np.testing.assert_allclose(affine, dicom_affine, atol=1e-3)
    assert meta["space"] == "left-posterior-superior"


def test_nrrd_roundtrip_oblique_flipped_read_by_simpleitk(tmp_path):
    affine = oblique_flipped_affine()
    data = np.random.default_rng(1).integers(-1000, 1000, size=(6, 5, 4)).astype(np.int16)
    write_nrrd(data, affine, tmp_path / "x.nrrd")
    ref_array, ref_affine = sitk_lps(sitk.ReadImage(str(tmp_path / "x.nrrd")))
    assert np.array_equal(ref_array, data)
    np.testing.assert_allclose(ref_affine, affine, atol=1e-6)
    array, ours, _ = read_nrrd(tmp_path / "x.nrrd")
    assert array.dtype == np.int16 and np.array_equal(array, data)
    np.testing.assert_allclose(ours, affine, atol=1e-9)


@pytest.mark.parametrize("space,flip", [("right-anterior-superior", [-1, -1, 1]), ("RAS", [-1, -1, 1]),
                                        ("left-anterior-superior", [1, -1, 1]), ("LPS", [1, 1, 1])])
def test_nrrd_spaces_convert_to_lps(tmp_path, space, flip):
    dirs = np.array([[0.0, 0.8, 0.0], [0.9, 0.0, 0.0], [0.0, 0.0, -2.0]])  # rows: axes in file space
    origin = np.array([10.0, -20.0, 30.0])
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    nrrd_file(tmp_path / "s.nrrd", data, [f"space: {space}", "space directions: " + " ".join(map(vec, dirs)),
                                          "kinds: domain domain domain", f"space origin: {vec(origin)}"])
    array, affine, _ = read_nrrd(tmp_path / "s.nrrd")
    flip = np.asarray(flip, dtype=float)
    np.testing.assert_allclose(affine[:3, :3], flip[:, None] * dirs.T)
    np.testing.assert_allclose(affine[:3, 3], flip * origin)
    assert np.array_equal(array, data)
    if space.islower():  # SimpleITK knows the spelled-out names
        np.testing.assert_allclose(sitk_lps(sitk.ReadImage(str(tmp_path / "s.nrrd")))[1], affine, atol=1e-6)


def test_nrrd_without_space_directions_uses_spacings(tmp_path):
    data = np.zeros((2, 3, 4), np.uint8)
    nrrd_file(tmp_path / "sp.nrrd", data, ["spacings: 0.5 0.25 4"])
    with pytest.warns(UserWarning, match="no 'space directions'"):
        _, affine, meta = read_nrrd(tmp_path / "sp.nrrd")
    np.testing.assert_allclose(affine, np.diag([0.5, 0.25, 4.0, 1.0]))
    assert meta["affine_source"] == "spacings"


def test_nrrd_vector_axis_refused_singleton_list_dropped(tmp_path):
    fields = ["space: left-posterior-superior", "space directions: none (1,0,0) (0,1,0) (0,0,1)"]
    nrrd_file(tmp_path / "v.nrrd", np.zeros((3, 2, 2, 2), np.uint8), [*fields, "kinds: vector domain domain domain"])
    with pytest.raises(InputError, match="vector axis of 3 components"):
        read_nrrd(tmp_path / "v.nrrd")
    data = np.arange(8, dtype=np.uint8).reshape(1, 2, 2, 2)
    nrrd_file(tmp_path / "l.nrrd", data, [*fields, "kinds: list domain domain domain"])
    array, affine, _ = read_nrrd(tmp_path / "l.nrrd")
    assert array.shape == (2, 2, 2) and np.array_equal(array, data[0])
    np.testing.assert_allclose(affine, np.eye(4))


def test_slicer_segment_names(tmp_path):
    data = np.zeros((3, 3, 3), np.uint8)
    data[0, 0, 0], data[2, 2, 2] = 5, 1
    nrrd_file(tmp_path / "seg.seg.nrrd", data, [
        "space: left-posterior-superior", "space directions: (1,0,0) (0,1,0) (0,0,1)",
        "Segment0_ID:=Segment_1", "Segment0_Name:=liver", "Segment0_LabelValue:=5", "Segment0_Layer:=0",
        "Segment1_ID:=Segment_2", "Segment1_Name:=spleen", "Segment1_LabelValue:=1", "Segment1_Layer:=0",
    ])
    _, _, meta = read_nrrd(tmp_path / "seg.seg.nrrd")
    assert meta["names"] == {5: "liver", 1: "spleen"}


def test_detached_nhdr_gzip(tmp_path):
    data = np.random.default_rng(2).normal(size=(4, 3, 2)).astype(np.float32)
    (tmp_path / "d.raw.gz").write_bytes(gzip.compress(data.tobytes(order="F")))
    (tmp_path / "d.nhdr").write_text(
        "NRRD0004\ntype: float\ndimension: 3\nsizes: 4 3 2\nendian: little\nencoding: gzip\n"
        "space: left-posterior-superior\nspace directions: (2,0,0) (0,2,0) (0,0,2)\n"
        "space origin: (1,2,3)\ndata file: d.raw.gz\n"
    )
    array, affine, _ = read_nrrd(tmp_path / "d.nhdr")
    assert np.array_equal(array, data)
    np.testing.assert_allclose(affine, sitk_lps(sitk.ReadImage(str(tmp_path / "d.nhdr")))[1])
    (tmp_path / "d.raw.gz").unlink()
    with pytest.raises(InputError, match="does not exist"):
        read_nrrd(tmp_path / "d.nhdr")


def test_nrrd_huge_truncated_bomb(tmp_path):
    (tmp_path / "h.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 30000 30000 30000\n"
                                      b"endian: little\nencoding: gzip\n\n" + gzip.compress(b"\0" * 1000))
    tracemalloc.start()
    try:
        with pytest.raises(ResourceLimitError):
            read_nrrd(tmp_path / "h.nrrd")
        assert tracemalloc.get_traced_memory()[1] < 8 * 1024**2
    finally:
        tracemalloc.stop()
    data = np.arange(1000, dtype=np.int16).reshape(10, 10, 10)
    nrrd_file(tmp_path / "t.nrrd", data, [])
    (tmp_path / "t.nrrd").write_bytes((tmp_path / "t.nrrd").read_bytes()[:-10])
    with pytest.raises(InputError, match="truncated"):
        read_nrrd(tmp_path / "t.nrrd")
    # gzip member with 64 MiB of extra zeros after the declared data, then garbage
    head = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 10 10 10\nendian: little\nencoding: gzip\n\n"
    body = gzip.compress(data.tobytes(order="F") + b"\0" * (64 << 20), compresslevel=9) + b"not gzip" * 100
    (tmp_path / "b.nrrd").write_bytes(head + body)
    assert np.array_equal(read_nrrd(tmp_path / "b.nrrd")[0], data)


def test_nrrd_bzip2_and_ascii_encodings(tmp_path):
    data = np.random.default_rng(5).integers(-500, 500, size=(9, 7, 3)).astype(np.int16)
    head = "NRRD0004\ntype: short\ndimension: 3\nsizes: 9 7 3\nendian: little\nencoding: {}\n\n"
    # bzip2 in small pieces of two streams, then zero padding: exercises the member loop.
    raw = data.tobytes(order="F")
    body = bz2.compress(raw[:100]) + bz2.compress(raw[100:]) + b"\0" * 8
    (tmp_path / "b.nrrd").write_bytes(head.format("bzip2").encode() + body)
    assert np.array_equal(read_nrrd(tmp_path / "b.nrrd")[0], data)
    text = "\n".join(" ".join(map(str, row)) for row in data.ravel(order="F").reshape(-1, 9))
    (tmp_path / "a.nrrd").write_bytes(head.format("ascii").encode() + text.encode() + b"\n")
    assert np.array_equal(read_nrrd(tmp_path / "a.nrrd")[0], data)
    (tmp_path / "c.nrrd").write_bytes(head.format("bzip2").encode() + bz2.compress(raw)[:-40])
    with pytest.raises(InputError):
        read_nrrd(tmp_path / "c.nrrd")


def test_not_nrrd(tmp_path):
    (tmp_path / "x.nrrd").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(InputError):
        read_nrrd(tmp_path / "x.nrrd")
    nrrd_file(tmp_path / "s.nrrd", np.zeros((2, 2, 2), np.uint8), ["line skip: 999999999999"])
    with pytest.raises(InputError, match="lines to skip"):
        read_nrrd(tmp_path / "s.nrrd")


@pytest.mark.parametrize("name,compress", [("o.mha", False), ("o.mhd", False), ("oz.mha", True)])
def test_metaimage_oblique_anisotropic_matches_simpleitk(tmp_path, name, compress):
    affine = oblique_flipped_affine()
    data = np.random.default_rng(4).normal(0, 50, size=(7, 5, 3)).astype(np.float32)
    image = sitk.GetImageFromArray(data.T)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((affine[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(affine[:3, 3].tolist())
    sitk.WriteImage(image, str(tmp_path / name), compress)
    ref_array, ref_affine = sitk_lps(sitk.ReadImage(str(tmp_path / name)))
    array, ours, meta = read_metaimage(tmp_path / name)
    assert array.dtype == np.float32 and np.array_equal(array, ref_array)
    np.testing.assert_allclose(ours, ref_affine, atol=1e-9)
    np.testing.assert_allclose(ours, affine, atol=1e-9)
    assert meta["compressed"] is compress


def test_metaimage_big_endian_and_detached_raw(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    (tmp_path / "b.raw").write_bytes(data.astype(">i2").tobytes(order="F"))
    (tmp_path / "b.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = True\n"
        "ElementSpacing = 1 2 3\nOffset = 5 6 7\nDimSize = 2 3 4\nElementType = MET_SHORT\n"
        "ElementDataFile = b.raw\n"
    )
    array, affine, _ = read_metaimage(tmp_path / "b.mhd")
    ref_array, ref_affine = sitk_lps(sitk.ReadImage(str(tmp_path / "b.mhd")))
    assert np.array_equal(array, data) and np.array_equal(ref_array, data)
    np.testing.assert_allclose(affine, ref_affine)


def test_metaimage_singleton_4d(tmp_path):
    image = sitk.Image([3, 4, 5, 1], sitk.sitkInt16)
    image.SetSpacing((0.5, 0.6, 0.7, 1.0))
    image.SetOrigin((1.0, 2.0, 3.0, 0.0))
    sitk.WriteImage(image, str(tmp_path / "f.mha"))
    array, affine, _ = read_metaimage(tmp_path / "f.mha")
    assert array.shape == (3, 4, 5)
    expected = np.diag([0.5, 0.6, 0.7, 1.0])
    expected[:3, 3] = [1.0, 2.0, 3.0]
    np.testing.assert_allclose(affine, expected)


def test_metaimage_errors(tmp_path):
    head = "ObjectType = Image\nNDims = 3\nBinaryData = True\nElementType = MET_SHORT\n"
    (tmp_path / "h.mha").write_bytes((head + "DimSize = 30000 30000 30000\nElementDataFile = LOCAL\n").encode()
                                     + b"\0" * 100)
    with pytest.raises(ResourceLimitError):
        read_metaimage(tmp_path / "h.mha")
    (tmp_path / "t.mha").write_bytes((head + "DimSize = 10 10 10\nElementDataFile = LOCAL\n").encode() + b"\0" * 100)
    with pytest.raises(InputError, match="truncated"):
        read_metaimage(tmp_path / "t.mha")
    (tmp_path / "c.mha").write_bytes((head + "DimSize = 2 2 2\nElementNumberOfChannels = 3\n"
                                      "ElementDataFile = LOCAL\n").encode() + b"\0" * 48)
    with pytest.raises(InputError, match="3 channels"):
        read_metaimage(tmp_path / "c.mha")
    z = zlib.compress(b"\0" * 16 + b"\1" * (64 << 20), 9) + b"junk" * 100
    (tmp_path / "z.mha").write_bytes((head + "CompressedData = True\nDimSize = 2 2 2\nElementDataFile = LOCAL\n").encode() + z)
    assert not read_metaimage(tmp_path / "z.mha")[0].any()
    (tmp_path / "x.mha").write_bytes(b"\0\1\2 binary junk\n" * 10)
    with pytest.raises(InputError, match="not a MetaImage"):
        read_metaimage(tmp_path / "x.mha")
    (tmp_path / "l.mhd").write_text(head + "DimSize = 2 2 2\nElementDataFile = LIST\n")
    with pytest.raises(UnsupportedFormatError):
        read_metaimage(tmp_path / "l.mhd")
    (tmp_path / "n.mha").write_bytes((head + "DimSize = 2 2 2\nTransformMatrix = 1 0 0 0 nan 0 0 0 1\n"
                                      "ElementDataFile = LOCAL\n").encode() + b"\0" * 16)
    with pytest.raises(InputError, match=r"n\.mha: affine holds NaN"):
        read_metaimage(tmp_path / "n.mha")


def test_metaimage_with_foreign_metadata_keys_from_nifti(tmp_path, totalseg_dir):
    # SimpleITK copies NIfTI header fields ("dim[0] = 3", "qto_xyz", ...) into the .mha
    img = sitk.ReadImage(str(totalseg_dir / "example_ct_sm.nii.gz"))
    path = tmp_path / "from_nifti.mha"
    sitk.WriteImage(img, str(path))
    assert b"dim[" in path.read_bytes()[:4000]
    array, affine, _meta = read_metaimage(path)
    assert np.array_equal(array, sitk.GetArrayFromImage(img).transpose(2, 1, 0))
    assert np.allclose(affine[:3, 3], img.GetOrigin(), atol=1e-4)
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    assert np.allclose(affine[:3, :3], direction * np.asarray(img.GetSpacing()), atol=1e-6)
