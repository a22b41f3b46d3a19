"""Presets judged on real CTs: a head (the bone preset must not fill the cranium) and an
abdomen with TotalSegmentator's labels (the vessel preset must lie in vessels, not bone)."""

import json
import warnings

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medrecon.io import load
from medrecon.pipeline import ReconstructConfig, reconstruct
from medrecon.sources.presets import load_presets, preset_mask
from medrecon.surface import mask_surface
from medrecon.volume import LPS_TO_RAS, LabelMap

BONE_PREFIXES = ("vertebrae", "rib", "sacrum", "hip", "femur", "sternum", "scapula", "clavicula",
                 "humerus", "skull", "costal")
VESSEL_WORDS = ("aorta", "vena_cava", "portal_vein", "artery", "iliac_vena", "brachiocephalic_vein")


@pytest.fixture(scope="module")
def head(data_dir):
    """The real head CT; its gantry tilt and uneven slices are resampled (with a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load(data_dir / "dcm_qa_ct_ge" / "GE")


@pytest.fixture(scope="module")
def abdomen(totalseg_dir):
    """The real 20-slice CT and TotalSegmentator's labels resampled onto its grid, with names."""
    vol = load(totalseg_dir / "example_ct_dicom")
    seg = nib.load(totalseg_dir / "example_seg_dicom.nii.gz")
    labels = LabelMap(np.asarray(seg.dataobj), LPS_TO_RAS @ seg.affine).resample_like(vol)
    assert labels.same_grid(vol)
    names = {int(k): v for k, v in json.loads((totalseg_dir / "class_map_total.json").read_text()).items()}
    return vol, np.asarray(labels.array), names


def test_bone_preset_on_a_real_head_leaves_the_cranium_empty(head):
    hu = np.asarray(head.array)
    mask = preset_mask(head, "bone")
    assert mask.sum() * head.voxel_volume_mm3 > 300e3  # a skull's worth of bone (> 300 mL) was found
    assert (hu[mask] < 150).mean() < 0.05
    # the cranial cavity, found from the image alone: brain-like voxels (0-80 HU) at least
    # 15 mm from any voxel of 300 HU or more
    far = ndimage.distance_transform_edt(hu < 300, sampling=head.spacing) >= 15
    cavity = far & (hu >= 0) & (hu <= 80)
    assert cavity.sum() * head.voxel_volume_mm3 > 200e3  # > 200 mL of brain
    assert not mask[cavity].any()
    centre = tuple(np.rint(np.argwhere(cavity).mean(axis=0)).astype(int))
    assert cavity[centre] and not mask[centre]


@pytest.mark.parametrize("which", ["head", "abdomen"])
def test_no_preset_step_adds_tissue_outside_its_range(which, request):
    """Only the skin outline and the bone preset fill what they enclose; the other presets
    stay in their HU range but for the specks they fill (each under their ``max_mm3``)."""
    vol = request.getfixturevalue(which)
    vol = vol if which == "head" else vol[0]
    hu = np.asarray(vol.array)
    for name, p in load_presets().items():
        if name in ("skin", "bone"):
            continue
        mask = preset_mask(vol, name)
        lo = -np.inf if p.hu_min is None else p.hu_min
        hi = np.inf if p.hu_max is None else p.hu_max
        outside = mask & ((hu < lo) | (hu > hi))
        speck = max([s.get("max_mm3") or 0 for s in p.steps if s["op"] == "fill_holes"] + [0])
        lab, n = ndimage.label(outside)
        biggest = np.bincount(lab.ravel())[1:].max(initial=0) * vol.voxel_volume_mm3
        assert biggest < max(speck, vol.voxel_volume_mm3 / 2), (name, biggest)
        assert outside.sum() <= 0.02 * mask.sum(), name


def test_bone_preset_on_a_real_abdomen_adds_little_but_bone(abdomen):
    """What the bone preset adds below 150 HU is trabecular bone, not the humeral marrow or
    the tissue a closed rib or vertebral ring encloses (5 % of the mask before holes were gated)."""
    vol, labels, names = abdomen
    bone_ids = [k for k, v in names.items() if v.startswith(BONE_PREFIXES)]
    hu = np.asarray(vol.array)
    mask = preset_mask(vol, "bone")
    added = mask & (hu < 150) & ~np.isin(labels, bone_ids)
    assert added.sum() < 0.03 * mask.sum()


def test_vessel_preset_lies_in_totalsegmentator_vessels_not_bone(abdomen):
    vol, labels, names = abdomen
    bone_ids = [k for k, v in names.items() if v.startswith(BONE_PREFIXES)]
    vessel_ids = [k for k, v in names.items() if any(w in v for w in VESSEL_WORDS)]
    mask = preset_mask(vol, "contrast_vessels")
    inside = labels[mask]
    assert np.isin(inside, bone_ids).mean() < 0.05  # 51 % before it kept away from bone
    assert np.isin(inside, vessel_ids).mean() > 0.8  # 12 % before
    aorta = labels == next(k for k, v in names.items() if v == "aorta")
    assert mask[aorta].mean() > 0.3  # the part of the aorta in its 150-300 HU range


@pytest.mark.parametrize("name", ["soft_tissue", "fat"])
def test_presets_with_a_detail_keep_the_mask_volume_in_fewer_faces(abdomen, name):
    """soft_tissue and fat mesh 2 mm voxel blocks: a closed mesh without self-intersections,
    its volume within 1.5 % of the mask's voxels, in under half the faces of single voxels."""
    vol = abdomen[0]
    result = reconstruct(vol, None, config=ReconstructConfig.for_preset(name, preview=False))
    organ = result.report["organs"][0]
    mask = np.asarray(result.labels.array) == organ["label"]
    mask_ml = mask.sum() * vol.voxel_volume_mm3 / 1000
    mesh = result.organ_meshes[0].mesh.to_trimesh()
    assert organ["surface_detail_mm"] == 2.0
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert abs(mesh.volume / 1000 / mask_ml - 1) < 0.015
    assert organ["self_intersections"] == 0
    assert organ["faces"] < 0.5 * len(mask_surface(mask, vol.affine).faces)
    # pieces under the preset's own minimum (1000 mm^3) do not come back as shells
    volumes = [abs(part.volume) for part in mesh.split(only_watertight=False)]
    assert sum(v < 500 for v in volumes) == 0
