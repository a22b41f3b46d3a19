"""Mesh files and the report.json of exported meshes: read back with trimesh, VTK and by hand."""

import json
import struct
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
import trimesh

from medrecon.errors import UnsupportedFormatError
from medrecon.io.mesh_export import export_organs, unique_names, write_mesh
from medrecon.mesh import OrganMesh
from medrecon.pipeline import export_meshes
from medrecon.triangles import TriangleMesh


@pytest.fixture
def box():
    # LPS mm, off-centre and asymmetric so a wrong axis or sign shows
    mesh = trimesh.creation.box(extents=(10.0, 20.0, 30.0))
    mesh.apply_translation((-50.0, 100.0, 200.0))
    return TriangleMesh.from_trimesh(mesh)


def organ(mesh, name, label=1):
    bounds = [mesh.vertices.min(axis=0).tolist(), mesh.vertices.max(axis=0).tolist()]
    return OrganMesh(label=label, name=name, mesh=mesh, raw=mesh,
                     report={"name": name, "label": label, "watertight": True, "manifold": True,
                             "bbox_mm": bounds})


@pytest.mark.parametrize("fmt", ["stl", "obj", "ply", "3mf"])
@pytest.mark.parametrize("frame", ["LPS", "RAS"])
def test_round_trip_through_trimesh(tmp_path, box, fmt, frame):
    path = write_mesh(box, tmp_path / f"part.{fmt}", frame=frame)
    back = trimesh.load(path, force="mesh")
    expected = box.vertices * ([-1, -1, 1] if frame == "RAS" else [1, 1, 1])
    assert np.allclose(back.bounds, [expected.min(axis=0), expected.max(axis=0)], atol=1e-4)
    assert back.is_watertight
    assert back.volume == pytest.approx(6000.0, rel=1e-5)  # still outward after the RAS rotation
    assert not list(tmp_path.glob("*.part*"))


def test_stl_header_and_layout(tmp_path, box):
    data = write_mesh(box, tmp_path / "a.stl", frame="RAS").read_bytes()
    assert data[:80].rstrip(b" ").startswith(b"SPACE=RAS")
    (count,) = struct.unpack("<I", data[80:84])
    assert count == 12 and len(data) == 84 + 50 * count
    normal = np.frombuffer(data[84:96], "<f4")
    assert np.linalg.norm(normal) == pytest.approx(1.0, abs=1e-6)


def test_frame_and_units_written_in_text_headers(tmp_path, box):
    obj = write_mesh(box, tmp_path / "a.obj").read_text()
    assert "# frame: LPS" in obj and "# units: mm" in obj
    ply = write_mesh(box, tmp_path / "a.ply", frame="RAS").read_bytes()
    header = ply[: ply.index(b"end_header")].decode()
    assert "comment SPACE=RAS" in header and "units=mm" in header
    with zipfile.ZipFile(write_mesh(box, tmp_path / "a.3mf", name="liver")) as z:
        assert "[Content_Types].xml" in z.namelist()
        root = ET.fromstring(z.read("3D/3dmodel.model"))
    assert root.get("unit") == "millimeter"
    meta = {m.get("name"): m.text for m in root.iter("{http://schemas.microsoft.com/3dmanufacturing/core/2015/02}metadata")}
    assert meta["medrecon:frame"] == "LPS" and meta["medrecon:units"] == "mm"
    obj_names = [o.get("name") for o in root.iter("{http://schemas.microsoft.com/3dmanufacturing/core/2015/02}object")]
    assert obj_names == ["liver"]


def test_vtk_readers_agree(tmp_path, box):
    pytest.importorskip("vtkmodules")
    from vtkmodules.vtkFiltersCore import vtkMassProperties
    from vtkmodules.vtkIOGeometry import vtkSTLReader
    from vtkmodules.vtkIOPLY import vtkPLYReader

    for reader, fmt in ((vtkSTLReader(), "stl"), (vtkPLYReader(), "ply")):
        reader.SetFileName(str(write_mesh(box, tmp_path / f"v.{fmt}")))
        props = vtkMassProperties()
        props.SetInputConnection(reader.GetOutputPort())
        props.Update()
        assert props.GetVolume() == pytest.approx(6000.0, rel=1e-5)
        assert props.GetSurfaceArea() == pytest.approx(2 * (200 + 300 + 600), rel=1e-5)
        bounds = reader.GetOutput().GetBounds()
        assert bounds[0] == pytest.approx(-55.0) and bounds[5] == pytest.approx(215.0)


def test_export_organs_writes_safe_distinct_files_and_the_scene_only(tmp_path, box):
    other = TriangleMesh(box.vertices + (0.0, 0.0, 50.0), box.faces)
    organs = [organ(box, "liver", 5), organ(other, "../liver", 6), organ(box, "con", 7)]
    files = export_organs(organs, tmp_path / "out", fmt="stl", frame="RAS", merged=True)
    assert files.organs == ("meshes/liver.stl", "meshes/liver_2.stl", "meshes/con.stl")
    assert files.merged == "meshes/all_organs.stl"
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == sorted(
        ["meshes", "liver.stl", "liver_2.stl", "con.stl", "all_organs.stl"])  # no report.json
    moved = trimesh.load(tmp_path / "out" / files.organs[1], force="mesh")
    assert moved.bounds[0] == pytest.approx([45.0, -110.0, 235.0])  # RAS: x and y negated
    scene = trimesh.load(tmp_path / "out" / files.merged, force="mesh")
    assert len(scene.faces) == 36 and scene.volume == pytest.approx(3 * 6000.0)


def test_export_meshes_writes_the_report_of_the_files(tmp_path, box):
    other = TriangleMesh(box.vertices + (0.0, 0.0, 50.0), box.faces)
    organs = [organ(box, "liver", 5), organ(other, "../liver", 6)]
    report = export_meshes(organs, tmp_path / "out", fmt="3mf", frame="RAS", merged=True,
                           fields={"input": "x.nii.gz"})
    assert report["frame"] == "RAS" and report["units"] == "mm" and report["input"] == "x.nii.gz"
    assert report["schema_version"] == 1 and report["print_ready"] is True
    assert [o["file"] for o in report["organs"]] == ["meshes/liver.3mf", "meshes/liver_2.3mf"]
    assert report["organs"][1]["name"] == "../liver" and report["merged_file"] == "meshes/all_organs.3mf"
    for o in report["organs"]:
        assert (tmp_path / "out" / o["file"]).is_file()
    # bbox follows the written frame: the box (LPS x -55..-45, y 90..110) read back in RAS
    assert report["organs"][0]["bbox_mm"] == [[45.0, -110.0, 185.0], [55.0, -90.0, 215.0]]
    written = trimesh.load(tmp_path / "out" / "meshes" / "liver.3mf", force="mesh")
    assert np.allclose(written.bounds, report["organs"][0]["bbox_mm"])
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report
    with pytest.raises(ValueError, match="frame"):
        export_meshes(organs, tmp_path / "again", fields={"frame": "bogus"})


def test_export_errors(tmp_path, box):
    with pytest.raises(UnsupportedFormatError, match="stl"):
        write_mesh(box, tmp_path / "a.vtk")
    with pytest.raises(TypeError, match="from_trimesh"):
        write_mesh(box.to_trimesh(), tmp_path / "a.stl")
    with pytest.raises(UnsupportedFormatError):
        export_organs([organ(box, "a")], tmp_path, fmt="dxf")
    with pytest.raises(ValueError, match="frame"):
        write_mesh(box, tmp_path / "a.stl", frame="XYZ")
    with pytest.raises(ValueError, match="no organ"):
        export_organs([], tmp_path)


def test_unique_names_are_safe_and_distinct():
    names = unique_names(["Liver", "liver", "a/b", "a_b", "", "..", "x" * 300])
    assert len(set(n.lower() for n in names)) == len(names)
    assert all("/" not in n and not n.startswith(".") and len(n) <= 110 for n in names)


def test_3mf_objects_carry_their_organs_colours(tmp_path, box):
    core = "{http://schemas.microsoft.com/3dmanufacturing/core/2015/02}"
    other = TriangleMesh(box.vertices + (0.0, 0.0, 50.0), box.faces)
    organs = [organ(box, "liver", 5), organ(other, "Kidney Left", 3), organ(box, "tumour", 301)]
    files = export_organs(organs, tmp_path, fmt="3mf", merged=True)
    with zipfile.ZipFile(tmp_path / files.merged) as z:
        root = ET.fromstring(z.read("3D/3dmodel.model"))
    (group,) = root.iter(f"{core}basematerials")
    bases = [(b.get("name"), b.get("displaycolor")) for b in group.iter(f"{core}base")]
    # the vocabulary's anatomical colours (liver 221,130,101; kidney_left 125,45,70)
    assert bases[:2] == [("liver", "#DD8265"), ("Kidney Left", "#7D2D46")]
    assert bases[2][0] == "tumour" and len(bases[2][1]) == 7
    objects = list(root.iter(f"{core}object"))
    assert [(o.get("name"), o.get("pid"), o.get("pindex")) for o in objects] == [
        ("liver", group.get("id"), "0"), ("Kidney Left", group.get("id"), "1"), ("tumour", group.get("id"), "2")]
    assert len({o.get("id") for o in objects} | {group.get("id")}) == 4  # one id space
    items = [i.get("objectid") for i in root.iter(f"{core}item")]
    assert items == [o.get("id") for o in objects]
    scene = trimesh.load(tmp_path / files.merged, force="mesh")
    assert scene.volume == pytest.approx(3 * 6000.0)
    with zipfile.ZipFile(tmp_path / files.organs[1]) as z:  # one organ's own file too
        assert b'displaycolor="#7D2D46"' in z.read("3D/3dmodel.model")
    with pytest.raises(ValueError, match="colour"):
        write_mesh(box, tmp_path / "x.3mf", colour=(1.0, 2.0, 0.0))
