"""What kind of image is this: real CTs and label maps, and the refusals it drives in the CLI.

Ground truth: real files whose kind is known (TotalSegmentator's CT and its own
segmentation, dcmqi's CT slices and 3D Slicer label maps), and synthetic arrays
built here to be one kind or the other (smooth noise of thousands of values, a
lattice of 2,000 one-voxel labels).
"""

import time

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from medrecon.cli import main
from medrecon.errors import ImageKindError
from medrecon.imagekind import classify, name_suggests_labels, require_image, require_labels
from medrecon.io import load, load_labels, save
from medrecon.io.dicom import load_dicom
from medrecon.volume import LabelMap, Volume


def smooth_noise(shape=(48, 44, 40), *, levels=4000, seed=0) -> np.ndarray:
    """An MR-like intensity image: smooth noise over 0..levels, integers, non-negative."""
    field = gaussian_filter(np.random.default_rng(seed).normal(size=shape), 2.0)
    field = (field - field.min()) / (field.max() - field.min())
    return np.round(field * levels).astype(np.int16)


def test_real_ct_and_real_label_maps(totalseg_dir, dcmqi_dir):
    ct = load(totalseg_dir / "example_ct_sm.nii.gz")
    kind = classify(ct.array)
    assert kind.kind == "ct" and "air near" in kind.reason
    slices = load_dicom(dcmqi_dir / "ct-3slice")  # -3024 padding outside the field of view
    assert classify(slices.array).kind == "ct"
    for name in ("example_seg.nii.gz", "example_seg_dicom.nii.gz"):
        assert classify(load_labels(totalseg_dir / name).array).is_labels
    for name in ("liver_seg", "spine_seg", "heart_seg", "liver_spine_seg"):  # made in 3D Slicer
        assert classify(load_labels(dcmqi_dir / f"{name}.nrrd").array).is_labels
    # integer-valued floats are still labels; a half-voxel shift of the CT is an image
    seg = np.asarray(load_labels(totalseg_dir / "example_seg.nii.gz").array)
    assert classify(seg.astype(np.float32)).is_labels
    assert classify(np.asarray(ct.array) + 0.5).kind == "ct"


def test_intensity_images_that_are_not_ct():
    mr = smooth_noise()
    assert np.unique(mr).size > 2000 and mr.min() >= 0
    kind = classify(mr)
    assert kind.kind == "intensity" and "change from voxel to voxel" in kind.reason
    assert classify(mr.astype(np.float32) / 7).kind == "intensity"  # non-integral
    assert "negative" in classify(mr - 50).reason
    assert classify(mr, modality="MR").kind == "intensity"
    assert classify(np.zeros((4, 4, 4), np.int16), modality="CT").kind == "constant"


def test_sparse_and_few_valued_label_maps():
    lattice = np.zeros((34, 34, 34), np.int16)
    points = [(i, j, k) for i in range(1, 34, 2) for j in range(1, 34, 2) for k in range(1, 34, 2)]
    for label, p in enumerate(points[:2000], start=1):
        lattice[p] = label
    assert classify(lattice).reason == "a label map (2,000 labels forming regions)"
    # three tissue classes of a noisy image change from voxel to voxel and are still labels
    classes = np.random.default_rng(1).integers(0, 4, (20, 20, 20)).astype(np.uint8)
    assert classify(classes).is_labels
    assert classify(np.zeros((3, 3, 3), bool) | (np.arange(27).reshape(3, 3, 3) > 13)).is_labels


def test_classify_is_fast_on_a_full_size_ct(totalseg_dir):
    ct = np.tile(np.asarray(load(totalseg_dir / "example_ct_sm.nii.gz").array), (5, 6, 10))
    seg = np.tile(np.asarray(load_labels(totalseg_dir / "example_seg.nii.gz").array), (5, 6, 10))
    assert ct.shape == (610, 606, 300)
    for array, kind in ((ct, "ct"), (seg, "labels"), (np.asfortranarray(ct), "ct")):
        start = time.perf_counter()
        assert classify(array).kind == kind
        assert time.perf_counter() - start < 1.0


def test_require_functions_and_their_overrides():
    mr = smooth_noise()
    with pytest.raises(ImageKindError, match=r"^mr.nii: this looks like an intensity image .*--force-labels"):
        require_labels(mr, source="mr.nii")
    assert require_labels(mr, force=True).kind == "intensity"
    assert require_labels(np.zeros((3, 3, 3), np.uint8)).kind == "constant"  # empty: not refused here
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:6, 2:6, 2:6] = 5
    with pytest.raises(ImageKindError, match="looks like a label map .*--force-image"):
        require_image(labels)
    assert require_image(labels, force=True).is_labels
    assert require_image(labels, modality="CT").kind == "ct"  # a DICOM CT is an image whatever it holds
    assert name_suggests_labels("Liver_SEG.nii.gz") and not name_suggests_labels("ct.nii.gz")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("medrecon: error: "), err
    return err


def test_mesh_refuses_a_real_ct_within_seconds(tmp_path, totalseg_dir, capsys):
    start = time.perf_counter()
    assert main(["mesh", str(totalseg_dir / "example_ct_sm.nii.gz"), "-o", str(tmp_path / "out")]) == 1
    assert time.perf_counter() - start < 5.0
    err = _one_line_error(capsys)
    assert "looks like a CT in Hounsfield units" in err and "--force-labels" in err
    assert not (tmp_path / "out").exists()
    # and so does reconstruct when the CT comes as --labels
    assert main(["reconstruct", str(totalseg_dir / "example_ct_sm.nii.gz"), "--labels",
                 str(totalseg_dir / "example_ct_sm.nii.gz"), "-o", str(tmp_path / "rec"), "--quiet"]) == 1
    assert "looks like a CT" in _one_line_error(capsys)
    assert not (tmp_path / "rec" / "meshes").exists()


def test_mesh_refuses_an_mr_like_image_and_force_labels_overrides(tmp_path, capsys):
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    save(Volume(array=smooth_noise(), affine=affine), tmp_path / "mr.nii.gz")
    assert main(["mesh", str(tmp_path / "mr.nii.gz"), "-o", str(tmp_path / "out")]) == 1
    assert "change from voxel to voxel" in _one_line_error(capsys)
    # the rare real case: 64 one-voxel labels that all touch each other
    small = (np.arange(64).reshape(4, 4, 4) + 1).astype(np.int16)
    save(Volume(array=small, affine=affine), tmp_path / "small.nii.gz")
    assert main(["mesh", str(tmp_path / "small.nii.gz"), "-o", str(tmp_path / "o1")]) == 1
    assert "--force-labels" in _one_line_error(capsys)
    assert main(["mesh", str(tmp_path / "small.nii.gz"), "-o", str(tmp_path / "o2"), "--force-labels"]) == 0
    assert len(list((tmp_path / "o2" / "meshes").iterdir())) == 64


def test_integer_valued_float_labels_through_the_cli(tmp_path, capsys):
    import nibabel as nib

    a = np.zeros((12, 12, 12), np.float32)
    a[2:6, 2:6, 2:6] = 1.0
    a[7:10, 7:10, 7:10] = 7.0
    nib.save(nib.Nifti1Image(a, np.eye(4)), tmp_path / "float_labels.nii.gz")
    assert main(["mesh", str(tmp_path / "float_labels.nii.gz"), "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "meshes").iterdir()) == ["label_1.stl", "label_7.stl"]


def test_segment_and_presets_refuse_a_real_label_map(tmp_path, totalseg_dir, capsys):
    seg = totalseg_dir / "example_seg.nii.gz"
    start = time.perf_counter()
    assert main(["segment", str(seg), "-o", str(tmp_path / "x.nii.gz"), "--quiet"]) == 1
    assert time.perf_counter() - start < 5.0
    err = _one_line_error(capsys)
    assert "looks like a label map" in err and "--force-image" in err
    assert not (tmp_path / "x.nii.gz").exists()
    assert main(["reconstruct", str(seg), "--preset", "bone", "-o", str(tmp_path / "rec"), "--quiet"]) == 1
    assert "looks like a label map" in _one_line_error(capsys)
    assert not (tmp_path / "rec").exists()


def test_an_empty_label_file_stays_an_empty_segmentation_error(tmp_path, capsys):
    save(LabelMap(array=np.zeros((6, 6, 6), np.uint8), affine=np.eye(4)), tmp_path / "empty.nii.gz")
    assert main(["mesh", str(tmp_path / "empty.nii.gz"), "-o", str(tmp_path / "out")]) == 1
    assert "looks like" not in _one_line_error(capsys)
