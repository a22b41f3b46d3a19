"""``medrecon mesh`` on real TotalSegmentator labels and on small label files."""

import json

import numpy as np
import pytest
import trimesh
from scipy import ndimage

from medrecon.cli import main
from medrecon.io import load_labels, save
from medrecon.volume import LabelMap


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, totalseg_dir):
    out = tmp_path_factory.mktemp("mesh_real")
    seg = totalseg_dir / "example_seg.nii.gz"
    names = totalseg_dir / "class_map_total.json"
    code = main(["mesh", str(seg), "-o", str(out), "--names", str(names), "--workers", "2"])
    assert code == 0
    return out, load_labels(seg, names=names), json.loads(names.read_text())


def test_real_labels_give_named_watertight_meshes(real_run):
    out, labels, class_map = real_run
    report = json.loads((out / "report.json").read_text())
    assert report["frame"] == "LPS" and report["units"] == "mm" and report["schema_version"] == 1
    organs = report["organs"]
    assert [o["label"] for o in organs] == labels.labels and len(organs) == 41
    for o in organs:
        assert o["name"] == class_map[str(o["label"])]
        assert o["file"] == f"meshes/{o['name']}.stl"
        assert o["watertight"] and o["manifold"] and o["outward"], o["name"]
        assert o["mesh_volume_ml"] > 0 and o["faces"] >= 8
        for key in ("voxel_volume_ml", "surface_area_mm2", "shells", "hd95_mm", "mean_distance_mm", "bbox_mm"):
            assert o[key] is not None
    # marching cubes cuts corners (thin structures lose most) and smoothing keeps the volume
    big = [o for o in organs if o["voxel_volume_ml"] > 20]
    assert len(big) == 20
    for o in big:
        assert -0.1 < o["mesh_volume_ml"] / o["voxel_volume_ml"] - 1 < 0, o["name"]
        assert abs(o["mesh_volume_ml"] / o["raw_mesh_volume_ml"] - 1) < 0.03, o["name"]


def test_real_meshes_lie_over_their_labels(real_run):
    out, labels, _ = real_run
    report = json.loads((out / "report.json").read_text())
    for o in report["organs"]:
        path = out / o["file"]
        assert path.read_bytes()[:9] == b"SPACE=LPS"
        mesh = trimesh.load(path, force="mesh")
        assert mesh.is_watertight
        ijk = np.rint(labels.world_to_voxel(mesh.vertices)).astype(int)
        # labels cut by the field of view are closed half a voxel beyond it
        assert np.all((ijk >= -1) & (ijk <= labels.shape)), o["name"]
        ijk = np.clip(ijk, 0, np.asarray(labels.shape) - 1)
        # a one-voxel margin: vertices sit between voxels and smoothing moves them
        near = ndimage.binary_dilation(labels.mask(o["label"]), np.ones((3, 3, 3), bool))
        assert np.all(near[tuple(ijk.T)]), o["name"]


def small_labels(tmp_path, *, sidecar=True):
    array = np.zeros((20, 20, 12), np.uint8)
    array[3:10, 3:10, 2:8] = 5
    array[12:17, 12:18, 4:9] = 1
    labels = LabelMap(array, np.diag([-1.5, -1.5, 2.5, 1.0]), names={5: "liver", 1: "spleen/../x"} if sidecar else {})
    path = tmp_path / "labels.nii.gz"
    save(labels, path)
    if not sidecar:
        (tmp_path / "labels.json").unlink(missing_ok=True)
    return path


def test_options_formats_and_sidecar_names(tmp_path, capsys):
    path = small_labels(tmp_path)
    out = tmp_path / "out"
    code = main(["mesh", str(path), "-o", str(out), "--organs", "liver,1", "--format", "ply",
                 "--frame", "RAS", "--smooth", "0", "--decimate", "0", "--merged", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frame"] == "RAS"
    files = sorted(o["file"] for o in report["organs"])
    assert files == ["meshes/liver.ply", "meshes/spleen_.._x.ply"] or all(
        "/" not in f.removeprefix("meshes/") for f in files
    )
    assert {o["name"] for o in report["organs"]} == {"liver", "spleen/../x"}
    for o in report["organs"]:
        assert (out / o["file"]).is_file()
        assert o["hd95_mm"] == pytest.approx(0.0, abs=1e-9)
    assert json.loads((out / "report.json").read_text()) == report
    scene = trimesh.load(out / report["merged_file"], force="mesh")
    assert len(scene.faces) == sum(o["faces"] for o in report["organs"])


def test_default_names_without_sidecar(tmp_path, capsys):
    path = small_labels(tmp_path, sidecar=False)
    out = tmp_path / "out"
    assert main(["mesh", str(path), "-o", str(out), "--hollow", "1", "--keep-largest", "--preview"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [o["name"] for o in report["organs"]] == ["label_1", "label_5"]
    assert "label_5.stl" in capsys.readouterr().out
    import matplotlib.image

    picture = matplotlib.image.imread(out / "meshes.png")
    # something was drawn: many distinct colours, not a blank canvas
    assert picture.shape[2] in (3, 4) and len(np.unique(picture[..., :3].reshape(-1, 3), axis=0)) > 50


def test_errors_are_one_line_with_exit_1(tmp_path, capsys):
    path = small_labels(tmp_path)
    assert main(["mesh", str(path), "-o", str(tmp_path / "o"), "--organs", "pancreas"]) == 1
    assert "no label named 'pancreas'" in capsys.readouterr().err
    assert main(["mesh", str(path), "-o", str(tmp_path / "o"), "--decimate", "1.5"]) == 1
    assert "decimate" in capsys.readouterr().err
    assert main(["mesh", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "o")]) == 1
    assert not (tmp_path / "o").exists()
