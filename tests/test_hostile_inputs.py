"""Hostile inputs: a gzip bomb, odd label maps, hostile names, pickles and bundles that run code.

Checkpoint safety at the API level (a pickle disguised as safetensors, trusted
bundles loading tensors only) is in ``test_checkpoint_safety.py``; here the
command line (``segment``, ``reconstruct``) is exercised.

Ground truth here is not produced by the code under test: voxel counts and
positions chosen by the test, the declared header size of a hand-built bomb,
marker files that only code execution could create, and a before/after walk of
a sandbox folder.
"""

import json
import os
import pickle
import re
import zlib
from pathlib import Path

import numpy as np
import pytest

from medrecon.cli import main
from medrecon.errors import EmptySegmentationError, GeometryError, ModelError
from medrecon.io import load, save
from medrecon.io.sidecar import write_names
from medrecon.mesh import MeshOptions, build_organ_meshes
from medrecon.volume import LabelMap, Volume

SPACING = (1.5, 1.25, 2.0)
AFFINE = np.diag([*SPACING, 1.0])
SAFE_PART = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,254}")


# --- compressed-file bomb -------------------------------------------------------------


def _nifti_bytes(data: np.ndarray) -> bytes:
    import nibabel as nib

    img = nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0]))
    img.header.set_data_dtype(data.dtype)
    img.set_sform(np.eye(4), code=1)
    return img.header.binaryblock + b"\0" * 4 + data.tobytes(order="F")


def test_gzip_bomb_of_a_gigabyte_is_never_inflated(tmp_path):
    import tracemalloc

    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, size=(64, 64, 64), dtype=np.int16)
    # One gzip member: header + declared voxels, then 1.1 GiB of zeros (the same
    # fully flushed deflate block repeated), then bytes that are not deflate at all:
    # a reader that inflated past the declared size would need the memory or the
    # time for 1.1 GiB and then fail on the garbage.
    head = zlib.compressobj(6, zlib.DEFLATED, 31)
    stream = head.compress(_nifti_bytes(data)) + head.flush(zlib.Z_FULL_FLUSH)
    zeros = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = zeros.compress(b"\0" * (1 << 20)) + zeros.flush(zlib.Z_FULL_FLUSH)
    assert zlib.decompress(block + zeros.flush(), -15) == b"\0" * (1 << 20)
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(stream + block * 1100 + b"\xff not deflate \xff" * 64)
    assert path.stat().st_size < 4 << 20

    tracemalloc.start()
    try:
        vol = load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert vol.shape == (64, 64, 64)
    assert np.array_equal(vol.array, data)
    assert peak < 8 * data.nbytes + (4 << 20)  # the declared array and small buffers, no more


def _deflated_dicom_bomb(path: Path, source: Path, zeros_mib: int) -> Path:
    """A valid deflated DICOM whose data set starts with an OB element of ``zeros_mib`` MiB of zeros.

    Built from the raw deflate stream (one fully flushed 1 MiB block repeated), so
    making it costs neither the memory nor the time it would take to inflate.
    """
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from medrecon.io.dicom_fast import _deflated_start

    ds = pydicom.dcmread(source)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    start = _deflated_start(raw[:65536])
    dataset = zlib.decompress(raw[start:], -15)
    head = zlib.compressobj(6, zlib.DEFLATED, -15)
    element = b"\x08\x00\x01\x00OB\x00\x00" + (zeros_mib << 20).to_bytes(4, "little")
    stream = head.compress(element) + head.flush(zlib.Z_FULL_FLUSH)
    zeros = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = zeros.compress(b"\0" * (1 << 20)) + zeros.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream += block * zeros_mib + tail.compress(dataset) + tail.flush()
    path.write_bytes(raw[:start] + stream)
    return path


def test_deflated_dicom_bomb_is_refused_before_inflating(tmp_path, sample_dir, monkeypatch):
    import tracemalloc

    from medrecon.errors import ResourceLimitError

    source = sample_dir / "dicom" / "CT00030.dcm"
    expected = load(source)
    small = _deflated_dicom_bomb(tmp_path / "small.dcm", source, zeros_mib=2)
    assert np.array_equal(load(small).array, expected.array)  # the construction is valid DICOM

    monkeypatch.setenv("MEDRECON_MAX_BYTES", "64M")
    bomb = _deflated_dicom_bomb(tmp_path / "bomb.dcm", source, zeros_mib=512)
    assert bomb.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ResourceLimitError, match="deflated data set inflates to more than"):
            load(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


# --- label maps ----------------------------------------------------------------------


def _labels(array, names=None) -> LabelMap:
    return LabelMap(array=array, affine=AFFINE, names=names or {})


def test_empty_label_map_is_a_clean_error():
    with pytest.raises(EmptySegmentationError, match="no labelled voxels"):
        build_organ_meshes(_labels(np.zeros((10, 10, 10), np.uint8)))


def test_single_voxel_gives_a_closed_mesh_around_it():
    a = np.zeros((9, 9, 9), np.uint8)
    a[4, 5, 6] = 5
    (organ,) = build_organ_meshes(_labels(a, {5: "liver"}), MeshOptions(smooth=0.0))
    assert organ.label == 5 and organ.trimesh().is_watertight and organ.trimesh().volume > 0
    centre = AFFINE[:3, :3] @ [4, 5, 6]
    assert np.allclose(organ.mesh.vertices.mean(axis=0), centre, atol=1e-6)
    assert np.all(np.abs(organ.mesh.vertices - centre) <= np.array(SPACING) / 2 + 1e-6)


@pytest.mark.parametrize("corner", [0, -1])
def test_label_touching_the_border_is_closed(corner):
    a = np.zeros((12, 12, 12), np.uint8)
    box = slice(0, 5) if corner == 0 else slice(7, 12)
    a[box, box, box] = 3
    (organ,) = build_organ_meshes(_labels(a), MeshOptions(smooth=0.0))
    mesh = organ.trimesh()
    assert mesh.is_watertight
    # the surface closes half a voxel outside the grid: the mask was padded, not cut
    edge = -0.5 if corner == 0 else 11.5
    lo, hi = mesh.bounds
    reach = lo if corner == 0 else hi
    assert np.allclose(reach, np.array(SPACING) * edge, atol=1e-6)
    # a marching-cubes cube of 5^3 voxels loses only its chamfered edges and corners
    assert 0.85 * 125 * np.prod(SPACING) < mesh.volume < 125 * np.prod(SPACING)


def test_negative_labels_are_not_organs():
    a = np.zeros((12, 12, 12), np.int16)
    a[1:5, 1:5, 1:5] = -4
    a[7:10, 7:10, 7:10] = 2
    with pytest.warns(UserWarning, match="negative values .down to -4"):
        organs = build_organ_meshes(_labels(a))
    assert [o.label for o in organs] == [2]
    assert organs[0].report["voxels"] == 27


def test_float_labels(tmp_path):
    a = np.zeros((10, 10, 10), np.float32)
    a[2:6, 2:6, 2:6] = 2.0
    (organ,) = build_organ_meshes(_labels(a))  # integer-valued floats are labels
    assert organ.label == 2 and organ.report["voxels"] == 64
    for bad in (2.5, np.nan, np.inf):
        b = a.copy()
        b[7, 7, 7] = bad
        with pytest.raises(GeometryError, match="must hold integers"):
            _labels(b)
    # and through the CLI, from a float NIfTI file
    import nibabel as nib

    b = a.copy()
    b[7, 7, 7] = 0.5
    nib.save(nib.Nifti1Image(b, np.eye(4)), tmp_path / "float.nii.gz")
    assert main(["mesh", str(tmp_path / "float.nii.gz"), "-o", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out" / "meshes").exists()


def test_sparse_huge_label_ids():
    a = np.zeros((10, 10, 10), np.int32)
    a[1:4, 1:4, 1:4] = 70_000
    a[6:9, 6:9, 6:9] = 2**31 - 1
    organs = build_organ_meshes(_labels(a))
    assert [o.label for o in organs] == [70_000, 2**31 - 1]
    assert all(o.trimesh().is_watertight and o.report["voxels"] == 27 for o in organs)


@pytest.mark.slow
def test_two_thousand_labels_through_the_cli(tmp_path, capsys):
    n = 2000
    a = np.zeros((34, 34, 34), np.int16)
    lattice = [(i, j, k) for i in range(1, 34, 2) for j in range(1, 34, 2) for k in range(1, 34, 2)]
    for label, (i, j, k) in enumerate(lattice[:n], start=1):
        a[i, j, k] = label
    save(LabelMap(array=a, affine=AFFINE, names={}), tmp_path / "many.nii.gz")
    out = tmp_path / "out"
    assert main(["mesh", str(tmp_path / "many.nii.gz"), "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["organs"]) == n
    assert sorted(p.name for p in (out / "meshes").iterdir()) == sorted(
        f"label_{n}.stl" for n in range(1, n + 1))
    assert all(o["watertight"] and o["voxels"] == 1 for o in report["organs"])


# --- hostile names -------------------------------------------------------------------

HOSTILE = [
    "../../escape_rel", "..", ".", "", "   ", "a/b/../../escape_ab", "..\\..\\escape_win",
    "C:\\Windows\\evil", "nul\x00byte", "bell\x07\x1b[31mred", "new\nline\rcr\ttab", "x" * 10_000,
    "肝臓 🫀", "liver", "liver", "LIVER", ".hidden", "-rf", "CON",
]


def _snapshot(root: Path, skip: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if skip not in p.parents and p != skip}


def _assert_contained(out: Path) -> list[Path]:
    files = [p for p in out.rglob("*") if p.is_file()]
    for p in out.rglob("*"):
        assert not p.is_symlink(), p
        assert p.resolve().is_relative_to(out.resolve()), p
        for part in p.relative_to(out).parts:
            assert SAFE_PART.fullmatch(part), f"unsafe name {part!r} in {p}"
            assert ".part" not in part
    return files


def _cube_labels(n: int) -> np.ndarray:
    a = np.zeros((4 * n + 2, 8, 8), np.int16)
    for label in range(1, n + 1):
        a[4 * label - 2:4 * label + 1, 2:5, 2:5] = label
    return a


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    for name in ("in", "out", "cwd"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def test_hostile_label_names_stay_in_the_output_folder(sandbox):
    names = {n: text for n, text in enumerate(HOSTILE + [str(sandbox / "abs_escape")], start=1)}
    a = _cube_labels(len(names))
    save(LabelMap(array=a, affine=AFFINE, names={}), sandbox / "in" / "labels.nii.gz")
    write_names(sandbox / "in" / "labels.json", names)
    image = np.where(a > 0, 300.0, -50.0).astype(np.float32)
    save(Volume(array=image, affine=AFFINE, modality="CT", units="HU"), sandbox / "in" / "ct.nii.gz")
    before = _snapshot(sandbox, sandbox / "out")

    mesh_out, rec_out = sandbox / "out" / "mesh", sandbox / "out" / "rec"
    assert main(["mesh", str(sandbox / "in" / "labels.nii.gz"), "-o", str(mesh_out)]) == 0
    assert main(["reconstruct", str(sandbox / "in" / "ct.nii.gz"), "--labels",
                 str(sandbox / "in" / "labels.nii.gz"), "-o", str(rec_out), "--quiet"]) == 0

    assert _snapshot(sandbox, sandbox / "out") == before  # nothing written beside the outputs
    for out in (mesh_out, rec_out):
        _assert_contained(out)
        meshes = sorted((out / "meshes").iterdir())
        assert len(meshes) == len(names)  # one file per organ: no name collided with another
        assert len({p.name.lower() for p in meshes}) == len(names)
        report = json.loads((out / "report.json").read_text())
        assert sorted((out / o["file"]).resolve() for o in report["organs"]) == \
            sorted(p.resolve() for p in meshes)


def test_hostile_study_folders_and_series_descriptions_in_batch(sandbox):
    from medrecon.io.dicom_write import write_dicom_series

    image = np.full((24, 24, 8), -1000.0, np.float32)  # air around the body, as in a CT
    image[2:22, 2:22, :] = -50.0
    image[6:18, 6:18, 2:6] = 700.0  # bone for the preset
    vol = Volume(array=image, affine=AFFINE, modality="CT", units="HU")
    studies = sandbox / "in" / "studies"
    # names starting with a dot are hidden: discovery skips them (as it skips .git)
    folders = ["..hidden\x1b[31m", "evil..\x1b[31m..", " spaced out ", "é" * 100, "-rf", "a..b"]
    for n, folder in enumerate(folders):
        write_dicom_series(vol, studies / folder / "dicom", series_uid=f"1.2.826.0.1.3680043.99.{n}",
                           description=f"../../{n}\x00\\..\\evil/name\x07" + "d" * 40)
    save(vol, studies / "x..\x01evil.nii.gz")
    before = _snapshot(sandbox, sandbox / "out")
    out = sandbox / "out" / "batch"

    assert main(["batch", str(studies), "-o", str(out), "--preset", "bone", "--quiet"]) == 0
    assert _snapshot(sandbox, sandbox / "out") == before
    files = _assert_contained(out)
    done = [p for p in files if p.name == "DONE.json"]
    visible = len([f for f in folders if not f.startswith(".")]) + 1
    assert len(done) == visible
    assert len([p for p in files if p.suffix == ".stl"]) == visible


def test_series_listing_escapes_control_characters(tmp_path, capsys):
    from medrecon.errors import SeriesSelectionError
    from medrecon.io.dicom_write import write_dicom_series

    vol = Volume(array=np.zeros((8, 8, 4), np.float32), affine=AFFINE, modality="CT", units="HU")
    for n in range(2):
        write_dicom_series(vol, tmp_path / "study", series_uid=f"1.2.826.0.1.3680043.99.7{n}",
                           description=f"\x1b[2J\x1b]0;owned\x07 series {n}", prefix=f"S{n}")
    with pytest.raises(SeriesSelectionError) as info:
        load(tmp_path / "study")
    message = str(info.value)
    assert "series 0" in message and "series 1" in message
    assert "\x1b" not in message and "\x07" not in message
    assert main(["info", str(tmp_path / "study")]) in (0, 1)
    out = capsys.readouterr()
    assert "\x1b" not in out.out + out.err


# --- code in checkpoints and bundles -------------------------------------------------


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _evil_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"state_dict": _Evil(marker)}))
    # the payload is live: unpickling it would create the marker
    pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()
    return path


@pytest.fixture
def tiny_ct(tmp_path):
    path = tmp_path / "ct.nii.gz"
    save(Volume(array=np.zeros((8, 8, 4), np.float32), affine=AFFINE, modality="CT"), path)
    return path


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".pkl", ".bin"])
def test_pickled_checkpoint_is_refused_without_running(tmp_path, tiny_ct, suffix):
    from medrecon.models import segment

    marker = tmp_path / "pwned"
    evil = _evil_pickle(tmp_path / f"evil{suffix}", marker)
    assert main(["segment", str(tiny_ct), "-o", str(tmp_path / "seg.nii.gz"),
                 "--model", str(evil), "--quiet"]) == 1
    with pytest.raises(ModelError, match="refusing to load a pickled checkpoint"):
        segment(load(tiny_ct), model=evil)
    assert not marker.exists()
    assert not (tmp_path / "seg.nii.gz").exists()


def test_bundle_is_refused_unless_trusted(tmp_path, tiny_ct, capsys):
    from medrecon.models import segment

    marker = tmp_path / "pwned"
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    code = f"$__import__('os').system(\"touch '{marker}'\")"
    (bundle / "configs" / "inference.json").write_text(json.dumps(
        {"imports": ["$import os"], "network_def": {"_target_": code}, "network": "$@network_def"}))
    _evil_pickle(bundle / "models" / "model.pt", marker)
    with pytest.raises(ModelError, match="--trust-bundle"):
        segment(load(tiny_ct), model=bundle)
    capsys.readouterr()
    assert main(["segment", str(tiny_ct), "-o", str(tmp_path / "seg.nii.gz"),
                 "--model", str(bundle), "--modality", "CT", "--quiet"]) == 1
    assert "--trust-bundle" in capsys.readouterr().err
    assert main(["reconstruct", str(tiny_ct), "-o", str(tmp_path / "rec"),
                 "--model", str(bundle), "--modality", "CT", "--quiet"]) == 1
    assert not marker.exists()
