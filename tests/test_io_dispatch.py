"""medrecon.io.load / load_labels / save dispatch on NIfTI, NRRD and MetaImage, through one format registry."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medrecon.errors import InputError, UnsupportedFormatError
from medrecon.io import detect_format, formats, load, load_labels, save
from medrecon.volume import LabelMap, Volume


def test_real_ct_and_its_segmentation(totalseg_dir):
    ct = load(totalseg_dir / "example_ct_sm.nii.gz")
    seg = load_labels(totalseg_dir / "example_seg.nii.gz", names=totalseg_dir / "class_map_total.json")
    assert isinstance(ct, Volume) and isinstance(seg, LabelMap)
    assert ct.source.endswith("example_ct_sm.nii.gz") and ct.meta["format"] == "nifti"
    assert ct.same_grid(seg)
    np.testing.assert_allclose(ct.spacing, [3.0, 3.0, 3.0])
    assert seg.name_of(5) == "liver" and seg.label_of("spleen") == 1
    # Unenhanced soft tissue (this CT's aorta is ~40 HU): far from fat (-100), air and bone.
    # A mirrored or mis-ordered array would put these masks over other tissue.
    for organ in ("liver", "spleen", "aorta"):
        hu = float(np.asarray(ct.array)[seg.mask(seg.label_of(organ))].mean())
        assert 20 < hu < 120, organ


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_save_and_load_labels_with_sidecar(tmp_path, suffix):
    affine = np.array([[0, -0.8, 0, 10], [0.8, 0, 0, -5], [0, 0, -2.5, 40], [0, 0, 0, 1.0]])
    array = np.zeros((5, 4, 3), np.uint8)
    array[1:3, 1:3, 1] = 5
    array[4, 3, 2] = 52
    labels = LabelMap(array=array, affine=affine, names={5: "liver", 52: "aorta"})
    path = save(labels, tmp_path / f"labels{suffix}")
    assert json.loads((tmp_path / "labels.json").read_text()) == {"5": "liver", "52": "aorta"}
    back = load_labels(path)
    assert back.same_grid(labels, atol=1e-6) and np.array_equal(back.array, array)
    assert dict(back.names) == {5: "liver", 52: "aorta"}
    # Another tool agrees on the file's geometry.
    image = sitk.ReadImage(str(path))
    assert np.allclose(image.GetOrigin(), affine[:3, 3], atol=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(image).T, array)


def test_save_and_load_volume(tmp_path):
    data = np.random.default_rng(0).normal(40, 20, size=(6, 5, 4)).astype(np.float32)
    vol = Volume(array=data, affine=np.diag([0.7, 0.7, 2.0, 1.0]), modality="CT", units="HU")
    for name in ("v.nii.gz", "v.nrrd"):
        back = load(save(vol, tmp_path / name))
        assert back.same_grid(vol) and np.array_equal(back.array, data)
    assert not (tmp_path / "v.json").exists()
    with pytest.raises(UnsupportedFormatError):
        save(vol, tmp_path / "v.mha")


def test_metaimage_dispatch(tmp_path):
    image = sitk.GetImageFromArray(np.arange(24, dtype=np.int16).reshape(4, 3, 2))
    image.SetSpacing((0.5, 1.0, 2.0))
    sitk.WriteImage(image, str(tmp_path / "m.mha"))
    assert detect_format(tmp_path / "m.mha") == "metaimage"
    vol = load(tmp_path / "m.mha")
    np.testing.assert_allclose(vol.spacing, [0.5, 1.0, 2.0])
    assert vol.shape == (2, 3, 4)


def test_slicer_names_used_unless_a_sidecar_exists(tmp_path):
    header = ("NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n"
              "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
              "Segment0_Name:=liver\nSegment0_LabelValue:=5\n\n")
    (tmp_path / "s.nrrd").write_bytes(header.encode() + bytes([0, 5, 0, 0, 0, 0, 0, 5]))
    assert dict(load_labels(tmp_path / "s.nrrd").names) == {5: "liver"}
    (tmp_path / "s.json").write_text('{"5": "hepar"}')
    assert dict(load_labels(tmp_path / "s.nrrd").names) == {5: "hepar"}
    assert dict(load_labels(tmp_path / "s.nrrd", names={5: "x"}).names) == {5: "x"}


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load(tmp_path / "nothing.nii.gz")


# --- the format registry -------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("name", "fmt", "stem"), [
    ("ct.nii.gz", "nifti", "ct"), ("CT.NII", "nifti", "CT"), ("a.b.nrrd", "nrrd", "a.b"),
    ("seg.nhdr", "nrrd", "seg"), ("x.mha", "metaimage", "x"), ("x.MHD", "metaimage", "x"),
    ("IM0001.dcm", "dicom", "IM0001"), ("DICOMDIR", "dicom", "DICOMDIR"), ("notes.gz", None, "notes.gz"),
    ("scan.nii.gz.bak", None, "scan.nii.gz.bak"),
])
def test_suffixes_and_stems(name, fmt, stem):
    found = formats.format_by_name(name)
    assert (found.name if found else None) == fmt
    assert formats.strip_suffix(name) == stem
    assert formats.image_suffixes().index(".nii.gz") < formats.image_suffixes().index(".nii")
    assert ".dcm" not in formats.image_suffixes(dicom=False)


def test_files_without_suffix_are_recognised_by_content(tmp_path, totalseg_dir, dcmqi_dir):
    # each written by another tool, then renamed so that only the bytes tell
    import shutil

    import nibabel as nib
    import nrrd

    data = np.arange(60, dtype=np.int16).reshape(5, 4, 3)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "a.nii")
    nib.save(nib.Nifti2Image(data, np.eye(4)), tmp_path / "b.nii.gz")
    nrrd.write(str(tmp_path / "c.nrrd"), data, {"space": "left-posterior-superior"}, index_order="F")
    sitk.WriteImage(sitk.GetImageFromArray(data.T.copy()), str(tmp_path / "d.mha"))
    shutil.copy(next(p for p in sorted((dcmqi_dir / "ct-3slice").iterdir())), tmp_path / "e.dcm")
    (tmp_path / "f.txt").write_text("NDims is not at the start\n")
    expected = {"a": "nifti", "b": "nifti", "c": "nrrd", "d": "metaimage", "e": "dicom"}
    for stem, fmt in expected.items():
        src = next(tmp_path.glob(f"{stem}.*"))
        bare = src.rename(tmp_path / f"{stem}_noext")
        assert formats.sniff_format(bare).name == fmt
        assert detect_format(bare) == fmt
        if fmt != "dicom":
            np.testing.assert_array_equal(load(bare).array, data)
    assert formats.format_of(tmp_path / "f.txt") is None
    with pytest.raises(UnsupportedFormatError, match=r"NIfTI \(\.nii, \.nii\.gz\)"):
        detect_format(tmp_path / "f.txt")
    assert formats.format_of(tmp_path) is formats.DICOM  # a folder with a DICOM file in it
    assert formats.format_of(totalseg_dir) is formats.DICOM  # found in a sub-folder
    (tmp_path / "images").mkdir()
    shutil.copy(totalseg_dir / "example_seg.nii.gz", tmp_path / "images")
    assert formats.format_of(tmp_path / "images") is None  # NIfTI only: not a DICOM folder
    assert formats.format_of(tmp_path / "missing.nii.gz") is None


def test_writers_and_mesh_formats(tmp_path):
    assert formats.writer_for(tmp_path / "x.NII.GZ").name == "nifti"
    assert formats.writer_for(tmp_path / "x.nrrd").name == "nrrd"
    for name in ("x.nhdr", "x.mha", "x.dcm", "x"):
        with pytest.raises(UnsupportedFormatError, match="medrecon writes .nii.gz, .nii, .nrrd"):
            formats.writer_for(tmp_path / name)
    assert tuple(formats.MESH_FORMATS) == ("stl", "obj", "ply", "3mf")
    assert formats.mesh_suffixes() == (".stl", ".obj", ".ply", ".3mf")
    assert formats.mesh_format_of("organ.PLY") == "ply"
    with pytest.raises(UnsupportedFormatError, match="unknown mesh format '.glb'"):
        formats.mesh_format_of("organ.glb")


def test_registry_import_is_lazy():
    # start-up time: the registry pulls in no reader, nibabel or pydicom until a file is read
    code = (
        "import sys\n"
        "import medrecon.io.formats as f\n"
        "heavy = ('nibabel', 'pydicom', 'nrrd', 'medrecon.io.nifti', 'medrecon.io.nrrd', 'medrecon.io.dicom')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        f"f.IMAGE_FORMATS['nifti'].read({str(REPO / 'tests/data/totalseg/example_ct_sm.nii.gz')!r})\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.splitlines()
    assert out == ["[]", "['medrecon.io.nifti']"]


def _spells_suffix(node: ast.AST, suffixes: set[str]) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value.lower().lstrip("*") in suffixes)


def _suffix_lists(tree: ast.AST, suffixes: set[str], names: set[str]) -> list[int]:
    """Lines where a tuple/list/set of suffixes or mesh format names, or a suffix test, is spelled out."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            strings = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if any(_spells_suffix(e, suffixes) for e in node.elts) or len(names.intersection(strings)) >= 2:
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "endswith", "glob", "rglob"):
            if any(_spells_suffix(a, suffixes) for a in node.args):
                lines.append(node.lineno)
        elif isinstance(node, ast.Compare) and any(
                _spells_suffix(c, suffixes) for c in [node.left, *node.comparators]):
            lines.append(node.lineno)
    return lines


def test_only_the_registry_spells_format_suffixes():
    suffixes = set(formats.image_suffixes()) | set(formats.mesh_suffixes())
    names = set(formats.MESH_FORMATS)
    # the scanner itself catches what it is meant to catch
    probe = ast.parse('A = (".nii.gz", ".nii")\nB = ["stl", "obj"]\nn.endswith(".nrrd")\np.suffix == ".dcm"\n'
                      'g.glob("*.nii.gz")\nok = "labels.nii.gz"\nfmt = "stl"\n')
    assert _suffix_lists(probe, suffixes, names) == [1, 2, 3, 4, 5]
    registry = REPO / "medrecon" / "io" / "formats.py"
    found = []
    for path in sorted([*(REPO / "medrecon").rglob("*.py"), *(REPO / "napari_plugin").rglob("*.py")]):
        if path != registry:
            found += [f"{path.relative_to(REPO)}:{n}" for n in _suffix_lists(
                ast.parse(path.read_text(encoding="utf-8")), suffixes, names)]
    assert found == [], "ask medrecon.io.formats instead of spelling suffixes: " + ", ".join(found)


def test_napari_manifest_agrees_with_the_registry():
    yaml = pytest.importorskip("yaml")
    manifest = yaml.safe_load((REPO / "napari_plugin" / "napari.yaml").read_text())["contributions"]
    [reader] = manifest["readers"]
    assert set(reader["filename_patterns"]) == {"*"} | {f"*{s}" for s in formats.image_suffixes()}
    writers = {w["command"]: w["filename_extensions"] for w in manifest["writers"]}
    assert tuple(writers["medrecon.write_surface"]) == formats.mesh_suffixes()
    assert tuple(writers["medrecon.write_labels"]) == formats.NIFTI.write_suffixes
