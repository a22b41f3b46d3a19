"""What a user sees in napari: 3D that works and is lit, head-up 2D, contours, names, colours.

Headless under Xvfb (pytest-xvfb) with Qt's xcb platform; screenshots need shown viewers.
Ground truth comes from the files (nibabel), medrecon's label vocabulary and
napari's own default (mirrored) rendering of the same meshes.
"""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

napari = pytest.importorskip("napari")
nib = pytest.importorskip("nibabel")
trimesh = pytest.importorskip("trimesh")

from medrecon.labels import organ_colour  # noqa: E402
from napari_plugin._qt._complete_widget import CompleteWidget  # noqa: E402
from napari_plugin._qt._reconstruct_widget import ReconstructWidget  # noqa: E402

pytestmark = pytest.mark.napari

LIVER = 5
JOB_TIMEOUT_MS = 180_000
ORGANS = ("liver", "spleen", "kidney_right", "kidney_left")


def _run(qtbot, runner, start):
    with qtbot.waitSignal(runner.job_finished, timeout=JOB_TIMEOUT_MS) as blocker:
        start()
    return blocker.args[0]


@pytest.fixture(scope="module")
def organ_meshes(totalseg_dir):
    """Meshes of four abdominal organs of TotalSegmentator's labels of the real CT."""
    from medrecon.io import load_labels
    from napari_plugin._jobs import ReconstructRequest, reconstruct

    labels = load_labels(totalseg_dir / "example_seg.nii.gz")
    _, meshes = reconstruct(None, ReconstructRequest(method="labels", organs=ORGANS), labels=labels)
    return labels, meshes


def _shot(viewer) -> np.ndarray:
    viewer.scene.overlays.axes.visible = False  # the orientation arrows are not the scene
    return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)


def test_jobs_after_the_first_and_opening_labels_work_in_3d(qtbot, make_napari_viewer, totalseg_dir):
    viewer = make_napari_viewer(show=True)
    [ct] = viewer.open(str(totalseg_dir / "example_ct_sm.nii.gz"), plugin="medrecon")
    widget = ReconstructWidget(viewer)
    qtbot.addWidget(widget)
    widget.set_method("preset")
    widget.preset_combo.setCurrentText("bone")
    viewer.dims.ndisplay = 3
    assert _run(qtbot, widget.runner, widget.run) == "done"
    first = viewer.layers[f"{ct.name} bone"]
    # a second reconstruction replaces the first one's layers, in 3D, without an error
    assert _run(qtbot, widget.runner, widget.run) == "done"
    assert viewer.dims.ndisplay == 3
    names = [layer.name for layer in viewer.layers]
    assert names.count(f"{ct.name} bone") == 1 and names.count("bone") == 1, names
    assert viewer.layers[f"{ct.name} bone"] is not first

    # complete from slices, in 3D: every third axial slice of the real liver
    seg = nib.load(totalseg_dir / "example_seg.nii.gz")
    full = (np.asarray(seg.dataobj) == LIVER).transpose(2, 1, 0)
    sparse = np.zeros(full.shape, np.uint8)
    drawn = np.flatnonzero(full.any(axis=(1, 2)))[::3]
    sparse[drawn] = np.where(full[drawn], LIVER, 0)
    viewer.add_labels(sparse, name="drawn", affine=ct.affine, metadata={"medrecon": {"names": {5: "liver"}}})
    complete = CompleteWidget(viewer)
    qtbot.addWidget(complete)
    complete.labels_combo.setCurrentText("drawn")
    complete.method_combo.setCurrentIndex(complete.method_combo.findData("sdf"))
    complete.plane_combo.setCurrentIndex(complete.plane_combo.findData(0))
    assert _run(qtbot, complete.runner, complete.run) == "done"
    assert isinstance(viewer.layers["drawn completed"], napari.layers.Labels)

    # opening a label file with a names table, in 3D, and making it the active layer
    [labels] = viewer.open(str(totalseg_dir / "example_seg.nii.gz"), plugin="medrecon")
    viewer.layers.selection.active = labels
    viewer.layers.selection.active = viewer.layers[f"{ct.name} bone"]
    assert viewer.dims.ndisplay == 3
    assert "liver" in set(labels.features["name"])


def test_a_failure_while_adding_results_is_a_failed_job(qtbot, make_napari_viewer, totalseg_dir, monkeypatch):
    import napari_plugin._layers as layers

    viewer = make_napari_viewer()
    [ct] = viewer.open(str(totalseg_dir / "example_ct_sm.nii.gz"), plugin="medrecon")
    widget = ReconstructWidget(viewer)
    qtbot.addWidget(widget)
    widget.set_method("preset")
    widget.preset_combo.setCurrentText("bone")
    assert _run(qtbot, widget.runner, widget.run) == "done"
    before = viewer.layers[f"{ct.name} bone"]

    def broken(viewer, index, layer, **kwargs):
        if isinstance(layer, napari.layers.Surface):  # the Labels layer goes in, its surface fails
            raise RuntimeError("no room for this surface")
        insert(viewer, index, layer, **kwargs)

    insert = layers.insert_layer
    monkeypatch.setattr(layers, "insert_layer", broken)
    assert _run(qtbot, widget.runner, widget.run) == "failed"
    assert widget.runner.status.text() == "failed: RuntimeError: no room for this surface"
    assert widget.runner.run_button.isEnabled()
    assert isinstance(viewer.layers[f"{ct.name} bone"], napari.layers.Labels)
    assert before not in viewer.layers  # the new labels went in; the old ones went after it


def _mean_colour(shot, mask):
    return shot[mask].mean(axis=0)


def test_meshes_are_lit_unmirrored_and_keep_their_organ_colours(make_napari_viewer, organ_meshes):
    from napari_plugin._geometry import mesh_to_layer
    from napari_plugin._layers import show_reconstruction

    _labels, meshes = organ_meshes
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(900, 700)
    # one canvas size for every shot, whichever layer's controls take room beside it
    viewer.window._qt_viewer.canvas.native.setFixedSize(600, 560)
    show_reconstruction(viewer, None, meshes, name="organs")
    viewer.dims.ndisplay = 3  # opens on an anterior view
    shot = _shot(viewer)
    background = shot[0, 0]
    drawn = np.any(np.abs(shot - background) > 3, axis=-1)
    ours = shot[drawn].mean()

    # each organ alone: where it is on screen
    surfaces = [viewer.layers[om.name] for om in meshes]
    masks = {}
    for layer in surfaces:
        for other in surfaces:
            other.visible = other is layer
        alone = _shot(viewer)
        masks[layer.name] = np.any(np.abs(alone - background) > 3, axis=-1)
    overlap = sum(m.astype(int) for m in masks.values())
    checked = []
    for name, mask in masks.items():
        own = mask & (overlap == 1) & drawn
        if own.sum() < 200:
            continue  # behind another organ in this view
        seen = _mean_colour(shot, own)
        expected = np.array(organ_colour(name))
        # lighting scales the colour; the hue (chromaticity) is the vocabulary's
        np.testing.assert_allclose(seen / seen.sum(), expected / expected.sum(), atol=0.04, err_msg=name)
        checked.append(name)
    assert {"liver", "spleen"} <= set(checked), checked

    # the reference: napari's default camera (mirrored) and the meshes as plain world data
    for layer in surfaces:
        layer.visible = False
    for om in meshes:
        verts, faces = mesh_to_layer(om.trimesh())
        viewer.add_surface((verts, faces), shading="smooth",
                           vertex_colors=np.tile([*organ_colour(om.name), 1.0], (len(verts), 1)))
    view = viewer.scene.camera.view_direction, viewer.scene.camera.up_direction
    viewer.scene.camera.orientation = ("towards", "down", "right")
    viewer.scene.camera.set_view_direction(*view)
    reference = _shot(viewer)
    mirrored = np.any(np.abs(reference - background) > 3, axis=-1)
    assert reference.shape == shot.shape
    assert abs(mirrored.mean() - drawn.mean()) < 0.02 * drawn.mean()  # same scene, same size
    assert ours == pytest.approx(reference[mirrored].mean(), rel=0.10), (ours, reference[mirrored].mean())


def test_first_3d_view_faces_the_patient_head_up_unmirrored(make_napari_viewer):
    from medrecon.mesh import OrganMesh
    from medrecon.triangles import TriangleMesh
    from napari_plugin._layers import show_reconstruction

    viewer = make_napari_viewer(show=True)
    spheres = {
        "right_thing": [-40.0, 0.0, 0.0],  # LPS: x < 0 is the patient's right
        "left_thing": [40.0, 0.0, 0.0],
        "head_thing": [0.0, 0.0, 40.0],  # z > 0 is superior
    }
    organs = []
    for label, (name, centre) in enumerate(spheres.items(), start=1):
        ball = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
        ball.apply_translation(centre)
        tri = TriangleMesh.from_trimesh(ball)
        organs.append(OrganMesh(label=label, name=name, mesh=tri, raw=tri, report={}))
    show_reconstruction(viewer, None, organs, name="test")
    colours = {"right_thing": [1.0, 0, 0, 1], "left_thing": [0, 0, 1.0, 1], "head_thing": [0, 1.0, 0, 1]}
    for name, rgba in colours.items():
        layer = viewer.layers[name]
        layer.vertex_colors = np.tile(rgba, (len(layer.data[0]), 1))
    viewer.reset_view()  # in 2D: fits the scene, leaves the 3D angles alone
    viewer.dims.ndisplay = 3  # the first 3D view: no camera angles set by hand
    shot = _shot(viewer).astype(int)
    rows, cols = np.indices(shot.shape[:2])
    red = (shot[..., 0] > shot[..., 2] + 20) & (shot[..., 0] > shot[..., 1] + 20)
    blue = (shot[..., 2] > shot[..., 0] + 20) & (shot[..., 2] > shot[..., 1] + 20)
    green = (shot[..., 1] > shot[..., 0] + 20) & (shot[..., 1] > shot[..., 2] + 20)
    assert red.sum() > 100 and blue.sum() > 100 and green.sum() > 100
    # facing the patient: their right on the viewer's left, their head at the top
    assert cols[red].mean() < cols[blue].mean()
    assert rows[green].mean() < rows[red].mean() - 20
    np.testing.assert_allclose(viewer.scene.camera.view_direction, (0.0, 1.0, 0.0), atol=1e-6)


def test_coronal_and_sagittal_are_head_up_with_axis_labels(make_napari_viewer):
    from medrecon.volume import Volume
    from napari_plugin._layers import image_layer_data
    from napari_plugin._view import attach

    viewer = make_napari_viewer(show=True)
    attach(viewer)
    # an image brighter towards the head: value = k (the superior index) on an LPS grid
    k = np.broadcast_to(np.arange(40, dtype=np.float32), (30, 30, 40))
    data, kwargs, _ = image_layer_data(Volume(np.ascontiguousarray(k), np.diag([2.0, 2.0, 2.0, 1.0])), name="z")
    kwargs["contrast_limits"] = (0.0, 39.0)
    viewer.add_image(data, **kwargs)
    assert viewer.dims.axis_labels == ("S", "P", "L")
    assert viewer.scene.overlays.axes.visible
    viewer.reset_view()
    for _ in range(2):  # roll: sagittal (S, P on screen), then coronal (S, L)
        viewer.dims.roll()
        assert viewer.dims.order[-2] == 0  # superior on the vertical screen axis
        shot = _shot(viewer).mean(axis=-1)
        inside = shot > 0
        rows = np.indices(shot.shape)[0]
        top = shot[inside & (rows < rows[inside].mean())].mean()
        bottom = shot[inside & (rows > rows[inside].mean())].mean()
        assert top > bottom + 50, (viewer.dims.order, top, bottom)  # head up
    viewer.dims.transpose()  # superior sideways: turned upright again
    assert viewer.dims.order[-2] == 0
    viewer.dims.roll()  # back to axial: anterior up
    assert viewer.dims.order[-2:] == (1, 2)
    assert str(getattr(viewer.scene.camera.orientation[1], "value", "")) == "down"


def test_labels_hide_in_3d_and_surfaces_show_as_contours_in_2d(make_napari_viewer, organ_meshes):
    from napari_plugin._layers import show_reconstruction
    from napari_plugin._view import CONTOURS_NAME

    labels, meshes = organ_meshes
    viewer = make_napari_viewer(show=True)
    [layer, *surfaces] = show_reconstruction(viewer, labels, meshes, name="organs")
    assert layer.visible and not any(s.visible for s in surfaces)  # 2D: labels, contours
    contours = viewer.layers[CONTOURS_NAME]
    assert contours.visible
    viewer.dims.ndisplay = 3
    assert not layer.visible and all(s.visible for s in surfaces) and not contours.visible
    viewer.layers["spleen"].visible = False  # the user's choice in 3D is kept
    viewer.dims.ndisplay = 2
    assert layer.visible and not any(s.visible for s in surfaces) and contours.visible
    viewer.dims.ndisplay = 3
    assert not viewer.layers["spleen"].visible and viewer.layers["liver"].visible
    viewer.dims.ndisplay = 2

    # on an axial slice through the liver, its contour runs along the mask's edge
    truth = np.asarray(labels.array)  # (i, j, k)
    k = int(np.flatnonzero((truth == LIVER).any(axis=(0, 1))).mean())
    world_z = labels.voxel_to_world([[0, 0, k]])[0][2]
    viewer.dims.set_point(0, world_z)
    liver_rgba = np.array([*organ_colour("liver"), 1.0])
    colours = np.asarray(contours.edge_color)
    vectors = np.asarray(contours.data)
    on_liver = np.all(np.isclose(colours, liver_rgba, atol=1e-3), axis=1)
    assert on_liver.sum() > 20
    points = vectors[on_liver, 0]  # napari world (z, y, x)
    np.testing.assert_allclose(points[:, 0], viewer.dims.point[0])
    inv = np.linalg.inv(labels.affine)
    ijk = (inv[:3, :3] @ points[:, ::-1].T).T + inv[:3, 3]
    mask = truth[:, :, k] == LIVER
    near = []
    for i, j in ijk[:, :2]:
        window = mask[max(0, int(i) - 1): int(i) + 2, max(0, int(j) - 1): int(j) + 2]
        near.append(window.any() and not window.all())
    assert np.mean(near) > 0.95  # on the liver's edge, within a voxel
    # and no contour of an organ hidden in 3D
    spleen_rgba = np.array([*organ_colour("spleen"), 1.0])
    assert not np.all(np.isclose(colours, spleen_rgba, atol=1e-3), axis=1).any()


def test_totalsegmentator_file_names_and_vocabulary_colours(make_napari_viewer, totalseg_dir, tmp_path):
    import shutil

    viewer = make_napari_viewer()
    # no sidecar: the names come from the file's own table (its NIfTI header extension)
    shutil.copy(totalseg_dir / "example_seg.nii.gz", tmp_path / "s0011.nii.gz")
    [seg] = viewer.open(str(tmp_path / "s0011.nii.gz"), plugin="medrecon")
    names = dict(zip(seg.features["index"], seg.features["name"], strict=True))
    assert names[LIVER] == "liver" and names[52] == "aorta"
    np.testing.assert_allclose(seg.get_color(LIVER)[:3], organ_colour("liver"), atol=1e-6)
    np.testing.assert_allclose(seg.get_color(52)[:3], organ_colour("aorta"), atol=1e-6)
    # a label map without any names still gets the vocabulary's colours, by id
    array = np.zeros((6, 6, 6), np.uint8)
    array[1:3, 1:3, 1:3] = 7
    array[3:5, 3:5, 3:5] = 9
    nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "plain_labels.nii.gz")
    [plain] = viewer.open(str(tmp_path / "plain_labels.nii.gz"), plugin="medrecon")
    for label in (7, 9):
        np.testing.assert_allclose(plain.get_color(label)[:3], organ_colour(None, label), atol=1e-6)


def test_results_are_added_between_qt_events(qtbot):
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QWidget

    from napari_plugin._qt._runner import STEP_BUDGET_MS, JobRunner

    parent = QWidget()
    qtbot.addWidget(parent)
    runner = JobRunner("Run", parent)
    ticks, seen = [], []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(0)

    def steps(_result):
        import time

        for n in range(5):
            time.sleep(1.5 * STEP_BUDGET_MS / 1000)  # each step over the budget
            seen.append(len(ticks))
            yield n

    with qtbot.waitSignal(runner.job_finished, timeout=30_000) as blocker:
        runner.start(lambda progress: 42, steps)
    timer.stop()
    assert blocker.args == ["done"] and runner.status.text() == "done"
    assert len(seen) == 5 and all(b > a for a, b in zip(seen, seen[1:], strict=False))  # events between steps


def test_display_meshes_are_lighter_and_exports_keep_every_face(make_napari_viewer, tmp_path):
    from medrecon.mesh import OrganMesh
    from medrecon.triangles import TriangleMesh
    from napari_plugin._jobs import display_meshes
    from napari_plugin._layers import organ_surface_data, show_reconstruction

    ball = trimesh.creation.icosphere(subdivisions=4, radius=30.0)  # 5120 faces
    tri = TriangleMesh.from_trimesh(ball)
    organs = [OrganMesh(label=5, name="liver", mesh=tri, raw=tri, report={})]
    [lighter] = display_meshes(organs, max_faces=1000)
    assert lighter is not None and 900 <= len(lighter.faces) <= 1100
    viewer = make_napari_viewer()
    [_none, layer] = show_reconstruction(viewer, None, organs, name="x",
                                         surfaces=[organ_surface_data(organs[0], lighter)])
    assert len(layer.data[1]) == len(lighter.faces)
    [path] = layer.save(str(tmp_path / "liver.stl"), plugin="medrecon")
    written = trimesh.load(path)
    assert len(written.faces) == len(ball.faces)
    np.testing.assert_allclose(np.sort(written.vertices, axis=0), np.sort(ball.vertices, axis=0), atol=1e-4)
    assert written.is_watertight and written.volume == pytest.approx(ball.volume, rel=1e-6)
