"""The one HU-threshold implementation: analytic volumes, custom ranges and their parse errors."""

import json

import nibabel as nib
import numpy as np
import pytest

from medrecon.errors import InputError
from medrecon.sources.presets import (
    Preset,
    PresetSource,
    apply_presets,
    get_preset,
    parse_hu_range,
    preset_mask,
    threshold_mask,
    with_threshold,
)
from medrecon.volume import Volume

SPACING = (1.0, 1.2, 1.5)


def _grid(shape=(60, 50, 40), spacing=SPACING):
    """World mm of every voxel centre of an axis-aligned grid, and its affine."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-(n - 1) * s / 2 for n, s in zip(shape, spacing, strict=True)]  # centred
    ijk = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    xyz = [a * s + o for a, s, o in zip(ijk, spacing, affine[:3, 3], strict=True)]
    return xyz, affine


def _blobs():
    """Air around an elliptic body (40 HU) holding three balls of known HU; the truth masks."""
    (x, y, z), affine = _grid()
    hu = np.full(x.shape, -1000.0, np.float32)
    body = (x / 28) ** 2 + (y / 26) ** 2 <= 1
    hu[body] = 40.0
    balls = {"soft": ((-12, 0, 0), 6.0, 120.0), "bone": ((10, 8, -5), 5.0, 500.0),
             "dense": ((8, -12, 8), 4.0, 1200.0)}
    truth = {"body": body}
    for name, (c, r, value) in balls.items():
        truth[name] = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= r * r
        hu[truth[name]] = value
    return Volume(hu, affine, modality="CT", units="HU"), truth


def test_threshold_mask_is_the_analytic_region():
    vol, t = _blobs()
    assert np.array_equal(threshold_mask(vol, 300, 3000), t["bone"] | t["dense"])
    assert np.array_equal(threshold_mask(vol, 100, 600), t["soft"] | t["bone"])
    assert np.array_equal(threshold_mask(vol, None, -500), ~t["body"])
    assert np.array_equal(threshold_mask(vol, 1000, None), t["dense"])
    # the 4 mm ball is 268 mm^3, the 5 mm ball 524 mm^3
    kept = threshold_mask(vol, 300, 3000, steps=[{"op": "keep_components", "min_mm3": 400}])
    assert np.array_equal(kept, t["bone"])


def test_threshold_mask_same_on_flipped_and_fortran_ordered_volumes():
    vol, t = _blobs()
    flipped = vol.replace(array=np.asfortranarray(vol.array[::-1, :, ::-1]),
                          affine=vol.affine @ np.array([[-1, 0, 0, 59], [0, 1, 0, 0], [0, 0, -1, 39],
                                                        [0, 0, 0, 1.0]]))
    steps = [{"op": "inside_body"}, {"op": "close", "radius_mm": 2.0}, {"op": "keep_components", "min_mm3": 400}]
    a = threshold_mask(vol, 300, 3000, steps=steps)
    b = threshold_mask(flipped, 300, 3000, steps=steps)
    assert np.array_equal(b[::-1, :, ::-1], a) and a.any()


def test_custom_ranges_change_only_the_range():
    bone = get_preset("bone")
    assert (get_preset("bone:250").hu_min, get_preset("bone:250").hu_max) == (250.0, 3000.0)
    p = get_preset(" Bone : 250..2000 ")
    assert (p.name, p.hu_min, p.hu_max, p.label, p.label_name, p.steps) == (
        "bone:250..2000", 250.0, 2000.0, bone.label, "bone", bone.steps)
    assert get_preset("bone:..2000").hu_min == 300.0
    assert get_preset("bone:300..3000") is bone  # its own range: the bundled preset
    lung = get_preset("lung:-900..-500")
    assert (lung.hu_min, lung.hu_max) == (-900.0, -500.0)
    custom = get_preset("250..3000")
    assert (custom.name, custom.label, custom.label_name) == ("250..3000", 207, "threshold")
    assert (get_preset("..-400").hu_min, get_preset("..-400").hu_max) == (None, -400.0)
    # a spec round-trips through its name, as the source and the report keep it
    assert PresetSource("bone:250,..-900").presets == ("bone:250..3000", "..-900")
    assert get_preset(get_preset("bone:250").name) == get_preset("bone:250")
    assert PresetSource("bone:250").describe()["presets"][0]["hu"] == [250.0, 3000.0]


def test_custom_threshold_labels_the_analytic_region():
    vol, t = _blobs()
    lm = apply_presets(vol, "300..3000")
    assert lm.names == {207: "threshold"}
    assert np.array_equal(lm.array == 207, t["bone"] | t["dense"])
    assert np.array_equal(apply_presets(vol, "100..").array == 207, t["soft"] | t["bone"] | t["dense"])


@pytest.mark.parametrize(("spec", "message"), [
    ("bone:abc", "bad HU range 'abc': write LOW..HIGH in HU"),
    ("bone:3000..250", "HU range '3000..250' is empty: LOW must not be above HIGH"),
    ("bone:4000", "empty HU range 4000..3000"),
    ("..", "HU range '..' has no bound"),
    ("250", "'250' is not a preset: write LOW..HIGH"),
    ("marrow:250", "unknown preset 'marrow'; known presets: bone"),
    ("300..-300", "HU range '300..-300' is empty"),
    ("1e3..2000", "bad HU range '1e3..2000'"),
    ("bone,bone:250", "presets 'bone' and 'bone:250..3000' both make label 200"),
])
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(InputError) as info:
        PresetSource(spec)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_with_threshold_joins_the_flag_to_the_preset():
    assert with_threshold(None, "250..3000") == "250..3000"
    assert with_threshold("", "250") == "250.."
    assert with_threshold("bone", "250") == "bone:250..3000"
    assert with_threshold("lung", "-950..-500") == "lung:-950..-500"
    with pytest.raises(InputError, match="sets the range of one preset"):
        with_threshold("bone,lung", "250..")
    with pytest.raises(InputError, match="already gives a range"):
        with_threshold("bone:250", "300..")
    with pytest.raises(InputError, match="bad HU range"):
        parse_hu_range("250-3000")


def test_pieces_are_face_connected_as_marching_cubes_sees_them():
    """A diagonal chain of voxels is one 26-connected piece but many shells: none reaches the mesher."""
    (x, _, _), affine = _grid((20, 20, 20), (1.0, 1.0, 1.0))
    hu = np.full(x.shape, 40.0, np.float32)
    n = np.arange(2, 18)
    hu[n, n, n] = 800.0  # 16 voxels touching only at corners
    hu[2:7, 12:17, 2:7] = 800.0  # one 125 mm^3 cube
    vol = Volume(hu, affine, modality="CT", units="HU")
    mask = threshold_mask(vol, 300, None, steps=[{"op": "keep_components", "min_mm3": 10}])
    expected = np.zeros(x.shape, bool)
    expected[2:7, 12:17, 2:7] = True
    assert np.array_equal(mask, expected)


def test_only_cavities_under_max_mm3_are_filled():
    """Specks inside a piece would each be a shell of the mesh: filled; a real cavity stays."""
    (x, _, _), affine = _grid((30, 30, 30), (1.0, 1.0, 1.0))
    hu = np.full(x.shape, -1000.0, np.float32)
    hu[3:27, 3:27, 3:27] = 40.0
    hu[5:7, 5:7, 5:7] = -100.0  # 8 mm^3
    hu[12:22, 12:22, 12:22] = -100.0  # 1000 mm^3
    vol = Volume(hu, affine, modality="CT", units="HU")
    mask = threshold_mask(vol, 0, 100, steps=[{"op": "fill_holes", "plane": "3d", "max_mm3": 200}])
    expected = hu == 40.0
    expected[5:7, 5:7, 5:7] = True
    assert np.array_equal(mask, expected)


def _ring_volume(inside_hu):
    """A closed 'skull': a 6 mm cortex (800 HU) shell of radius 40 mm around ``inside_hu``."""
    (x, y, z), affine = _grid((100, 90, 70), (1.0, 1.0, 1.2))
    r = np.sqrt(x**2 + y**2 + (z * 1.3) ** 2)
    hu = np.full(x.shape, -1000.0, np.float32)
    hu[r <= 44] = 40.0  # scalp
    hu[r <= 40] = 800.0
    hu[r <= 34] = inside_hu
    return Volume(hu, affine, modality="CT", units="HU"), r


@pytest.mark.parametrize("inside_hu", [30.0, -50.0])
def test_bone_preset_leaves_a_closed_ring_around_brain_or_fat_open(inside_hu):
    vol, r = _ring_volume(inside_hu)
    mask = preset_mask(vol, "bone")
    assert not mask[r <= 33].any()
    assert mask[(r >= 35) & (r <= 39)].all()


def test_bone_preset_fills_a_ring_around_trabecular_bone():
    vol, r = _ring_volume(200.0)
    assert preset_mask(vol, "bone")[r <= 33].all()


def test_vessel_preset_keeps_the_vessel_beside_bone_and_drops_the_marrow():
    """A 200 HU vertebral body inside its cortex, and a 200 HU aorta 1 mm in front of it."""
    (x, y, _), affine = _grid((80, 80, 30), (1.0, 1.0, 1.0))
    hu = np.full(x.shape, -1000.0, np.float32)
    hu[(x / 38) ** 2 + (y / 38) ** 2 <= 1] = 40.0
    vert = np.hypot(x, y - 10)
    hu[vert <= 14] = 700.0
    hu[vert <= 12] = 200.0
    aorta = np.hypot(x, y + 13) <= 8  # 1 mm of soft tissue between aorta and cortex
    hu[aorta] = 200.0
    vol = Volume(hu, affine, modality="CT", units="HU")
    mask = preset_mask(vol, "contrast_vessels")
    assert not mask[vert <= 14].any()
    assert mask[aorta].mean() > 0.9 and not mask[~aorta].any()


def test_overlap_with_an_earlier_preset_leaves_no_debris():
    """A plate taken by the first preset cuts a thin sliver off the second one's block: dropped."""
    (x, _, _), affine = _grid((30, 20, 20))
    hu = np.full(x.shape, 40.0, np.float32)
    hu[2:18, 5:15, 5:15] = 120.0
    hu[16, 5:15, 5:15] = 500.0  # leaves a 1-voxel sliver (100 voxels, 180 mm^3) at i = 17
    vol = Volume(hu, affine, modality="CT", units="HU")
    first = Preset("plate", 210, "plate", 300.0, None)
    second = Preset("block", 211, "block", 100.0, None, ({"op": "keep_components", "min_mm3": 300},))
    lm = apply_presets(vol, [first, second])
    expected = np.zeros(x.shape, bool)
    expected[2:16, 5:15, 5:15] = True
    assert np.array_equal(lm.array == 211, expected)
    assert np.array_equal(lm.array == 210, hu == 500)


def _nifti_ct(path):
    (x, y, z), affine = _grid((60, 50, 40))
    hu = np.full(x.shape, -1000, np.int16)
    hu[(x / 28) ** 2 + (y / 26) ** 2 <= 1] = 40
    hu[x**2 + y**2 + z**2 <= 100] = 1200  # a 10 mm ball of dense bone
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    nib.save(nib.Nifti1Image(hu, ras), path)


def test_cli_threshold_beside_preset(tmp_path, capsys):
    from medrecon.cli import main

    ct = tmp_path / "ct.nii.gz"
    _nifti_ct(ct)
    out = tmp_path / "out"
    assert main(["reconstruct", str(ct), "-o", str(out), "--preset", "bone", "--threshold", "500..3000",
                 "--no-preview", "--json", "--smooth", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["presets"][0]["name"] == "bone:500..3000" and report["presets"][0]["hu"] == [500.0, 3000.0]
    assert report["organs"][0]["name"] == "bone"
    assert abs(report["organs"][0]["mesh_volume_ml"] - 4 / 3 * np.pi * 10**3 / 1000) < 0.5


@pytest.mark.parametrize(("args", "message"), [
    (["--threshold", "abc"], "medrecon: error: bad HU range 'abc'"),
    (["--preset", "bone,lung", "--threshold", "250.."], "medrecon: error: --threshold sets the range of one"),
    (["--model", "default", "--threshold", "250.."], "medrecon: error: --threshold goes with --preset"),
    (["--preset", "bone:x"], "medrecon: error: bad HU range 'x'"),
])
def test_cli_range_errors_are_one_line(tmp_path, capsys, args, message):
    from medrecon.cli import main

    assert main(["reconstruct", str(tmp_path / "absent.nii.gz"), "-o", str(tmp_path / "o"), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err
