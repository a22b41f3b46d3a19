"""Segment-Editor tools (medrecon.edit) against analytic shapes and TotalSegmentator's labels."""

from __future__ import annotations

import numpy as np
import pytest
from _builders import seed_strokes
from scipy import ndimage

from medrecon import edit
from medrecon.completion import every_nth
from medrecon.errors import EmptySegmentationError, InputError
from medrecon.io import load, load_labels
from medrecon.sources.presets import threshold_mask
from medrecon.volume import LabelMap, Volume


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def oblique_affine(spacing, origin=(-40.0, 25.0, 110.0)) -> np.ndarray:
    """A rotated, reflected grid with anisotropic voxels (not axis-aligned, not identity)."""
    a, b = np.deg2rad(25.0), np.deg2rad(-35.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([1.0, -1.0, 1.0]) @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def world_grid(shape, affine) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    return (ijk @ affine[:3, :3].T + affine[:3, 3]).reshape(*shape, 3)


SPACING = (0.9, 1.3, 2.1)
SHAPE = (64, 48, 32)


@pytest.fixture(scope="module")
def grid():
    affine = oblique_affine(SPACING)
    xyz = world_grid(SHAPE, affine)
    centre = xyz[SHAPE[0] // 2, SHAPE[1] // 2, SHAPE[2] // 2]
    return affine, xyz, centre


def radius_from_volume(mask: np.ndarray, affine: np.ndarray) -> float:
    volume = mask.sum() * abs(np.linalg.det(affine[:3, :3]))
    return float((3 * volume / (4 * np.pi)) ** (1 / 3))


# --- threshold -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def mr(data_dir):
    return load(data_dir / "nibabel_mr" / "anatomical.nii").replace(modality="MR", units="")


def test_threshold_works_on_real_mr_and_equals_numpy(mr):
    values = np.asarray(mr.array)
    low, high = np.percentile(values, [40, 90])
    with pytest.raises(InputError, match="need a CT"):
        threshold_mask(mr, low, high)  # presets still refuse MR
    got = edit.threshold(mr, low=low, high=high)
    np.testing.assert_array_equal(got, (values >= low) & (values <= high))
    assert 0 < got.sum() < got.size
    np.testing.assert_array_equal(edit.threshold(mr, low=low, high=None), values >= low)
    inside = np.zeros(mr.shape, bool)
    inside[5:20, 10:30, 3:15] = True
    np.testing.assert_array_equal(edit.threshold(mr, low=low, high=high, inside=inside), got & inside)
    for axis, index in ((0, 16), (2, 7)):
        np.testing.assert_array_equal(edit.threshold_slice(mr, low=low, high=high, axis=axis, index=index),
                                      np.take(got, index, axis=axis))


def test_threshold_refuses_an_empty_range_and_a_foreign_mask(mr):
    with pytest.raises(InputError, match="empty"):
        edit.threshold(mr, low=500, high=100)
    with pytest.raises(InputError, match="image's grid"):
        edit.threshold(mr, low=0, high=None, inside=np.ones((2, 2, 2), bool))
    with pytest.raises(InputError, match="outside"):
        edit.threshold_slice(mr, low=0, high=1, axis=2, index=mr.shape[2])


# --- islands -------------------------------------------------------------------------
def test_keep_and_remove_islands_in_world_mm(grid):
    affine, xyz, centre = grid
    # three balls of label 1 (radius 3, 5, 7 mm) and one of label 2, placed in world mm
    centres = {3.0: centre + [-18, 0, 0], 5.0: centre + [0, 0, 0], 7.0: centre + [0, 0, 24]}
    array = np.zeros(SHAPE, np.uint8)
    for r, c in centres.items():
        array[np.linalg.norm(xyz - c, axis=-1) <= r] = 1
    other = np.linalg.norm(xyz - (centre + [15, -5, -15]), axis=-1) <= 4
    array[other] = 2
    labels = LabelMap(array, affine, names={1: "a", 2: "b"})
    ball = {r: np.linalg.norm(xyz - c, axis=-1) <= r for r, c in centres.items()}

    kept = edit.keep_island(labels, tuple(centres[5.0]))
    np.testing.assert_array_equal(kept.array == 1, ball[5.0])
    np.testing.assert_array_equal(kept.array == 2, other)
    assert np.array_equal(labels.array, array)  # input untouched
    # the same numbers read as voxel indices fall outside the grid or elsewhere
    assert np.any(np.round(labels.world_to_voxel(centres[5.0][None])[0]) != np.round(centres[5.0]))
    with pytest.raises(InputError, match="background"):
        edit.keep_island(labels, tuple(centre + [0, 0, 12]))
    with pytest.raises(InputError, match="outside"):
        edit.keep_island(labels, (1e4, 0.0, 0.0))

    volume = {r: 4 / 3 * np.pi * r**3 for r in centres}  # 113, 524, 1437 mm^3; label 2: 268 mm^3
    assert volume[3.0] < 4 / 3 * np.pi * 4**3 < 300 < volume[5.0]
    pruned = edit.remove_islands(labels, min_mm3=300)
    np.testing.assert_array_equal(pruned.array == 1, ball[5.0] | ball[7.0])
    assert not np.any(pruned.array == 2)
    pruned = edit.remove_islands(labels, min_mm3=1000, label=1)
    np.testing.assert_array_equal(pruned.array == 1, ball[7.0])
    np.testing.assert_array_equal(pruned.array == 2, other)
    with pytest.raises(InputError, match="not in the label map"):
        edit.remove_islands(labels, min_mm3=10, label=7)


# --- margin --------------------------------------------------------------------------
def test_margin_moves_a_sphere_by_true_mm_on_an_oblique_anisotropic_grid(grid):
    affine, xyz, centre = grid
    r = 12.0
    dist = np.linalg.norm(xyz - centre, axis=-1)
    array = (dist <= r).astype(np.uint8)
    # a second label right beside the sphere: growth must not take it
    wall = (np.abs((xyz - centre) @ np.array([1.0, 0, 0]) - (r + 2)) <= 1.5) & (dist < r + 10)
    array[wall] = 2
    labels = LabelMap(array, affine, names={1: "ball", 2: "wall"})
    half_voxel = 0.5 * max(SPACING)
    r0 = radius_from_volume(array == 1, affine)
    assert abs(r0 - r) < half_voxel

    grown = edit.margin(labels, 3.0, label=1)
    np.testing.assert_array_equal(grown.array == 2, wall)
    free = ~wall
    # radius measured from volume, where the wall did not stop the growth
    unstopped = edit.margin(LabelMap((dist <= r).astype(np.uint8), affine), 3.0)
    assert abs(radius_from_volume(unstopped.array == 1, affine) - (r + 3)) < half_voxel
    np.testing.assert_array_equal(grown.array == 1, (unstopped.array == 1) & free)
    shrunk = edit.margin(LabelMap((dist <= r).astype(np.uint8), affine), -3.0)
    assert abs(radius_from_volume(shrunk.array == 1, affine) - (r - 3)) < half_voxel
    # every label at once: the wall grows as well, the ball still never enters it
    both = edit.margin(labels, 3.0)
    assert np.all(both.array[wall] == 2) and np.all(both.array[array == 1] == 1)


# --- smooth --------------------------------------------------------------------------
def test_smooth_brings_a_jagged_sphere_closer_to_the_true_one(grid):
    affine, xyz, centre = grid
    r = 12.0
    dist = np.linalg.norm(xyz - centre, axis=-1)
    rng = np.random.default_rng(3)
    jagged = dist <= r + rng.uniform(-2.5, 2.5, SHAPE)
    array = jagged.astype(np.uint8)
    other = dist > r + 5
    other &= np.abs((xyz - centre)[..., 2]) < 4
    array[other] = 2
    labels = LabelMap(array, affine, names={1: "ball", 2: "slab"})

    def surface_error(mask):
        edge = mask & ~ndimage.binary_erosion(mask)
        return float(np.mean(np.abs(dist[edge] - r)))

    true = dist <= r
    smoothed = edit.smooth(labels, 1.5, label=1)
    assert dice(jagged, true) < 0.85 and dice(smoothed.array == 1, true) > 0.95
    assert surface_error(smoothed.array == 1) < surface_error(jagged) - 0.25
    assert abs(radius_from_volume(smoothed.array == 1, affine) - r) < 0.5 * max(SPACING)
    np.testing.assert_array_equal(smoothed.array == 2, other)  # the other label is untouched
    both = edit.smooth(labels, 1.5)
    assert set(np.unique(both.array)) == {0, 1, 2}
    with pytest.raises(EmptySegmentationError, match="smaller scale"):
        edit.smooth(LabelMap(np.pad(np.ones((1, 1, 1), np.uint8), 5), affine), 5.0)


# --- grow from seeds (real CT, TotalSegmentator's labels as truth) ---------------------
STROKE_SLICES = (3, 10, 16)  # of the 20 slices
BACKGROUND = 200


@pytest.fixture(scope="module")
def real_ct(totalseg_dir):
    ct = load(totalseg_dir / "example_ct_dicom")
    truth = load_labels(totalseg_dir / "example_seg_dicom.nii.gz").resample_like(ct)
    return ct, truth


def strokes(ct: Volume, truth: LabelMap, organs: list[int]) -> LabelMap:
    return seed_strokes(ct, truth, organs, slices=STROKE_SLICES, background=BACKGROUND)


@pytest.mark.parametrize("organ_names", [("liver",), ("liver", "spleen")])
def test_grow_from_strokes_on_three_slices_finds_real_organs(real_ct, organ_names):
    ct, truth = real_ct
    organs = [truth.label_of(n) for n in organ_names]
    seeds = strokes(ct, truth, organs)
    assert set(np.flatnonzero(np.asarray(seeds.array).any(axis=(0, 1)))) == set(STROKE_SLICES)
    grown = edit.grow_from_seeds(ct, seeds, background=BACKGROUND)
    assert grown.same_grid(ct) and dict(grown.names) == dict(seeds.names)
    assert set(grown.labels) == set(organs)
    for organ in organs:
        assert dice(np.asarray(grown.array) == organ, np.asarray(truth.array) == organ) >= 0.9


def test_grow_from_seeds_needs_no_hounsfield_units(real_ct):
    """The same CT in other units (as an MR would be) grows the same liver."""
    ct, truth = real_ct
    seeds = strokes(ct, truth, [truth.label_of("liver")])
    other_units = ct.replace(array=np.asarray(ct.array) * 3.0 + 5000.0, modality="MR", units="")
    a = np.asarray(edit.grow_from_seeds(ct, seeds, background=BACKGROUND).array) != 0
    b = np.asarray(edit.grow_from_seeds(other_units, seeds, background=BACKGROUND).array) != 0
    assert dice(a, b) > 0.99


def test_grow_from_seeds_says_which_stroke_is_missing(small_phantom):
    image, _ = small_phantom
    seeds = np.zeros(image.shape, np.uint8)
    with pytest.raises(EmptySegmentationError, match="no strokes"):
        edit.grow_from_seeds(image, LabelMap(seeds, image.affine), background=9)
    seeds[40:50, 40:50, 10] = 1
    with pytest.raises(InputError, match="no background stroke"):
        edit.grow_from_seeds(image, LabelMap(seeds, image.affine), background=9)
    seeds[seeds == 1] = 9
    with pytest.raises(InputError, match="stroke in each organ"):
        edit.grow_from_seeds(image, LabelMap(seeds, image.affine), background=9)


# --- fill between slices (TotalSegmentator's liver and aorta) ------------------------
@pytest.fixture(scope="module")
def liver_aorta(totalseg_dir):
    labels = load_labels(totalseg_dir / "example_seg.nii.gz")
    image = load(totalseg_dir / "example_ct_sm.nii.gz")
    ids = [labels.label_of("liver"), labels.label_of("aorta")]
    array = np.asarray(labels.array)
    kept = labels.replace(array=np.where(np.isin(array, ids), array, 0).astype(array.dtype))
    assert labels.orientation == "RAS" and kept.shape[2] == 30  # axis 2 is axial
    return image, kept, ids


def test_fill_between_slices_stops_at_the_drawn_slices_when_asked(liver_aorta):
    image, truth, ids = liver_aorta
    sparse = every_nth(truth, 5, offset=2)  # slices 2, 7, ..., 27 of 0..29
    first, last = 2, 27
    old = np.asarray(edit.fill_between_slices(sparse, image=image).array)
    new = np.asarray(edit.fill_between_slices(sparse, image=image, stop_at_drawn=True).array)
    true = np.asarray(truth.array)
    for organ in ids:
        # both organs run through the whole study: the old fill goes past the drawn slices
        assert np.any(true[:, :, :first] == organ) and np.any(true[:, :, last + 1:] == organ)
        assert np.any(old[:, :, :first] == organ) or np.any(old[:, :, last + 1:] == organ)
        assert not np.any(new[:, :, :first] == organ) and not np.any(new[:, :, last + 1:] == organ)
        inner = np.s_[:, :, first:last + 1]
        assert dice(new[inner] == organ, true[inner] == organ) > 0.85
        np.testing.assert_array_equal(new[inner], old[inner])


def test_fill_between_slices_names_the_plane_the_slices_were_drawn_in(liver_aorta):
    image, truth, ids = liver_aorta
    sagittal = every_nth(truth, 5, axis=0)
    with pytest.raises(InputError, match=r"drawn on sagittal slices .*axis=0"):
        edit.fill_between_slices(sagittal, image=image, axis=2, method="sdf")
    filled = np.asarray(edit.fill_between_slices(sagittal, image=image, axis=0, method="sdf").array)
    liver = ids[0]
    assert dice(filled == liver, np.asarray(truth.array) == liver) > 0.9
