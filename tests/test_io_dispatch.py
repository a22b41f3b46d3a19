"""medrecon.io.load / load_labels / save dispatch on NIfTI, NRRD and MetaImage."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from medrecon.errors import InputError, UnsupportedFormatError
from medrecon.io import detect_format, load, load_labels, save
from medrecon.volume import LabelMap, Volume


def test_real_ct_and_its_segmentation(totalseg_dir):
    ct = load(totalseg_dir / "example_ct_sm.nii.gz")
    seg = load_labels(totalseg_dir / "example_seg.nii.gz", names=totalseg_dir / "class_map_total.json")
    assert isinstance(ct, Volume) and isinstance(seg, LabelMap)
    assert ct.source.endswith("example_ct_sm.nii.gz") and ct.meta["format"] == "nifti"
    assert ct.same_grid(seg)
    np.testing.assert_allclose(ct.spacing, [3.0, 3.0, 3.0])
    assert seg.name_of(5) == "liver" and seg.label_of("spleen") == 1
    # Unenhanced soft tissue (this CT's aorta is ~40 HU): far from fat (-100), air and bone.
    # A mirrored or mis-ordered array would put these masks over other tissue.
    for organ in ("liver", "spleen", "aorta"):
        hu = float(np.asarray(ct.array)[seg.mask(seg.label_of(organ))].mean())
        assert 20 < hu < 120, organ


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_save_and_load_labels_with_sidecar(tmp_path, suffix):
    affine = np.array([[0, -0.8, 0, 10], [0.8, 0, 0, -5], [0, 0, -2.5, 40], [0, 0, 0, 1.0]])
    array = np.zeros((5, 4, 3), np.uint8)
    array[1:3, 1:3, 1] = 5
    array[4, 3, 2] = 52
    labels = LabelMap(array=array, affine=affine, names={5: "liver", 52: "aorta"})
    path = save(labels, tmp_path / f"labels{suffix}")
    assert json.loads((tmp_path / "labels.json").read_text()) == {"5": "liver", "52": "aorta"}
    back = load_labels(path)
    assert back.same_grid(labels, atol=1e-6) and np.array_equal(back.array, array)
    assert dict(back.names) == {5: "liver", 52: "aorta"}
    # Another tool agrees on the file's geometry.
    image = sitk.ReadImage(str(path))
    assert np.allclose(image.GetOrigin(), affine[:3, 3], atol=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(image).T, array)


def test_save_and_load_volume(tmp_path):
    data = np.random.default_rng(0).normal(40, 20, size=(6, 5, 4)).astype(np.float32)
    vol = Volume(array=data, affine=np.diag([0.7, 0.7, 2.0, 1.0]), modality="CT", units="HU")
    for name in ("v.nii.gz", "v.nrrd"):
        back = load(save(vol, tmp_path / name))
        assert back.same_grid(vol) and np.array_equal(back.array, data)
    assert not (tmp_path / "v.json").exists()
    with pytest.raises(UnsupportedFormatError):
        save(vol, tmp_path / "v.mha")


def test_metaimage_dispatch(tmp_path):
    image = sitk.GetImageFromArray(np.arange(24, dtype=np.int16).reshape(4, 3, 2))
    image.SetSpacing((0.5, 1.0, 2.0))
    sitk.WriteImage(image, str(tmp_path / "m.mha"))
    assert detect_format(tmp_path / "m.mha") == "metaimage"
    vol = load(tmp_path / "m.mha")
    np.testing.assert_allclose(vol.spacing, [0.5, 1.0, 2.0])
    assert vol.shape == (2, 3, 4)


def test_slicer_names_used_unless_a_sidecar_exists(tmp_path):
    header = ("NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n"
              "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
              "Segment0_Name:=liver\nSegment0_LabelValue:=5\n\n")
    (tmp_path / "s.nrrd").write_bytes(header.encode() + bytes([0, 5, 0, 0, 0, 0, 0, 5]))
    assert dict(load_labels(tmp_path / "s.nrrd").names) == {5: "liver"}
    (tmp_path / "s.json").write_text('{"5": "hepar"}')
    assert dict(load_labels(tmp_path / "s.nrrd").names) == {5: "hepar"}
    assert dict(load_labels(tmp_path / "s.nrrd", names={5: "x"}).names) == {5: "x"}


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load(tmp_path / "nothing.nii.gz")
