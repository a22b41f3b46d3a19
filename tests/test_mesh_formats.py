"""One segmentation in two files made by other tools (3D Slicer NRRD, dcmqi DICOM SEG) gives one surface."""

import numpy as np

from medrecon.io import load, load_labels
from medrecon.surface import label_surfaces


def test_nrrd_and_dicom_seg_give_the_same_surface_over_the_ct(dcmqi_dir):
    [from_nrrd] = (m.to_trimesh() for m in label_surfaces(load_labels(dcmqi_dir / "liver_seg.nrrd")).values())
    [from_seg] = (m.to_trimesh() for m in label_surfaces(load_labels(dcmqi_dir / "liver.dcm")).values())
    a = np.unique(np.round(from_nrrd.vertices, 3), axis=0)
    b = np.unique(np.round(from_seg.vertices, 3), axis=0)
    assert a.shape == b.shape and np.allclose(a, b, atol=2e-3)
    assert from_nrrd.volume > 0 and from_seg.volume == from_nrrd.volume
    # and it lies in the CT series the segmentation was drawn on
    ct = load(dcmqi_dir / "ct-3slice")
    ijk = ct.world_to_voxel(from_seg.vertices)
    assert np.all(ijk > -1.0) and np.all(ijk < np.asarray(ct.shape))
