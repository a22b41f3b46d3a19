"""The label vocabulary (medrecon.labels): names, the name rule, the id rule, colours."""

import itertools
import json
import re

import nibabel as nib
import numpy as np
import pytest
from _fuzz._rtstruct import write_rtstruct

from medrecon.cli import main
from medrecon.io import load, load_labels, save
from medrecon.labels import (
    FIRST_NEW_LABEL,
    assign_ids,
    name_key,
    organ_colour,
    pick_names,
    structure_code,
    total_class_map,
    total_id,
)
from medrecon.pipeline import ReconstructConfig, reconstruct
from medrecon.sources.imported import import_labels
from medrecon.volume import Volume

#: The abdominal structures a print lab gets from the default model and TotalSegmentator.
ABDOMEN = ("liver", "spleen", "kidney_right", "kidney_left", "gallbladder", "stomach", "pancreas",
           "adrenal_gland_right", "adrenal_gland_left", "duodenum", "small_bowel", "colon", "esophagus",
           "urinary_bladder", "aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein", "heart")


def test_vocabulary_is_totalsegmentators_class_map(totalseg_dir):
    reference = json.loads((totalseg_dir / "class_map_total.json").read_text())
    assert dict(total_class_map()) == {int(k): v for k, v in reference.items()}
    assert (total_id("spleen"), total_id("kidney_right"), total_id("kidney_left")) == (1, 2, 3)
    assert (total_id("liver"), total_id("Aorta"), total_id("vertebrae s1")) == (5, 52, 26)
    with pytest.raises(KeyError, match="not a TotalSegmentator"):
        total_id("tumour")


@pytest.mark.parametrize("text", ["kidney_left", "Kidney Left", "kidney-left", "  KIDNEY -  left ",
                                  "kidney\x00left", "Kidney\tLeft"])
def test_one_normalising_rule(text):
    assert name_key(text) == "kidney_left"


def test_names_only_get_vocabulary_ids_then_new_ids():
    with pytest.warns(UserWarning, match="'liver' a second time; its vocabulary id 5 is taken, so it gets id 301"):
        ids = assign_ids(["Liver", "kidney right", "GTV ring", "liver"], source="rs.dcm")
    assert ids == [(5, "liver"), (2, "kidney_right"), (FIRST_NEW_LABEL, "GTV ring"),
                   (FIRST_NEW_LABEL + 1, "liver_301")]


def test_names_only_with_a_users_table():
    table = {1: "liver", 400: "tumour"}
    assert assign_ids(["Tumour", "LIVER", "cyst", "spleen"], vocabulary=table) == [
        (400, "tumour"), (1, "liver"), (401, "cyst"), (402, "spleen")]


def test_numbered_sources_keep_numbers_and_names():
    ids = assign_ids(["Liver", "blob", "", "liver", "Vertebrae_s1"], numbers=[1, 7, 9, 4, 300])
    assert ids == [(1, "liver"), (7, "blob"), (9, "label_9"), (4, "liver_4"), (300, "vertebrae_S1")]
    with pytest.raises(ValueError, match="distinct positive ids"):
        assign_ids(["a", "b"], numbers=[3, 3])


def test_rtstruct_rois_get_vocabulary_ids(tmp_path):
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    image = Volume(np.zeros((30, 30, 6), np.float32), affine, modality="CT", units="HU")
    square = [np.array([[x0, y0, 6.0], [x0 + 16, y0, 6.0], [x0 + 16, y0 + 16, 6.0], [x0, y0 + 16, 6.0]])
              for x0, y0 in ((5.0, 5.0), (31.0, 31.0), (5.0, 31.0))]
    path = write_rtstruct(tmp_path / "rs.dcm", [(1, "Spleen", [square[0]]), (2, "Lesion A", [square[1]]),
                                                (3, "SPLEEN", [square[2]])])
    with pytest.warns(UserWarning, match="gets id 301"):
        labels = import_labels(path, image=image)
    assert dict(labels.names) == {1: "spleen", FIRST_NEW_LABEL: "Lesion A", FIRST_NEW_LABEL + 1: "spleen_301"}
    # voxel centres inside a square: x, y = 6..20 mm (i, j = 3..10), 32..46 mm (16..23), slice k = 2
    expected = np.zeros(image.shape, np.uint16)
    expected[3:11, 3:11, 2] = 1
    expected[16:24, 16:24, 2] = FIRST_NEW_LABEL
    expected[3:11, 16:24, 2] = FIRST_NEW_LABEL + 1
    np.testing.assert_array_equal(labels.array, expected)


def test_name_rule_order():
    side, own, card = {5: "from sidecar"}, {5: "from file", 6: "x"}, {5: "from card"}
    assert pick_names(sidecar=side, file=own, card=card) == {5: "from sidecar"}
    assert pick_names(sidecar={}, file=own, card=card) == {5: "from file", 6: "x"}
    assert pick_names(file=None, card=card) == {5: "from card"}
    assert pick_names() == {}


def _extension_names(path) -> dict[int, str]:
    """The label table as nibabel hands the raw extension over (an independent reader)."""
    [ext] = nib.load(path).header.extensions
    text = ext.get_content().decode()
    return {int(k): v for k, v in re.findall(r'<Label Key="(\d+)"[^>]*><!\[CDATA\[(.*?)\]\]></Label>', text)}


def test_totalsegmentator_extension_names_the_labels(totalseg_dir, tmp_path):
    path = totalseg_dir / "example_seg.nii.gz"
    raw = _extension_names(path)
    assert len(raw) == 117
    class_map = {int(k): v for k, v in json.loads((totalseg_dir / "class_map_total.json").read_text()).items()}
    labels = load_labels(path)
    assert dict(labels.names) == raw == class_map
    assert labels.name_of(5) == "liver" and labels.label_of("aorta") == 52
    # a sidecar beside the file wins over the file's own table
    copy = tmp_path / "seg.nii.gz"
    copy.write_bytes(path.read_bytes())
    (tmp_path / "seg.json").write_text(json.dumps({"5": "hepar"}))
    assert dict(load_labels(copy).names) == {5: "hepar"}


def test_labels_json_names_only_the_labels_present(totalseg_dir, tmp_path):
    path = totalseg_dir / "example_seg.nii.gz"
    raw = _extension_names(path)
    data = np.asarray(nib.load(path).dataobj)
    present = sorted(int(v) for v in np.unique(data) if v != 0)
    assert len(present) == 41 and len(raw) == 117
    labels = load_labels(path)
    assert len(labels.names) == 117  # the file's whole table stays readable in memory
    for dtype in (np.uint8, np.uint16, np.int16, np.int64):  # counted or sorted, the same ids
        assert labels.replace(array=data.astype(dtype)).labels == present
    save(labels, tmp_path / "seg.nii.gz")
    assert json.loads((tmp_path / "seg.json").read_text()) == {str(k): raw[k] for k in present}
    # and the pipeline's labels.nii.gz beside the meshes
    out = tmp_path / "out"
    ct = load(totalseg_dir / "example_ct_sm.nii.gz")
    reconstruct(ct, out, config=ReconstructConfig.for_labels(path, organs=("liver", "spleen"), preview=False))
    assert json.loads((out / "labels.json").read_text()) == {"1": "spleen", "5": "liver"}


def test_no_name_is_guessed_from_a_bare_id(totalseg_dir, tmp_path):
    img = nib.load(totalseg_dir / "example_seg.nii.gz")
    bare = tmp_path / "bare.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), bare)
    labels = load_labels(bare)
    assert 5 in labels.labels and dict(labels.names) == {}
    assert labels.name_of(5) == "label_5"


def test_mesh_cli_names_files_from_the_extension(totalseg_dir, tmp_path):
    out = tmp_path / "out"
    assert main(["mesh", str(totalseg_dir / "example_seg.nii.gz"), "-o", str(out), "--organs", "liver",
                 "--decimate", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [(o["name"], o["label"], o["file"]) for o in report["organs"]] == [("liver", 5, "meshes/liver.stl")]
    assert [p.name for p in (out / "meshes").iterdir()] == ["liver.stl"]


def _lab(rgb):
    """sRGB in [0, 1] -> CIELAB (D65), the standard formulas."""
    c = np.asarray(rgb, dtype=float)
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    f = np.cbrt(xyz / np.array([0.95047, 1.0, 1.08883]))
    f = np.where(xyz / np.array([0.95047, 1.0, 1.08883]) > (6 / 29) ** 3, f,
                 xyz / np.array([0.95047, 1.0, 1.08883]) / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_abdominal_organs_have_distinct_colours():
    lab = {name: _lab(organ_colour(name)) for name in ABDOMEN}
    closest = min((float(np.linalg.norm(lab[a] - lab[b])), a, b) for a, b in itertools.combinations(ABDOMEN, 2))
    assert closest[0] >= 20, closest  # CIE76 distance; about 2.3 is just noticeable
    # the colour follows the name, not the id: a SEG's liver numbered 1 looks like a liver
    assert organ_colour("Liver", 1) == organ_colour("liver", 5) == pytest.approx((221 / 255, 130 / 255, 101 / 255))


def test_unknown_labels_get_fixed_distinct_colours():
    colours = [organ_colour(None, label) for label in range(300, 310)]
    assert colours == [organ_colour("lesion", label) for label in range(300, 310)]  # the same on every call
    assert all(0 <= v <= 1 for rgb in colours for v in rgb)
    assert min(np.abs(np.subtract(a, b)).sum() for a, b in itertools.combinations(colours, 2)) > 0.05


def test_napari_uses_the_vocabulary_colours():
    pytest.importorskip("napari")
    from napari_plugin._colors import label_colour_dict

    colours = label_colour_dict({5: "liver", 1: "spleen"}, [5, 1, 7])
    np.testing.assert_allclose(colours[5], [*organ_colour("liver"), 1.0])
    np.testing.assert_allclose(colours[7], [*organ_colour(None, 7), 1.0])


def test_structure_codes():
    """SNOMED CT codes as TotalSegmentator publishes them; category Anatomical Structure as CID 7150 gives it."""
    anatomical = ("SCT", "91723000", "Anatomical Structure")
    liver = structure_code("Liver")
    assert (liver.category, liver.type, liver.modifier) == (anatomical, ("SCT", "10200004", "Liver"), None)
    kidney = structure_code("kidney-left")  # the name rule applies
    assert kidney.type == ("SCT", "64033007", "Kidney") and kidney.modifier == ("SCT", "7771000", "Left")
    assert structure_code("adrenal_gland_right").modifier == ("SCT", "24028007", "Right")
    assert structure_code("vertebrae_T12").type.value == "23215003"
    assert structure_code("portal_vein_and_splenic_vein").type.value == "110765007"
    cyst = structure_code("kidney_cyst_left")
    assert cyst.category.value == "49755003" and cyst.type.value == "367643001"
    assert cyst.region.value == "64033007" and cyst.region_modifier.value == "7771000"
    # a preset's tissue: DICOM CID 7166
    assert structure_code("bone").category == ("SCT", "85756007", "Tissue")
    assert structure_code("bone").type == ("SCT", "3138006", "Bone")
    # every structure of the vocabulary and every abdominal organ has its own code
    assert not [n for n in total_class_map().values() if structure_code(n).generic]
    assert not any(structure_code(n).generic for n in ABDOMEN)
    generic = structure_code("label_301")
    assert generic.generic and generic.type == ("SCT", "85756007", "Tissue") and generic.modifier is None
