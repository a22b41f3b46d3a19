import numpy as np
import pytest

from medrecon.completion import complete, every_nth, per_label
from medrecon.completion.metrics import dice, mean_surface_distance
from medrecon.completion.sparse import annotations, label_slices
from medrecon.errors import EmptySegmentationError
from medrecon.volume import LabelMap

SPACING = (1.5, 1.2, 2.5)


def ellipsoid(shape, centre_mm, radii_mm, spacing=SPACING):
    """Analytic ellipsoid sampled at voxel centres: ground truth independent of the code under test."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=False)], indexing="ij")
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre_mm, radii_mm, strict=False))
    return r2 <= 1.0


def two_organs(shape=(48, 52, 40)):
    a = ellipsoid(shape, (30, 30, 45), (20, 16, 32))
    b = ellipsoid(shape, (52, 40, 60), (10, 12, 20)) & ~a
    arr = np.zeros(shape, np.uint8)
    arr[a] = 5
    arr[b] = 1
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-30.0, 12.0, 100.0)
    return LabelMap(arr, affine, names={5: "liver", 1: "spleen"})


def test_sdf_reconstructs_analytic_ellipsoid_from_every_4th_slice():
    truth = ellipsoid((48, 52, 40), (30, 30, 45), (20, 16, 32))
    full = LabelMap(truth.astype(np.uint8), np.diag([*SPACING, 1.0]), names={5: "liver"})
    out = complete(every_nth(full, 4, offset=1), method="sdf")
    got = out.array == 1
    assert dice(got, truth) > 0.9
    assert mean_surface_distance(got, truth, SPACING) < 2.0
    # better than repeating the nearest drawn slice (a staircase)
    sparse = every_nth(full, 4, offset=1).array
    stair = np.zeros_like(truth)
    kept = np.arange(1, truth.shape[2], 4)
    for k in range(truth.shape[2]):
        stair[:, :, k] = sparse[:, :, kept[np.argmin(abs(kept - k))]] == 1
    assert dice(got, truth) > dice(stair, truth)


def test_drawn_slices_are_kept_exactly_and_grid_is_unchanged():
    full = two_organs()
    sparse = every_nth(full, 4, offset=2)
    out = complete(sparse, method="sdf")
    assert out.same_grid(sparse) and out.array.dtype == sparse.array.dtype
    assert dict(out.names) == {5: "liver", 1: "spleen"}
    np.testing.assert_array_equal(out.array[:, :, 2::4], sparse.array[:, :, 2::4])
    # between the slices the organs were filled
    assert (out.array == 1).sum() > 3 * (sparse.array == 1).sum()
    assert dice(out.array == 5, full.array == 5) > 0.9


def test_per_label_sparse_keeps_n_slices_per_organ_and_completion_keeps_them():
    full = two_organs()
    sparse = per_label(full, 5)
    for label in (1, 5):
        ks = np.flatnonzero((sparse.array == label).any(axis=(0, 1)))
        assert len(ks) == 5
        full_ks = np.flatnonzero((full.array == label).any(axis=(0, 1)))
        assert full_ks[0] < ks[0] and ks[-1] < full_ks[-1]
        for k in ks:
            np.testing.assert_array_equal(sparse.array[:, :, k] == label, full.array[:, :, k] == label)
    out = complete(sparse, method="sdf")
    for label in (1, 5):
        ks = np.flatnonzero((sparse.array == label).any(axis=(0, 1)))
        np.testing.assert_array_equal(out.array[:, :, ks] == label, sparse.array[:, :, ks] == label)
        assert dice(out.array == label, full.array == label) > 0.8


def test_other_slice_axis_gives_the_transposed_result():
    full = two_organs()
    sparse = every_nth(full, 3)
    ref = complete(sparse, method="sdf").array
    swapped = LabelMap(np.swapaxes(sparse.array, 0, 2), np.diag([SPACING[2], SPACING[1], SPACING[0], 1.0]))
    out = complete(swapped, method="sdf", axis=0).array
    np.testing.assert_array_equal(np.swapaxes(out, 0, 2), ref)


def test_annotation_bounds_come_from_neighbouring_drawn_slices():
    arr = np.zeros((8, 8, 30), np.uint8)
    arr[2:5, 2:5, [8, 12, 16]] = 5
    arr[2:5, 2:5, 6] = 1  # another organ drawn 2 slices below
    anns = annotations(LabelMap(arr, np.eye(4)))
    assert anns[5].present == (8, 12, 16)
    assert anns[5].absent == (6,)
    assert anns[5].lower == 6 and anns[5].upper == 20  # one typical gap above
    # a slice the user declares annotated but left empty bounds the organ too
    anns = annotations(LabelMap(arr, np.eye(4)), slices=[18])
    assert anns[5].absent == (6, 18) and anns[5].upper == 18
    assert label_slices((10, 29), 5) == [12, 16, 20, 24, 28]  # centres 11.5, 15.5, ... 27.5 of five 4-slice parts


def test_empty_input_is_refused():
    with pytest.raises(EmptySegmentationError, match="draw the organ"):
        complete(LabelMap(np.zeros((4, 4, 4), np.uint8), np.eye(4)), method="sdf")


def test_metrics_against_analytic_spheres():
    sp = (1.0, 1.0, 1.0)
    a = ellipsoid((60, 60, 60), (30, 30, 30), (20, 20, 20), sp)
    b = ellipsoid((60, 60, 60), (30, 30, 30), (16, 16, 16), sp)
    assert dice(a, b) == pytest.approx(2 * 16**3 / (20**3 + 16**3), rel=0.03)
    assert mean_surface_distance(a, b, sp) == pytest.approx(4.0, abs=0.5)
    assert mean_surface_distance(a, a, sp) == 0.0
    assert mean_surface_distance(a, np.zeros_like(a), sp) == float("inf")
