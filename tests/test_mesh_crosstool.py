"""Cross-tool check of the report's volume and area against VTK, pyradiomics-style.

pyradiomics' shape features (MeshVolume, SurfaceArea) run marching cubes on the
mask padded by one voxel and sum signed tetrahedra and triangle areas. It does
not install here, so the independent reference is VTK doing the same: its
classic marching cubes on the padded mask and vtkMassProperties. With smoothing
and decimation off our report must agree within 1 %, small masks included.
"""

import numpy as np
import pytest
from scipy import ndimage

from medrecon.mesh import MeshOptions, build_organ_meshes
from medrecon.volume import LabelMap

vtk_np = pytest.importorskip("vtkmodules.util.numpy_support")


def vtk_volume_area(mask: np.ndarray, spacing) -> tuple[float, float]:
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersCore import vtkMarchingCubes, vtkMassProperties

    padded = np.pad(mask.astype(np.uint8), 1)
    image = vtkImageData()
    image.SetDimensions(*padded.shape)
    image.SetSpacing(*[float(s) for s in spacing])
    image.GetPointData().SetScalars(vtk_np.numpy_to_vtk(padded.ravel(order="F"), deep=True))
    mc = vtkMarchingCubes()
    mc.SetInputData(image)
    mc.SetValue(0, 0.5)
    mc.ComputeNormalsOff()
    props = vtkMassProperties()
    props.SetInputConnection(mc.GetOutputPort())
    props.Update()
    return props.GetVolume(), props.GetSurfaceArea()


def raw_reports(labels: LabelMap, organs=None, engine="auto"):
    return build_organ_meshes(labels, MeshOptions(smooth=0.0, decimate=0.0, engine=engine), organs=organs)


def assert_agrees(organ, labels: LabelMap):
    volume, area = vtk_volume_area(labels.mask(organ.label), labels.spacing)
    assert organ.report["mesh_volume_ml"] * 1000 == pytest.approx(volume, rel=0.01), organ.name
    assert organ.report["surface_area_mm2"] == pytest.approx(area, rel=0.01), organ.name


def synthetic_masks() -> LabelMap:
    rng = np.random.default_rng(7)
    array = np.zeros((40, 36, 20), np.uint8)
    g = np.mgrid[:40, :36, :20]
    array[((g[0] - 8) ** 2 + (g[1] - 8) ** 2 + (g[2] - 6) ** 2) <= 9] = 1  # r = 3 voxels
    blob = ndimage.gaussian_filter(rng.normal(size=(18, 18, 10)), 1.5) > 0.05
    array[20:38, 16:34, 8:18][blob] = 2  # irregular, several pieces
    array[2, 30, 2] = 3  # one voxel
    array[5, 30, 5:7] = 4  # two voxels
    array[30:33, 2:4, 2:4] = 5  # a small box
    # oblique and flipped: volume and area do not depend on orientation
    c, s = np.cos(0.4), np.sin(0.4)
    affine = np.array([[-0.7 * c, -0.9 * s, 0, 10], [-0.7 * s, 0.9 * c, 0, -5], [0, 0, 2.5, 30], [0, 0, 0, 1]])
    return LabelMap(array, affine)


@pytest.mark.parametrize("engine", ["skimage", "vtk"])
def test_synthetic_masks_agree_with_vtk(engine):
    labels = synthetic_masks()
    for organ in raw_reports(labels, engine=engine):
        assert_agrees(organ, labels)


def test_real_totalsegmentator_masks_agree_with_vtk(totalseg_dir):
    from medrecon.io import load_labels

    labels = load_labels(totalseg_dir / "example_seg.nii.gz", names=totalseg_dir / "class_map_total.json")
    # large, medium, thin and single-voxel structures
    organs = raw_reports(labels, organs=["liver", "spleen", "aorta", "rib_left_7", "lung_middle_lobe_right"])
    assert len(organs) == 5
    for organ in organs:
        assert_agrees(organ, labels)
