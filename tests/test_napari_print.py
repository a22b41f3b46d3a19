"""The Mesh and export widget's print options, on analytic shapes with known walls.

The shapes are label maps on an oblique, reflected grid (tests/_builders.py);
their wall thicknesses are known analytically, and the exported files are checked
with trimesh, not with medrecon's own mesh checks.
"""

import json
import os

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from _builders import CENTRE, oblique_grid, world_points  # noqa: E402

napari = pytest.importorskip("napari")
trimesh = pytest.importorskip("trimesh")
pytest.importorskip("qtpy.QtCore")

from medrecon.errors import InputError  # noqa: E402
from medrecon.volume import LabelMap  # noqa: E402
from napari_plugin._layers import labels_layer_data  # noqa: E402
from napari_plugin._qt._mesh_widget import MeshExportWidget  # noqa: E402

pytestmark = pytest.mark.napari

JOB_TIMEOUT_MS = 120_000


def _add_labels(viewer, mask, affine, name):
    data, kwargs, _ = labels_layer_data(LabelMap(mask.astype(np.uint8), affine, names={1: name}), name=name)
    return viewer.add_layer(napari.layers.Labels(data, **kwargs))


def _build(qtbot, widget):
    with qtbot.waitSignal(widget.runner.job_finished, timeout=JOB_TIMEOUT_MS) as blocker:
        assert widget.build() is not None
    assert blocker.args == ["done"], widget.runner.status.text()


def _column(widget, header_start):
    header = [widget.table.horizontalHeaderItem(c).text() for c in range(widget.table.columnCount())]
    return next(c for c, text in enumerate(header) if text.startswith(header_start))


def _widget(qtbot, viewer):
    widget = MeshExportWidget(viewer)
    qtbot.addWidget(widget)
    widget.live_check.setChecked(False)  # builds only when the test asks
    return widget


def _ball_widget(qtbot, viewer):
    """A solid ball of radius 12 mm around CENTRE on an oblique, reflected grid, and the widget."""
    affine, shape = oblique_grid((0.6, 0.6, 0.6), 14.0)
    mask = (np.linalg.norm(world_points(affine, shape) - CENTRE, axis=1) <= 12.0).reshape(shape)
    _add_labels(viewer, mask, affine, "ball")
    return _widget(qtbot, viewer)


def test_hollow_export_with_two_drain_holes_is_watertight_and_reported(qtbot, make_napari_viewer, tmp_path):
    # hollowed with a 2 mm wall, the ball's cavity is a ball of radius 10 mm
    viewer = make_napari_viewer()
    widget = _ball_widget(qtbot, viewer)
    widget.hollow_spin.setValue(2.0)
    widget.drain_spin.setValue(2)
    widget.drain_diameter_spin.setValue(3.0)
    _build(qtbot, widget)
    widget.folder_edit.setText(str(tmp_path / "out"))
    widget.format_combo.setCurrentText("stl")
    report = widget.export()
    assert report is not None

    [organ] = report["organs"]
    assert report["options"]["drain_holes"] == 2 and report["options"]["hollow_mm"] == 2.0
    holes = organ["drain_holes"]
    assert len(holes) == 2 and all(h["diameter_mm"] == 3.0 for h in holes)
    # the holes start on the cavity (radius 10 mm) at its lowest points (+z up) and go down
    for hole in holes:
        start, exit_ = np.array(hole["start"]), np.array(hole["exit"])
        assert np.linalg.norm(start - CENTRE) == pytest.approx(10.0, abs=1.0)
        assert start[2] < CENTRE[2] and exit_[2] < start[2]
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(written["organs"][0]["drain_holes"]) == 2

    # the file, read by trimesh: closed, consistently wound, and one shell (the cavity drains)
    tm = trimesh.load(tmp_path / "out" / organ["file"], process=True)
    assert tm.is_watertight and tm.is_winding_consistent and tm.volume > 0
    assert len(tm.split(only_watertight=False)) == 1
    shell = 4.0 / 3.0 * np.pi * (12.0**3 - 10.0**3)
    assert tm.volume == pytest.approx(shell, rel=0.15)
    # the table says what the report says, and the print-ready cell names the holes
    ready = widget.table.item(0, _column(widget, "Print-"))
    assert ready.text() == ("yes" if organ["print_ready"] else "no")
    assert "2 drain hole(s)" in ready.toolTip()


def test_sla_passes_the_thin_plate_that_fdm_fails(qtbot, make_napari_viewer):
    # a 0.6 mm plate (4 voxels of 0.15 mm), 5.6 mm square: thinner than FDM's 1 mm, thicker than SLA's 0.4 mm
    affine, _ = oblique_grid((0.1, 0.1, 0.15), 3.0)
    mask = np.zeros((64, 64, 10), bool)
    mask[4:60, 4:60, 3:7] = True
    viewer = make_napari_viewer()
    _add_labels(viewer, mask, affine, "plate")
    widget = _widget(qtbot, viewer)
    ready, wall, crossings = (_column(widget, h) for h in ("Print-", "Thinnest", "Self-"))

    widget.process_combo.setCurrentText("fdm")
    _build(qtbot, widget)
    assert widget.table.item(0, ready).text() == "no"
    assert float(widget.table.item(0, wall).text()) == pytest.approx(0.6, abs=0.1)
    assert widget.table.item(0, crossings).text() == "0"
    assert "walls under 1.0 mm" in widget.table.item(0, ready).toolTip()
    [fdm] = widget.organ_meshes
    assert fdm.report["process"] == "fdm" and fdm.report["print_ready"] is False

    widget.process_combo.setCurrentText("sla")
    _build(qtbot, widget)
    assert widget.table.item(0, ready).text() == "yes"
    [sla] = widget.organ_meshes
    assert sla.report["process"] == "sla" and sla.report["min_wall_mm"] == 0.4

    # a minimum wall above the plate fails it again under SLA
    widget.min_wall_spin.setValue(0.8)
    _build(qtbot, widget)
    assert widget.table.item(0, ready).text() == "no"
    assert widget.organ_meshes[0].report["min_wall_mm"] == 0.8


def test_print_options_reach_the_mesh_options_and_bad_ones_are_refused(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    widget = _widget(qtbot, viewer)
    widget.bed_edit.setText("200,200,180")
    options = widget.options()
    assert options.fit_bed == (200.0, 200.0, 180.0) and options.scale == 1.0 and options.min_wall_mm is None
    widget.scale_spin.setValue(0.5)  # a scale and a bed: one or the other
    with pytest.raises(InputError, match="either a scale or a bed"):
        widget.options()
    widget.scale_spin.setValue(1.0)
    widget.bed_edit.setText("200,200")
    with pytest.raises(InputError, match="X,Y,Z"):
        widget.options()
    widget.bed_edit.setText("")
    widget.drain_spin.setValue(2)  # drain holes need a hollow shell
    with pytest.raises(InputError, match="hollow"):
        widget.options()


def test_a_scaled_print_is_exported_scaled_and_shown_life_size_on_the_image(qtbot, make_napari_viewer, tmp_path):
    from napari_plugin._geometry import surface_to_mesh

    viewer = make_napari_viewer()
    widget = _ball_widget(qtbot, viewer)
    widget.scale_spin.setValue(0.5)
    _build(qtbot, widget)
    [organ] = widget.organ_meshes
    assert organ.report["scale"] == 0.5
    # the print: half size, about the scene's centre
    printed = organ.mesh.vertices
    assert np.median(np.linalg.norm(printed - CENTRE, axis=1)) == pytest.approx(6.0, abs=0.3)
    widget.folder_edit.setText(str(tmp_path / "out"))
    widget.format_combo.setCurrentText("stl")
    report = widget.export()
    written = trimesh.load(tmp_path / "out" / report["organs"][0]["file"])
    assert np.median(np.linalg.norm(written.vertices - CENTRE, axis=1)) == pytest.approx(6.0, abs=0.3)
    # the surface shown: life size, where the ball is in the image (world LPS mm)
    [surface] = [lyr for lyr in viewer.layers if isinstance(lyr, napari.layers.Surface)]
    shown = surface_to_mesh(surface.data, surface.as_layer_data_tuple()[1])
    assert np.median(np.linalg.norm(shown.vertices - CENTRE, axis=1)) == pytest.approx(12.0, abs=0.3)


def test_the_export_report_names_the_bed_the_meshes_were_fitted_to(qtbot, make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    widget = _ball_widget(qtbot, viewer)
    widget.bed_edit.setText("20,20,20")
    _build(qtbot, widget)
    widget.bed_edit.setText("")  # changed after the build: the report is of the meshes built
    widget.folder_edit.setText(str(tmp_path / "out"))
    report = widget.export()
    block = report["print"]
    assert block["fit_bed_mm"] == [20.0, 20.0, 20.0] and block["life_size"] is False
    assert block["scale"] == pytest.approx(20.0 / 24.0, rel=0.05)  # a 24 mm ball into a 20 mm bed
    assert max(block["scene_size_mm"]) <= 20.0 + 1e-6
    assert report["options"]["fit_bed"] == [20.0, 20.0, 20.0]
