import json

import nibabel as nib
import numpy as np
import pytest
from _builders import write_rtstruct

from medrecon.errors import GeometryError, InputError
from medrecon.labels import FIRST_NEW_LABEL
from medrecon.sources.imported import (
    detect_label_source,
    import_labels,
    read_rtstruct,
    read_totalseg_folder,
)
from medrecon.volume import LPS_TO_RAS, LabelMap, Volume


def _image(flip_j=True):
    """A (40, 36, 10) grid, 1.5 x 1.5 x 3 mm, j axis pointing anterior (flipped)."""
    affine = np.diag([1.5, -1.5 if flip_j else 1.5, 3.0, 1.0])
    affine[:3, 3] = [-30.0, 25.0, -12.0]
    return Volume(np.zeros((40, 36, 10), np.float32), affine, modality="CT", units="HU")


def _circle(cx, cy, z, r, n=96):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t), np.full(n, z)], 1)


def test_rtstruct_sphere_and_ring_rasterised_on_flipped_grid(tmp_path):
    img = _image()
    centre, radius = np.array([-2.0, -1.0, 1.5]), 12.0
    zs = img.voxel_to_world(np.stack([np.zeros(10), np.zeros(10), np.arange(10)], 1))[:, 2]
    sphere = [_circle(centre[0], centre[1], z, np.sqrt(radius**2 - (z - centre[2]) ** 2))
              for z in zs if abs(z - centre[2]) < radius - 0.5]
    ring_z = zs[7]
    ring = [_circle(5.0, 0.0, ring_z, 9.0), _circle(5.0, 0.0, ring_z, 4.0)]
    path = write_rtstruct(tmp_path / "rs.dcm", [(1, "Liver", sphere), (2, "GTV ring", ring)])
    assert detect_label_source(path) == "rtstruct"
    lm = read_rtstruct(path, img)
    assert lm.same_grid(img)
    assert lm.names == {5: "liver", FIRST_NEW_LABEL: "GTV ring"}
    # analytic truth: voxel centres inside the circle of their slice
    ijk = np.stack(np.meshgrid(*map(np.arange, img.shape), indexing="ij"), -1).reshape(-1, 3)
    xyz = img.voxel_to_world(ijk).reshape(*img.shape, 3)
    in_plane = np.hypot(xyz[..., 0] - centre[0], xyz[..., 1] - centre[1])
    slice_r = np.sqrt(np.clip(radius**2 - (xyz[..., 2] - centre[2]) ** 2, 0, None))
    has_contour = np.abs(xyz[..., 2] - centre[2]) < radius - 0.5
    truth = (in_plane <= slice_r) & has_contour
    got = lm.array == 5
    # the ring's slice also holds sphere voxels painted under the ring (smaller ROI on top)
    ring_d = np.hypot(xyz[..., 0] - 5.0, xyz[..., 1])
    ring_truth = (ring_d <= 9.0) & (ring_d > 4.0) & np.isclose(xyz[..., 2], ring_z)
    assert np.array_equal(lm.array == FIRST_NEW_LABEL, ring_truth) or \
        np.mean((lm.array == FIRST_NEW_LABEL) != ring_truth) < 1e-3
    comparable = ~ring_truth
    mismatch = (got != truth) & comparable
    # only voxels within 0.2 mm of the circle may differ (polygon vs circle)
    assert np.all(np.abs(in_plane[mismatch] - slice_r[mismatch]) < 0.2)
    assert truth[comparable].sum() > 500
    assert not (lm.array[ring_d <= 3.9] == FIRST_NEW_LABEL).any()  # the hole stays empty


def test_rtstruct_off_grid_contours_are_refused(tmp_path):
    img = _image()
    tilted = _circle(0.0, 0.0, 0.0, 8.0)
    tilted[:, 2] += 0.5 * (tilted[:, 0])  # leaves the image plane
    path = write_rtstruct(tmp_path / "rs.dcm", [(1, "spleen", [tilted])])
    with pytest.raises(GeometryError, match="plane of the image grid"):
        read_rtstruct(path, img)
    with pytest.raises(InputError, match="need the image"):
        import_labels(path)


def _ts_reference(totalseg_dir):
    seg = nib.load(totalseg_dir / "example_seg.nii.gz")
    names = {int(k): v for k, v in json.loads((totalseg_dir / "class_map_total.json").read_text()).items()}
    return np.asarray(seg.dataobj), seg.affine, names


def test_totalsegmentator_folder_matches_multilabel_file(tmp_path, totalseg_dir):
    arr, ras_affine, names = _ts_reference(totalseg_dir)
    folder = tmp_path / "segmentations"
    folder.mkdir()
    wanted = [1, 5, 6, 52, 32]
    for label in wanted:
        nib.save(nib.Nifti1Image((arr == label).astype(np.uint8), ras_affine), folder / f"{names[label]}.nii.gz")
    # TotalSegmentator writes every class, also empty ones
    nib.save(nib.Nifti1Image(np.zeros(arr.shape, np.uint8), ras_affine), folder / "brain.nii.gz")
    assert detect_label_source(folder) == "totalseg_folder"
    lm = read_totalseg_folder(folder)
    expected = np.where(np.isin(arr, wanted), arr, 0)
    assert np.array_equal(lm.array, expected)
    assert dict(lm.names) == {k: names[k] for k in wanted}
    assert np.allclose(lm.affine, LPS_TO_RAS @ ras_affine)


def test_labels_resampled_onto_image_grid(totalseg_dir):
    """dcm2niix's grid of the real DICOM is row-flipped against DICOM order: the same voxels."""
    seg_path = totalseg_dir / "example_seg_dicom.nii.gz"
    seg = nib.load(seg_path)
    ras = seg.affine
    lps = LPS_TO_RAS @ ras
    flip = np.array([[1, 0, 0, 0], [0, -1, 0, seg.shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]])
    image = Volume(np.zeros(seg.shape, np.float32), lps @ flip, modality="CT")
    lm = import_labels(seg_path, image=image, names=totalseg_dir / "class_map_total.json")
    assert lm.same_grid(image)
    assert np.array_equal(lm.array, np.asarray(seg.dataobj)[:, ::-1, :])
    assert lm.name_of(5) == "liver"


def test_nrrd_and_dicom_seg_of_the_same_liver_agree(dcmqi_dir):
    nrrd = import_labels(dcmqi_dir / "liver_seg.nrrd")
    seg = import_labels(dcmqi_dir / "liver.dcm", image=None)
    assert detect_label_source(dcmqi_dir / "liver.dcm") == "seg"
    on_grid = seg.resample_like(nrrd)
    a, b = nrrd.array > 0, on_grid.array > 0
    assert a.sum() > 1000
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.99


def test_a_ct_image_is_not_a_segmentation(dcmqi_dir):
    with pytest.raises(InputError, match="not a segmentation"):
        detect_label_source(dcmqi_dir / "ct-3slice" / "01.dcm")


def test_labelmap_names_are_sanitised(tmp_path):
    img = _image(flip_j=False)
    path = write_rtstruct(tmp_path / "rs.dcm", [(3, "Tumour\x00^left\nlobe", [_circle(0, 50, img.origin[2] + 9.0, 8.0)])])
    lm = import_labels(path, image=img)
    assert list(lm.names.values()) == ["Tumour left lobe"]
    assert isinstance(lm, LabelMap)
