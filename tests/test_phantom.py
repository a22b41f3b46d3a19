"""Synthetic phantoms: determinism, anatomy in LPS, TotalSegmentator names, HU, geometry, files."""

import json

import numpy as np
import pytest
from scipy import ndimage

from medrecon.phantom import PhantomConfig, make_phantom, write_phantom

SMALL = PhantomConfig(small=True)
TINY = PhantomConfig(small=True, matrix=48, slices=24)  # 8 mm voxels: enough for layout checks


def _centroid(labels, names) -> np.ndarray:
    """LPS centroid (mm) of the voxels of one or several structures."""
    ids = [labels.label_of(n) for n in ([names] if isinstance(names, str) else names)]
    idx = np.argwhere(np.isin(np.asarray(labels.array), ids))
    assert len(idx), f"{names} missing"
    return labels.voxel_to_world(idx.mean(axis=0)[None])[0]


def _mean_hu(volume, labels, name, erode=1) -> float:
    mask = labels.mask(labels.label_of(name))
    if erode:
        mask = ndimage.binary_erosion(mask, iterations=erode)
    assert mask.sum() > 10, name
    return float(np.asarray(volume.array)[mask].mean())


def test_same_seed_same_study_other_seed_other_study():
    v1, l1 = make_phantom(7, config=TINY)
    v2, l2 = make_phantom(7, config=TINY)
    np.testing.assert_array_equal(v1.array, v2.array)
    np.testing.assert_array_equal(l1.array, l2.array)
    np.testing.assert_array_equal(v1.affine, v2.affine)
    v3, l3 = make_phantom(8, config=TINY)
    assert not np.array_equal(l1.array, l3.array) or not np.array_equal(v1.affine, v3.affine)


def test_small_preset_shape_and_types(small_phantom):
    volume, labels = small_phantom
    assert sorted(volume.shape) == [32, 96, 96]
    assert volume.array.dtype == np.float32 and labels.array.dtype == np.uint8
    assert volume.same_grid(labels)
    assert volume.modality == "CT" and volume.units == "HU"
    hu = np.asarray(volume.array)
    assert np.all(hu == np.round(hu)) and hu.min() >= -1024 and hu.max() <= 3071


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_organs_on_the_correct_side_in_lps(seed):
    # +x is the patient's left, +y posterior, +z superior (DICOM LPS), whatever the array layout.
    volume, labels = make_phantom(seed, config=PhantomConfig(small=True, orientation="random"))
    liver, spleen = _centroid(labels, "liver"), _centroid(labels, "spleen")
    kid_r, kid_l = _centroid(labels, "kidney_right"), _centroid(labels, "kidney_left")
    lungs = _centroid(labels, [n for n in labels.names.values() if n.startswith("lung_")])
    aorta, ivc = _centroid(labels, "aorta"), _centroid(labels, "inferior_vena_cava")
    spine = _centroid(labels, [n for n in labels.names.values() if n.startswith("vertebrae_")])
    assert liver[0] < spine[0] < spleen[0]
    assert liver[0] < spleen[0] - 100
    assert kid_r[0] < spine[0] < kid_l[0]
    assert lungs[2] > liver[2] > kid_r[2]  # lungs above the liver, kidneys lower
    assert spine[0] < aorta[0] < spine[0] + 40  # aorta just left of the midline
    assert aorta[1] < spine[1]  # ... and anterior to the spine
    assert ivc[0] < aorta[0]  # the IVC lies to the right of the aorta
    for side, sign in (("left", 1), ("right", -1)):
        ribs = _centroid(labels, [n for n in labels.names.values() if n.startswith(f"rib_{side}_")])
        assert sign * (ribs[0] - spine[0]) > 80
    for lobe, sign in (("lung_lower_lobe_left", 1), ("lung_lower_lobe_right", -1)):
        assert sign * _centroid(labels, lobe)[0] > sign * spine[0]
    # L1 below T12 below T11
    z = [_centroid(labels, f"vertebrae_{v}")[2] for v in ("L1", "T12", "T11")]
    assert z[0] < z[1] < z[2]


def test_names_and_ids_are_totalsegmentators(small_phantom, totalseg_dir):
    _, labels = small_phantom
    reference = {int(k): v for k, v in json.loads((totalseg_dir / "class_map_total.json").read_text()).items()}
    assert set(labels.labels) == set(labels.names)
    for label, name in labels.names.items():
        assert reference[label] == name
    present = set(labels.names.values())
    for organ in ("spleen", "kidney_right", "kidney_left", "liver", "stomach", "pancreas", "aorta",
                  "lung_lower_lobe_left", "lung_lower_lobe_right", "vertebrae_L1", "vertebrae_T12",
                  "rib_left_10", "rib_right_10"):
        assert organ in present, organ
    assert labels.label_of("spleen") == 1 and labels.label_of("liver") == 5 and labels.label_of("aorta") == 52


@pytest.mark.parametrize("contrast", [True, False])
def test_mean_hu_inside_organs_is_clinical(contrast):
    # Clinical ranges (portal-venous phase / unenhanced) from CT practice, not from the generator.
    volume, labels = make_phantom(11, config=PhantomConfig(small=True, contrast=contrast))
    enhanced = {"liver": (80, 140), "spleen": (90, 160), "aorta": (140, 300), "kidney_left": (110, 250)}
    plain = {"liver": (40, 75), "spleen": (35, 65), "aorta": (30, 60), "kidney_left": (20, 50)}
    for organ, (lo, hi) in (enhanced if contrast else plain).items():
        assert lo <= _mean_hu(volume, labels, organ) <= hi, organ
    assert _mean_hu(volume, labels, "lung_lower_lobe_right") < -700
    assert _mean_hu(volume, labels, "vertebrae_L1", erode=0) > 200
    assert 30 < _mean_hu(volume, labels, "iliopsoas_left", erode=0) < 90
    assert 30 < _mean_hu(volume, labels, "autochthon_left") < 80
    # Noise and texture: a homogeneous organ is neither flat nor salt-and-pepper.
    liver = ndimage.binary_erosion(labels.mask(5), iterations=1)
    assert 4 < float(np.asarray(volume.array)[liver].std()) < 40


def test_orientation_changes_the_array_not_the_anatomy():
    base_v, base_l = make_phantom(4, config=PhantomConfig(small=True, matrix=48, slices=24, orientation="LPS"))
    seen = set()
    for orientation in ("RAI", "SLA", "random"):
        v, lab = make_phantom(4, config=PhantomConfig(small=True, matrix=48, slices=24, orientation=orientation))
        seen.add(v.orientation)
        assert v.same_grid(lab)
        for name in ("liver", "spleen", "kidney_left", "aorta", "vertebrae_L1"):
            shift = np.abs(_centroid(lab, name) - _centroid(base_l, name))
            assert np.all(shift <= base_l.spacing.max() / 2 + 1e-6), (orientation, name, shift)
        # Same voxels at the same places: back in LPS layout the arrays are identical.
        np.testing.assert_array_equal(np.asarray(lab.reorient("LPS").array), np.asarray(base_l.array))
        np.testing.assert_allclose(v.reorient("LPS").affine, base_v.affine, atol=1e-6)
    assert {"RAI", "SLA"} <= seen
    axial = {make_phantom(s, config=TINY)[0].orientation for s in range(6)}
    assert len(axial) > 1 and all(code[2] in "SI" for code in axial)
    # axial layouts are right-handed: slices follow the row x column normal, as DICOM readers sort them
    for s in range(6):
        v = make_phantom(s, config=TINY)[0]
        assert np.linalg.det(v.direction) > 0


def test_default_size_has_adult_organ_volumes():
    volume, labels = make_phantom(21)
    assert sorted(volume.shape)[1:] == [256, 256]
    assert 40 <= sorted(volume.shape)[0] <= 130
    ml = labels.voxel_volume_mm3 / 1000
    counts = np.bincount(np.asarray(labels.array).ravel(), minlength=256) * ml
    assert 1000 <= counts[5] <= 2500  # liver
    assert 80 <= counts[1] <= 450  # spleen
    assert 80 <= counts[2] <= 300 and 80 <= counts[3] <= 300  # kidneys
    assert 40 <= counts[52] <= 250  # aorta segment
    inplane = sorted(volume.spacing)[:2]
    assert 1.2 <= inplane[0] <= 2.0
    assert 2.5 <= max(volume.spacing) <= 5.0


def test_clinical_resolution_ranges():
    # The ranges: 0.6-1.0 mm in-plane on a 512 matrix, 1-5 mm slices.
    config = PhantomConfig(matrix=512, spacing_xy=(0.6, 1.0), slice_thickness=(1.0, 5.0), slices=4)
    for seed in (0, 1):
        volume, labels = make_phantom(seed, config=config)
        # axial layouts keep the slices on the last axis
        assert volume.shape == (512, 512, 4)
        dx, dy, thickness = volume.spacing
        assert dx == pytest.approx(dy) and 0.6 <= dx <= 1.0
        assert 1.0 <= thickness <= 5.0
        # the body fits the field of view: no tissue on the outer border
        hu = np.asarray(volume.reorient("LPS").array)
        assert hu[[0, -1], :, :].max() < -900 and hu[:, 0, :].max() < -900


def test_config_is_validated():
    with pytest.raises(ValueError, match="matrix"):
        PhantomConfig(matrix=4)
    with pytest.raises(ValueError, match="orientation"):
        PhantomConfig(orientation="LPL")
    with pytest.raises(ValueError, match="spacing_xy"):
        PhantomConfig(spacing_xy=(1.0, 0.5))
    with pytest.raises(ValueError, match="seed"):
        make_phantom(-1, config=SMALL)
    custom = PhantomConfig(small=True, slices=10, matrix=64)
    assert custom.matrix == 64 and custom.spacing_xy == SMALL.spacing_xy
    assert sorted(make_phantom(0, config=custom)[0].shape) == [10, 64, 64]


def test_write_phantom_files_read_back(tmp_path):
    from medrecon.io import load, load_labels

    sitk = pytest.importorskip("SimpleITK")
    out = write_phantom(tmp_path / "study", seed=5, fmt="both", config=SMALL)
    volume, labels = make_phantom(5, config=SMALL)
    read_labels = load_labels(out / "labels.nii.gz")
    np.testing.assert_array_equal(read_labels.array, labels.array)
    np.testing.assert_allclose(read_labels.affine, labels.affine, atol=1e-4)
    assert dict(read_labels.names) == dict(labels.names)
    image = load(out / "image.nii.gz")
    np.testing.assert_array_equal(np.asarray(image.array), np.asarray(volume.array))
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(out / "dicom"))
    assert len(files) == volume.shape[2]
    summary = json.loads((out / "phantom.json").read_text())
    assert summary["seed"] == 5 and summary["synthetic"] is True
    # A second study in the same folder replaces the series instead of mixing slices,
    # and leaves no image of the first study beside the new labels.
    write_phantom(out, seed=6, fmt="dicom", config=PhantomConfig(small=True, slices=12))
    assert len(list((out / "dicom").iterdir())) == 12
    assert not (out / "image.nii.gz").exists()
    write_phantom(out, seed=7, fmt="nifti", config=PhantomConfig(small=True, slices=12))
    assert not (out / "dicom").exists() and (out / "image.nii.gz").is_file()


def test_write_phantom_keeps_foreign_files(tmp_path):
    from medrecon.errors import OutputError

    (tmp_path / "dicom").mkdir()
    (tmp_path / "dicom" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="did not write"):
        write_phantom(tmp_path, seed=0, fmt="dicom", config=SMALL)
    assert (tmp_path / "dicom" / "notes.txt").read_text() == "mine"


def test_cli_phantom(tmp_path, capsys):
    from medrecon.cli import main

    assert main(["phantom", str(tmp_path), "--seed", "3", "--small", "--format", "nifti"]) == 0
    assert (tmp_path / "image.nii.gz").is_file() and (tmp_path / "labels.json").is_file()
    assert not (tmp_path / "dicom").exists()
    assert "seed 3" in capsys.readouterr().out
    assert main(["phantom", str(tmp_path), "--small", "--orientation", "XYZ"]) == 1
    with pytest.raises(SystemExit):
        main(["phantom", str(tmp_path), "--seed", "-2"])


def test_sample_data_is_what_its_readme_command_makes(sample_dir):
    # sample_data/README.md: medrecon phantom sample_data --seed 0 --format dicom --slices 72 --thickness 3
    from medrecon.io import load_labels

    sitk = pytest.importorskip("SimpleITK")
    size = sum(p.stat().st_size for p in sample_dir.rglob("*") if p.is_file())
    assert size < 10_000_000
    stored = load_labels(sample_dir / "labels.nii.gz")
    volume, labels = make_phantom(0, config=PhantomConfig(slice_thickness=(3.0, 3.0), slices=72))
    # Bit-identical here; another CPU's vectorised sin/exp may move a boundary voxel.
    assert np.mean(np.asarray(stored.array) != np.asarray(labels.array)) < 1e-4
    np.testing.assert_allclose(stored.affine, labels.affine, atol=1e-4)
    assert dict(stored.names) == dict(labels.names)
    # The series, read by SimpleITK/GDCM, lies on the same grid and holds the same HU.
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(sample_dir / "dicom")))
    image = reader.Execute()
    affine = np.eye(4)
    affine[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    np.testing.assert_allclose(affine, labels.affine, atol=1e-3)
    hu = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    diff = np.abs(hu - np.asarray(volume.array))
    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3
