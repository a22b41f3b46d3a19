"""napari widgets and writers, headless under Xvfb, on the real TotalSegmentator example."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

QtCore = pytest.importorskip("qtpy.QtCore")
Qt = QtCore.Qt

napari = pytest.importorskip("napari")
nib = pytest.importorskip("nibabel")
trimesh = pytest.importorskip("trimesh")

from napari_plugin._qt._complete_widget import CompleteWidget  # noqa: E402
from napari_plugin._qt._mesh_widget import MeshExportWidget  # noqa: E402
from napari_plugin._qt._reconstruct_widget import ReconstructWidget  # noqa: E402

pytestmark = pytest.mark.napari

LIVER, SPLEEN = 5, 1
JOB_TIMEOUT_MS = 120_000


def _start_and_wait(qtbot, runner, start):
    with qtbot.waitSignal(runner.job_finished, timeout=JOB_TIMEOUT_MS) as blocker:
        worker = start()
        assert worker is not None
    return blocker.args[0]


def _names_in_seg(totalseg_dir):
    import json

    table = json.loads((totalseg_dir / "class_map_total.json").read_text())
    return {int(k): v for k, v in table.items()}


@pytest.fixture
def seg_layer(make_napari_viewer, totalseg_dir, tmp_path):
    """The 3 mm TotalSegmentator labels opened through the plugin, with a names sidecar."""
    import json
    import shutil

    viewer = make_napari_viewer(show=True)
    seg = tmp_path / "example_seg.nii.gz"
    shutil.copy(totalseg_dir / "example_seg.nii.gz", seg)
    names = _names_in_seg(totalseg_dir)
    (tmp_path / "example_seg.json").write_text(json.dumps({str(k): v for k, v in names.items()}))
    [layer] = viewer.open(str(seg), plugin="medrecon")
    return viewer, layer


def test_mesh_widget_builds_table_and_exports_watertight_meshes(qtbot, seg_layer, tmp_path, totalseg_dir):
    viewer, layer = seg_layer
    assert isinstance(layer, napari.layers.Labels)
    widget = MeshExportWidget(viewer)
    qtbot.addWidget(widget)
    widget.labels_combo.setCurrentText(layer.name)
    widget.organs_edit.setText("liver, spleen")
    widget.live_check.setChecked(False)
    assert _start_and_wait(qtbot, widget.runner, widget.build) == "done"

    assert widget.table.rowCount() == 2
    assert [widget.table.item(r, 0).text() for r in range(2)] == ["spleen", "liver"]
    assert {widget.table.item(r, 1).text() for r in range(2)} == {"yes"}
    header = [widget.table.horizontalHeaderItem(c).text() for c in range(widget.table.columnCount())]
    # TotalSegmentator's own organs pass the plausibility checks
    assert {widget.table.item(r, header.index("Plausible")).text() for r in range(2)} == {"yes"}
    assert {widget.table.item(r, header.index("Why not")).text() for r in range(2)} == {""}
    surfaces = [lyr for lyr in viewer.layers if isinstance(lyr, napari.layers.Surface)]
    assert sorted(s.name for s in surfaces) == ["liver", "spleen"]

    # live: changing an option rebuilds; the table and the same two surfaces follow
    faces = [int(widget.table.item(r, 3).text()) for r in range(2)]
    widget.live_check.setChecked(True)
    with qtbot.waitSignal(widget.runner.job_finished, timeout=JOB_TIMEOUT_MS) as blocker:
        widget.decimate_spin.setValue(0.5)
    assert blocker.args == ["done"]
    halved = [int(widget.table.item(r, 3).text()) for r in range(2)]
    assert all(0.4 * f < h < 0.6 * f for f, h in zip(faces, halved, strict=True)), (faces, halved)
    surfaces = [lyr for lyr in viewer.layers if isinstance(lyr, napari.layers.Surface)]
    assert sorted(s.name for s in surfaces) == ["liver", "spleen"]
    assert len(viewer.layers["liver"].data[1]) == halved[1]

    widget.folder_edit.setText(str(tmp_path / "out"))
    widget.table.item(0, 0).setCheckState(Qt.CheckState.Unchecked)
    report = widget.export()
    assert report is not None and [o["name"] for o in report["organs"]] == ["liver"]
    liver = trimesh.load(tmp_path / "out" / "meshes" / "liver.stl")
    assert liver.is_watertight
    # ground truth from nibabel: voxel count x voxel volume, in LPS world mm
    img = nib.load(totalseg_dir / "example_seg.nii.gz")
    truth = np.asarray(img.dataobj) == LIVER
    voxel_ml = truth.sum() * abs(np.linalg.det(img.affine[:3, :3])) / 1000
    assert liver.volume / 1000 == pytest.approx(voxel_ml, rel=0.1)
    ijk = np.argwhere(truth).mean(axis=0)
    ras = img.affine[:3, :3] @ ijk + img.affine[:3, 3]
    lps = ras * [-1, -1, 1]
    np.testing.assert_allclose(liver.center_mass, lps, atol=3.0)  # within one voxel


def test_reconstruct_with_bone_preset_adds_labels_and_surface(qtbot, make_napari_viewer, totalseg_dir):
    viewer = make_napari_viewer(show=True)
    [ct] = viewer.open(str(totalseg_dir / "example_ct_sm.nii.gz"), plugin="medrecon")
    widget = ReconstructWidget(viewer)
    qtbot.addWidget(widget)
    widget.image_combo.setCurrentText(ct.name)
    widget.set_method("preset")
    widget.preset_combo.setCurrentText("bone")
    assert _start_and_wait(qtbot, widget.runner, widget.run) == "done"

    labels = viewer.layers[f"{ct.name} bone"]  # named after the image and the preset
    assert isinstance(labels, napari.layers.Labels)
    assert labels.metadata["medrecon"]["names"] == {200: "bone"}
    [bone] = [lyr for lyr in viewer.layers if isinstance(lyr, napari.layers.Surface)]
    assert bone.name == "bone"
    # bone voxels hold bone HU in the image layer (both layers in world mm)
    kji = np.argwhere(np.asarray(labels.data) == 200)[::50]
    values = np.asarray(ct.data)[tuple(kji.T)]
    assert np.median(values) > 300

    # meshes in 3D, the CT in 2D (as 3D Slicer shows them); shown in 3D by the user, it is a plane
    assert viewer.dims.ndisplay == 3 and bone.visible and not ct.visible
    assert ct.depiction == "plane"  # a CT plane under the meshes, not a volume hiding them
    viewer.dims.ndisplay = 2
    assert ct.visible and labels.visible and not bone.visible
    viewer.dims.ndisplay = 3
    assert not ct.visible and bone.visible
    ct.visible = True  # the user's choice for the 3D view is kept
    viewer.dims.ndisplay = 2
    viewer.dims.ndisplay = 3
    assert ct.visible
    # the Mesh and export widget shows the reconstruction's report without rebuilding
    mesh_widget = MeshExportWidget(viewer)
    qtbot.addWidget(mesh_widget)
    assert mesh_widget.labels_combo.currentText() == labels.name
    assert [mesh_widget.table.item(r, 0).text() for r in range(mesh_widget.table.rowCount())] == ["bone"]
    assert mesh_widget.table.item(0, 3).text() == str(len(bone.data[1]))
    # right-handed screen axes for the right-handed patient frame: 3D is not mirrored
    assert [str(o.value) for o in viewer.camera.orientation] == ["away", "down", "right"]

    # 3D view with the meshes over a hidden CT: the mesh is drawn (not a blank canvas)
    ct.visible = False
    labels.visible = False
    viewer.scene.overlays.axes.visible = False  # the orientation arrows
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    bone.visible = False
    empty = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    assert np.ptp(empty) < 10  # nothing else is drawn
    drawn = np.any(np.abs(shot - empty) > 10, axis=-1)
    assert drawn.mean() > 0.005, drawn.mean()  # the bone covers part of the canvas
    assert np.ptp(shot[drawn].mean(axis=-1)) > 20  # and is shaded, not a flat silhouette


def test_cancel_stops_a_running_job_and_adds_nothing(qtbot, seg_layer):
    viewer, layer = seg_layer
    widget = ReconstructWidget(viewer)
    qtbot.addWidget(widget)
    widget.set_method("labels")
    widget.labels_combo.setCurrentText(layer.name)  # all 41 structures: many seconds of work
    before = [lyr.name for lyr in viewer.layers]
    with qtbot.waitSignal(widget.runner.job_finished, timeout=JOB_TIMEOUT_MS) as blocker:
        worker = widget.run()
        qtbot.waitUntil(lambda: widget.runner.status.text() != "starting...", timeout=30_000)
        widget.runner.cancel_button.click()
    assert blocker.args == ["cancelled"]
    assert worker.is_running is False
    assert [lyr.name for lyr in viewer.layers] == before
    assert widget.runner.run_button.isEnabled()


def test_meshes_of_a_labels_layer_switch_to_3d_with_the_labels_already_hidden(qtbot, seg_layer):
    viewer, layer = seg_layer
    widget = ReconstructWidget(viewer)
    qtbot.addWidget(widget)
    widget.set_method("labels")
    widget.labels_combo.setCurrentText(layer.name)
    widget.organs_edit.setText("liver, spleen")
    at_switch = []  # called after the view's own handler: what napari draws in the first 3D frame
    viewer.dims.events.ndisplay.connect(lambda _e: at_switch.append(layer.visible), position="last")
    assert _start_and_wait(qtbot, widget.runner, widget.run) == "done"
    assert viewer.dims.ndisplay == 3 and at_switch == [False]  # never drawn as a 3D volume
    assert sorted(s.name for s in viewer.layers if isinstance(s, napari.layers.Surface)) == ["liver", "spleen"]
    viewer.dims.ndisplay = 2
    assert layer.visible


@pytest.mark.parametrize("method", ["sdf", "network"])
def test_complete_widget_fills_organ_between_drawn_slices(qtbot, seg_layer, method):
    from napari_plugin._qt._complete_widget import network_available

    if method == "network" and not network_available():
        pytest.skip("the default shape-completion model is not installed")
    viewer, layer = seg_layer
    full = np.asarray(layer.data) == LIVER
    sparse = np.zeros(full.shape, np.uint8)
    drawn = np.flatnonzero(full.any(axis=(1, 2)))[::3]  # every third axial slice (layer axis 0 = k)
    sparse[drawn] = np.where(full[drawn], LIVER, 0)
    viewer.add_labels(sparse, name="drawn", affine=layer.affine, metadata={"medrecon": {"names": {5: "liver"}}})
    widget = CompleteWidget(viewer)
    qtbot.addWidget(widget)
    widget.labels_combo.setCurrentText("drawn")
    widget.method_combo.setCurrentIndex(widget.method_combo.findData(method))
    assert widget.plane_combo.currentText() == "Axial"  # follows the viewer's 2D view
    assert _start_and_wait(qtbot, widget.runner, widget.run) == "done"
    done = np.asarray(viewer.layers["drawn completed"].data) == LIVER
    dice = 2 * (done & full).sum() / (done.sum() + full.sum())
    assert dice > 0.85, dice
    np.testing.assert_array_equal(np.asarray(viewer.layers["drawn"].data), sparse)  # untouched


def test_writers_keep_the_layer_and_write_world_geometry(seg_layer, tmp_path, totalseg_dir):
    viewer, layer = seg_layer
    data_before = np.array(layer.data, copy=True)
    affine_before = np.array(layer.affine.affine_matrix, copy=True)
    [written, sidecar] = layer.save(str(tmp_path / "saved.nii.gz"), plugin="medrecon")
    np.testing.assert_array_equal(np.asarray(layer.data), data_before)
    np.testing.assert_array_equal(layer.affine.affine_matrix, affine_before)
    src = nib.load(totalseg_dir / "example_seg.nii.gz")
    out = nib.load(written)
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(out.dataobj), np.asarray(src.dataobj))
    assert '"liver"' in open(sidecar).read()

    # a surface made by "another plugin": vertices in voxel units, placed by scale + translate
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=4.0)
    surface = viewer.add_surface(
        (sphere.vertices, sphere.faces), scale=(2.0, 3.0, 1.0), translate=(-50.0, 10.0, 20.0)
    )
    verts_before = np.array(surface.data[0], copy=True)
    [path] = surface.save(str(tmp_path / "ball.stl"), plugin="medrecon")
    np.testing.assert_array_equal(surface.data[0], verts_before)
    mesh = trimesh.load(path)
    zyx = sphere.vertices * [2.0, 3.0, 1.0] + [-50.0, 10.0, 20.0]
    np.testing.assert_allclose(np.sort(mesh.vertices, axis=0), np.sort(zyx[:, ::-1], axis=0), atol=1e-3)
    assert mesh.is_watertight and mesh.volume > 0
    assert mesh.volume == pytest.approx(sphere.volume * 6.0, rel=1e-3)


def test_3d_view_is_not_mirrored(make_napari_viewer):
    from medrecon.mesh import OrganMesh
    from medrecon.triangles import TriangleMesh
    from napari_plugin._layers import show_reconstruction

    viewer = make_napari_viewer(show=True)
    right = trimesh.creation.icosphere(subdivisions=2, radius=20.0)
    right.apply_translation([-60.0, 0.0, 0.0])  # LPS: x < 0 is the patient's right
    left = trimesh.creation.icosphere(subdivisions=2, radius=20.0)
    left.apply_translation([60.0, 0.0, 0.0])
    organs = [
        OrganMesh(label=1, name="right_thing", mesh=TriangleMesh.from_trimesh(right),
                  raw=TriangleMesh.from_trimesh(right), report={}),
        OrganMesh(label=2, name="left_thing", mesh=TriangleMesh.from_trimesh(left),
                  raw=TriangleMesh.from_trimesh(left), report={}),
    ]
    show_reconstruction(viewer, None, organs, name="test")
    viewer.layers["right_thing"].vertex_colors = np.tile([1.0, 0, 0, 1], (len(right.vertices), 1))
    viewer.layers["left_thing"].vertex_colors = np.tile([0, 0, 1.0, 1], (len(left.vertices), 1))
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    viewer.scene.overlays.axes.visible = False  # the orientation arrows
    # face the patient: look from anterior towards posterior (+y), superior up
    viewer.camera.set_view_direction((0.0, 1.0, 0.0), up_direction=(1.0, 0.0, 0.0))
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    cols = np.arange(shot.shape[1])
    red = (shot[..., 0] > shot[..., 2] + 20)
    blue = (shot[..., 2] > shot[..., 0] + 20)
    assert red.sum() > 100 and blue.sum() > 100
    # the patient's right appears on the viewer's left, as when facing a person
    assert cols[red.any(axis=0)].mean() < cols[blue.any(axis=0)].mean()


def _default_model_missing() -> bool:
    from medrecon.models.checkpoint import DEFAULT_MODEL_DIR

    return not DEFAULT_MODEL_DIR.is_dir()


@pytest.mark.slow
@pytest.mark.skipif(_default_model_missing(), reason="the default segmentation model is not installed")
def test_reconstruct_sample_with_default_model(qtbot, make_napari_viewer):
    from napari_plugin._layers import image_layer_data, labelmap_from_layer, volume_from_layer

    viewer = make_napari_viewer(show=True)
    layers = viewer.open_sample("medrecon", "abdominal_phantom")
    image = next(lyr for lyr in layers if isinstance(lyr, napari.layers.Image))
    truth = labelmap_from_layer(next(lyr for lyr in layers if isinstance(lyr, napari.layers.Labels)))
    # a 12-slice slab through the liver keeps CPU inference short
    volume = volume_from_layer(image)
    assert volume.same_grid(truth)
    ks = np.flatnonzero(truth.mask(LIVER).any(axis=(0, 1)))
    k0 = int(ks[len(ks) // 2]) - 6
    shift = np.eye(4)
    shift[2, 3] = k0
    slab = volume.replace(array=np.asarray(volume.array)[:, :, k0:k0 + 12], affine=volume.affine @ shift)
    data, kwargs, _ = image_layer_data(slab, name="slab")
    viewer.add_image(data, **kwargs)
    widget = ReconstructWidget(viewer)
    qtbot.addWidget(widget)
    widget.image_combo.setCurrentText("slab")
    widget.set_method("model")
    widget.organs_edit.setText("liver, spleen")
    stages = []
    widget.runner.progressed.connect(lambda stage, _fraction: stages.append(stage))
    assert _start_and_wait(qtbot, widget.runner, widget.run) == "done"
    # the model loads in the worker, under its own message, before segmenting starts
    assert "loading the model" in stages and "segment" in stages
    assert stages.index("loading the model") < stages.index("segment")
    result = viewer.layers["slab organs"]
    assert set(result.metadata["medrecon"]["names"].values()) == {"liver", "spleen"}
    assert {lyr.name for lyr in viewer.layers if isinstance(lyr, napari.layers.Surface)} == {"liver", "spleen"}
    # the phantom's own labels on the same slab are the ground truth, voxel for voxel
    pred = labelmap_from_layer(result)
    np.testing.assert_allclose(pred.affine, slab.affine, atol=1e-6)
    gt = np.asarray(truth.array)[:, :, k0:k0 + 12] == LIVER
    got = np.asarray(pred.array) == LIVER
    assert 2 * (got & gt).sum() / (got.sum() + gt.sum()) > 0.7


def test_job_errors_show_the_cli_message(qtbot, make_napari_viewer, monkeypatch):
    import napari.utils.notifications as notifications

    from medrecon.volume import Volume
    from napari_plugin._layers import image_layer_data

    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    viewer = make_napari_viewer()
    mr = Volume(np.zeros((8, 8, 4), np.float32), np.eye(4), modality="MR")
    data, kwargs, _ = image_layer_data(mr, name="mr")
    viewer.add_image(data, **kwargs)
    widget = ReconstructWidget(viewer)
    qtbot.addWidget(widget)
    widget.set_method("preset")
    n_layers = len(viewer.layers)
    assert _start_and_wait(qtbot, widget.runner, widget.run) == "failed"
    assert len(shown) == 1 and "need a CT" in shown[0] and "Error" not in shown[0]
    assert len(viewer.layers) == n_layers

    widget.set_method("checkpoint")  # no file chosen: refused before any work starts
    assert widget.run() is None
    assert "checkpoint" in shown[-1]
    assert widget.runner.status.text() == f"not started: {shown[-1]}"  # in the widget, not only a toast


def test_several_surfaces_save_into_one_folder(make_napari_viewer, tmp_path):
    from napari_plugin._writer import write_surfaces

    viewer = make_napari_viewer()
    a = trimesh.creation.icosphere(subdivisions=1, radius=3.0)
    b = trimesh.creation.box(extents=(2.0, 4.0, 6.0))
    viewer.add_surface((a.vertices, a.faces), name="left/kidney")  # unsafe as a file name
    viewer.add_surface((b.vertices, b.faces), name="box", translate=(10.0, 0.0, 0.0))
    written = viewer.layers.save(str(tmp_path / "organs"), selected=False, plugin="medrecon")
    assert sorted(os.path.basename(p) for p in written) == ["box.stl", "left_kidney.stl"]
    box = trimesh.load(tmp_path / "organs" / "box.stl")
    assert box.is_watertight and box.volume == pytest.approx(48.0, rel=1e-6)
    # napari (z, y, x) extents (2, 4, 6), z moved by 10 -> LPS x in [-3, 3], z in [9, 11]
    np.testing.assert_allclose(box.bounds, [[-3.0, -2.0, 9.0], [3.0, 2.0, 11.0]], atol=1e-5)
    # same names (possible outside a viewer) keep both files; a suffix picks the format
    same = [layer.as_layer_data_tuple() for layer in viewer.layers]
    same[1][1]["name"] = "left/kidney"
    written = write_surfaces(str(tmp_path / "objs.obj"), same)
    assert [os.path.basename(p) for p in written] == ["left_kidney.obj", "left_kidney_2.obj"]
    assert all(os.path.dirname(p) == str(tmp_path / "objs") for p in written)


def test_every_field_has_a_tooltip(make_napari_viewer, qtbot):
    from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QTableWidget

    viewer = make_napari_viewer()
    fields = 0
    for cls in (ReconstructWidget, MeshExportWidget, CompleteWidget):
        widget = cls(viewer)
        qtbot.addWidget(widget)
        for kind in (QComboBox, QLineEdit, QAbstractSpinBox, QAbstractButton, QTableWidget):
            for field in widget.findChildren(kind):
                if isinstance(field, QLineEdit) and isinstance(field.parent(), QComboBox | QAbstractSpinBox):
                    continue  # the editor inside a combo or spin box: its owner has the tooltip
                if field.objectName().startswith("qt_"):
                    continue  # Qt's own parts (the table's corner button)
                fields += 1
                assert field.toolTip().strip(), f"{cls.__name__}: {type(field).__name__} {field.objectName()!r}"
    assert fields >= 30
    mesh_widget = MeshExportWidget(viewer)
    qtbot.addWidget(mesh_widget)
    header = mesh_widget.table
    hd95 = next(c for c in range(header.columnCount()) if "HD95" in header.horizontalHeaderItem(c).text())
    assert "mask" in header.horizontalHeaderItem(hd95).text()  # what the distance is measured to
    assert "raw marching-cubes" in header.horizontalHeaderItem(hd95).toolTip()


def test_enter_runs_and_refusals_show_in_the_status_line(qtbot, make_napari_viewer, totalseg_dir):
    viewer = make_napari_viewer(show=True)
    widget = ReconstructWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_method("preset")
    widget.organs_edit.setFocus()
    qtbot.keyClick(widget.organs_edit, Qt.Key.Key_Return)  # no image yet: refused, in words
    assert widget.runner.status.text() == "not started: no image layer to reconstruct: open a CT or MR study first"
    assert widget.runner.worker is None

    [ct] = viewer.open(str(totalseg_dir / "example_ct_sm.nii.gz"), plugin="medrecon")
    widget.preset_combo.setCurrentText("bone")
    with qtbot.waitSignal(widget.runner.job_finished, timeout=JOB_TIMEOUT_MS) as blocker:
        qtbot.keyClick(widget.organs_edit, Qt.Key.Key_Return)
    assert blocker.args == ["done"]
    # a second preset on the same image keeps the first one's results
    widget.preset_combo.setCurrentText("lung")
    assert _start_and_wait(qtbot, widget.runner, widget.run) == "done"
    assert {f"{ct.name} bone", f"{ct.name} lung"} <= {layer.name for layer in viewer.layers}
    assert viewer.layers[f"{ct.name} bone"].metadata["medrecon"]["names"] == {200: "bone"}


def test_table_is_readable_at_the_default_dock_width(qtbot, make_napari_viewer):
    from medrecon.mesh import OrganMesh
    from medrecon.triangles import TriangleMesh

    viewer = make_napari_viewer(show=True)
    widget = MeshExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    ball = TriangleMesh.from_trimesh(trimesh.creation.icosphere(subdivisions=1))
    report = {"watertight": True, "mesh_volume_ml": 1834.56, "faces": 123456, "hd95_mm": 0.53}
    names = ["liver", "inferior_vena_cava", "kidney_right", "urinary_bladder"]
    widget.organ_meshes = [OrganMesh(label=n, name=name, mesh=ball, raw=ball, report=report)
                           for n, name in enumerate(names, start=1)]
    widget._fill_table()
    qtbot.waitExposed(widget)
    table = widget.table
    assert not table.horizontalScrollBar().isVisible()  # every column on screen
    assert table.horizontalHeader().length() <= table.viewport().width()
    metrics = table.fontMetrics()
    for col in range(1, table.columnCount()):  # numbers whole
        text = table.item(0, col).text()
        assert table.columnWidth(col) >= metrics.horizontalAdvance(text), (col, text)
    assert table.columnWidth(0) >= max(metrics.horizontalAdvance(n) for n in names) + 20  # names whole
