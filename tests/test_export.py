"""Mesh files and report.json: read back with trimesh, VTK and by hand."""

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


@pytest.fixture
def box():
    # LPS mm, off-centre and asymmetric so a wrong axis or sign shows
    mesh = trimesh.creation.box(extents=(10.0, 20.0, 30.0))
    mesh.apply_translation((-50.0, 100.0, 200.0))
    return trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)


def organ(mesh, name, label=1):
    return OrganMesh(label=label, name=name, mesh=mesh, raw=mesh,
                     report={"name": name, "label": label, "watertight": True, "bbox_mm": mesh.bounds.tolist()})


@pytest.mark.parametrize("fmt", ["stl", "obj", "ply", "3mf"])
@pytest.mark.parametrize("frame", ["LPS", "RAS"])
def test_round_trip_through_trimesh(tmp_path, box, fmt, frame):
    path = write_mesh(box, tmp_path / f"part.{fmt}", frame=frame)
    back = trimesh.load(path, force="mesh")
    expected = box.vertices * ([-1, -1, 1] if frame == "RAS" else [1, 1, 1])
    assert np.allclose(back.bounds, trimesh.Trimesh(expected, box.faces).bounds, atol=1e-4)
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


def test_export_organs_names_report_and_scene(tmp_path, box):
    other = box.copy()
    other.apply_translation((0, 0, 50))
    organs = [organ(box, "liver", 5), organ(other, "../liver", 6), organ(box, "con", 7)]
    report = export_organs(organs, tmp_path / "out", fmt="stl", frame="RAS", merged=True,
                           extra_report={"input": "x.nii.gz", "frame": "bogus"})
    assert report["frame"] == "RAS" and report["units"] == "mm" and report["input"] == "x.nii.gz"
    files = [o["file"] for o in report["organs"]]
    assert files == ["meshes/liver.stl", "meshes/liver_2.stl", "meshes/con.stl"]
    assert report["organs"][1]["name"] == "../liver"
    for o in report["organs"]:
        assert (tmp_path / "out" / o["file"]).is_file()
    # bbox follows the written frame
    assert report["organs"][0]["bbox_mm"][0] == pytest.approx([45.0, -110.0, 185.0])
    scene = trimesh.load(tmp_path / "out" / report["merged_file"], force="mesh")
    assert len(scene.faces) == 36
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report


def test_export_errors(tmp_path, box):
    with pytest.raises(UnsupportedFormatError, match="stl"):
        write_mesh(box, tmp_path / "a.vtk")
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
