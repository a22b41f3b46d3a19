"""The Segment widget on the real TotalSegmentator CT and a real MR, headless under Xvfb.

Ground truth: TotalSegmentator's own labels and plain numpy/scipy on the arrays
napari shows. Every edit is undone through the Labels layer's own history.
"""

import json
import os
import shutil
from types import SimpleNamespace

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("qtpy.QtCore")
napari = pytest.importorskip("napari")
nib = pytest.importorskip("nibabel")
ndimage = pytest.importorskip("scipy.ndimage")

from napari_plugin._qt._segment_widget import TOOLS, SegmentWidget  # noqa: E402

pytestmark = pytest.mark.napari

LIVER, SPLEEN = 5, 1
JOB_TIMEOUT_MS = 120_000


def _apply(qtbot, widget, tool: str) -> str:
    """Open ``tool``'s tab, press Apply and wait for the job; return its outcome."""
    widget.tabs.setCurrentIndex(TOOLS.index(tool))
    return _wait(qtbot, widget, widget.apply)


def _wait(qtbot, widget, start) -> str:
    with qtbot.waitSignal(widget.runner.job_finished, timeout=JOB_TIMEOUT_MS) as blocker:
        assert start() is not None, widget.runner.status.text()
    return blocker.args[0]


def _dice(a, b) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture
def ct_and_seg(make_napari_viewer, totalseg_dir, tmp_path):
    """The 3 mm CT and TotalSegmentator's labels of it, opened through the reader, and the widget."""
    viewer = make_napari_viewer(show=True)
    [ct] = viewer.open(str(totalseg_dir / "example_ct_sm.nii.gz"), plugin="medrecon")
    seg_path = tmp_path / "example_seg.nii.gz"
    shutil.copy(totalseg_dir / "example_seg.nii.gz", seg_path)
    shutil.copy(totalseg_dir / "class_map_total.json", tmp_path / "example_seg.json")
    [seg] = viewer.open(str(seg_path), plugin="medrecon")
    return viewer, ct, seg


def _widget(qtbot, viewer, image, labels) -> SegmentWidget:
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    widget.image_combo.setCurrentText(image.name)
    widget.labels_combo.setCurrentText(labels.name)
    return widget


def test_threshold_preview_apply_inside_a_label_and_undo(qtbot, ct_and_seg):
    viewer, ct, seg = ct_and_seg
    widget = _widget(qtbot, viewer, ct, seg)
    hu = np.asarray(ct.data)
    names = [widget.preset_combo.itemText(i) for i in range(widget.preset_combo.count())]
    assert any(n.startswith("bone (") for n in names)  # a CT: the HU presets are offered

    # the preview follows the slider on the displayed axial slice, and only that slice
    assert viewer.dims.ndisplay == 2 and tuple(viewer.dims.not_displayed) == (0,)
    viewer.dims.set_current_step(0, 12)
    widget.range_slider.setValue((-100.0, 200.0))
    preview = viewer.layers["threshold preview"]
    np.testing.assert_array_equal(preview.data[12] == 1, (hu[12] >= -100) & (hu[12] <= 200))
    widget.range_slider.setValue((300.0, 2000.0))
    np.testing.assert_array_equal(preview.data[12] == 1, (hu[12] >= 300) & (hu[12] <= 2000))
    viewer.dims.set_current_step(0, 20)
    np.testing.assert_array_equal(preview.data[20] == 1, (hu[20] >= 300) & (hu[20] <= 2000))
    assert not np.asarray(preview.data)[:20].any()  # the slice shown before is cleared
    assert widget.labels_combo.currentText() == seg.name  # the preview is not offered as labels
    widget.preset_combo.setCurrentIndex(names.index(next(n for n in names if n.startswith("bone ("))))
    widget.preset_combo.activated.emit(widget.preset_combo.currentIndex())
    assert widget.range_slider.value()[0] == 300.0  # the bone preset's low end

    # apply inside the liver: a new label where the liver holds 60..200 HU, nothing else changes
    before = np.array(seg.data)
    widget.range_slider.setValue((60.0, 200.0))
    widget.label_spin.setValue(250)
    widget.inside_combo.setCurrentIndex(widget.inside_combo.findData(LIVER))
    assert "liver" in widget.inside_combo.currentText()
    assert _apply(qtbot, widget, "Threshold") == "done"
    expected = np.where((before == LIVER) & (hu >= 60) & (hu <= 200), 250, before)
    np.testing.assert_array_equal(np.asarray(seg.data), expected)
    assert 1000 < (expected == 250).sum() < (before == LIVER).sum()
    assert "voxels changed" in widget.runner.status.text()
    seg.undo()
    np.testing.assert_array_equal(np.asarray(seg.data), before)

    # everywhere, on a new empty layer on the CT's grid
    widget.new_button.click()
    fresh = viewer.layers[widget.labels_combo.currentText()]
    assert fresh is not seg and fresh.data.shape == ct.data.shape
    widget.label_spin.setValue(7)
    widget.range_slider.setValue((-100.0, 200.0))
    assert _apply(qtbot, widget, "Threshold") == "done"
    np.testing.assert_array_equal(np.asarray(fresh.data), np.where((hu >= -100) & (hu <= 200), 7, 0))
    fresh.undo()
    assert not np.asarray(fresh.data).any()

    widget.tabs.setCurrentIndex(TOOLS.index("Margin"))  # leaving the tab takes the preview away
    assert "threshold preview" not in viewer.layers


def test_grow_from_seeds_reaches_totalsegmentator_liver(qtbot, make_napari_viewer, totalseg_dir):
    from skimage.morphology import skeletonize

    from medrecon.io import load, load_labels

    viewer = make_napari_viewer(show=True)
    [ct] = viewer.open(str(totalseg_dir / "example_ct_dicom"), plugin="medrecon")
    # TotalSegmentator's liver on the CT's voxel grid, in layer order (k, j, i)
    seg = load_labels(totalseg_dir / "example_seg_dicom.nii.gz").resample_like(load(totalseg_dir / "example_ct_dicom"))
    truth = np.asarray(seg.array).transpose(2, 1, 0) == LIVER
    hu = np.asarray(ct.data)
    assert truth.shape == hu.shape == (20, 512, 512)
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    widget.image_combo.setCurrentText(ct.name)
    widget.new_button.click()
    strokes = viewer.layers[widget.labels_combo.currentText()]
    # strokes as a user draws them, on 3 axial slices: a line along the middle of the liver and
    # lines through the rest of the body, both 5 mm (5 voxels) away from the liver's edge
    painted = np.zeros(truth.shape, np.uint16)
    for k in (3, 10, 16):
        liver = ndimage.binary_erosion(truth[k], iterations=5)
        body = ndimage.binary_fill_holes(hu[k] > -300)
        other = ndimage.binary_erosion(body & ~ndimage.binary_dilation(truth[k], iterations=5), iterations=5)
        painted[k][skeletonize(liver)] = LIVER
        painted[k][skeletonize(other)] = 99
    strokes.data_setitem(np.nonzero(painted), painted[np.nonzero(painted)])
    widget.background_spin.setValue(99)
    assert _apply(qtbot, widget, "Grow from seeds") == "done"
    grown = np.asarray(strokes.data)
    assert set(np.unique(grown)) == {0, LIVER}  # the background strokes' id is gone
    dice = _dice(grown == LIVER, truth)
    assert dice >= 0.9, dice
    strokes.undo()
    np.testing.assert_array_equal(np.asarray(strokes.data), painted)


def test_click_keeps_a_piece_and_small_pieces_are_removed(qtbot, ct_and_seg):
    viewer, ct, seg = ct_and_seg
    original = np.array(seg.data)
    assert ndimage.label(original == LIVER)[1] == 1
    # the spleen becomes a second piece of "liver": clicking it keeps it and drops the liver
    two = np.where(original == SPLEEN, LIVER, original)
    seg.data = two.copy()  # the layer edits its array in place
    widget = _widget(qtbot, viewer, ct, seg)
    widget.tabs.setCurrentIndex(TOOLS.index("Islands"))
    widget.keep_check.setChecked(True)
    kji = np.argwhere(original == SPLEEN).mean(axis=0).round().astype(int)
    assert original[tuple(kji)] == SPLEEN
    click = SimpleNamespace(type="mouse_press", position=tuple(seg.data_to_world(kji)))
    with qtbot.waitSignal(widget.runner.job_finished, timeout=JOB_TIMEOUT_MS) as blocker:
        for callback in list(seg.mouse_drag_callbacks):
            callback(seg, click)
    assert blocker.args == ["done"]
    kept = np.asarray(seg.data)
    np.testing.assert_array_equal(kept == LIVER, original == SPLEEN)
    others = (original != LIVER) & (original != SPLEEN)
    np.testing.assert_array_equal(kept[others], original[others])
    seg.undo()
    np.testing.assert_array_equal(np.asarray(seg.data), two)
    widget.keep_check.setChecked(False)
    assert widget._on_click not in seg.mouse_drag_callbacks

    # two 2x2x2-voxel (216 mm^3) bits of liver far from everything go under 500 mm^3; the liver stays
    free = ndimage.binary_erosion(original == 0, iterations=3)
    spots = np.argwhere(free)[[0, -1]]
    bits = np.array(original)
    for k, j, i in spots:
        bits[k:k + 2, j:j + 2, i:i + 2] = LIVER
    seg.data = bits.copy()
    widget.label_spin.setValue(LIVER)
    widget.min_spin.setValue(500.0)
    assert _apply(qtbot, widget, "Islands") == "done"
    np.testing.assert_array_equal(np.asarray(seg.data), original)
    seg.undo()
    np.testing.assert_array_equal(np.asarray(seg.data), bits)


def test_margin_and_smooth_in_mm_then_mesh(qtbot, make_napari_viewer, totalseg_dir, tmp_path):
    from napari_plugin._qt._mesh_widget import MeshExportWidget

    viewer = make_napari_viewer(show=True)
    path = tmp_path / "seg.nii.gz"  # 0.98 x 0.98 x 2 mm voxels: millimetres are not voxels
    shutil.copy(totalseg_dir / "example_seg_dicom.nii.gz", path)
    (tmp_path / "seg.json").write_text(json.dumps({"5": "liver", "1": "spleen"}))
    [seg] = viewer.open(str(path), plugin="medrecon")
    spacing_kji = nib.load(path).header.get_zooms()[::-1]  # layer data are (k, j, i)
    before = np.array(seg.data)
    liver = before == LIVER
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    widget.labels_combo.setCurrentText(seg.name)
    widget.label_spin.setValue(LIVER)
    widget.margin_spin.setValue(4.0)
    assert _apply(qtbot, widget, "Margin") == "done"
    after = np.asarray(seg.data)
    distance = ndimage.distance_transform_edt(~liver, sampling=spacing_kji)
    added = (after == LIVER) & ~liver
    assert distance[added].max() <= 4.0 + 1e-6
    assert distance[added].max() >= 3.0  # grown by 4 mm, measured, not by 4 voxels (7.8 mm in-plane)
    reachable = (distance <= 4.0) & (before == 0)
    assert added.sum() >= 0.98 * reachable.sum()
    np.testing.assert_array_equal(after[before != 0], before[before != 0])  # no other label taken

    # the edited layer goes straight to Mesh and export
    mesh_widget = MeshExportWidget(viewer)
    qtbot.addWidget(mesh_widget)
    mesh_widget.labels_combo.setCurrentText(seg.name)
    mesh_widget.organs_edit.setText("liver")
    mesh_widget.live_check.setChecked(False)
    assert _wait(qtbot, mesh_widget, mesh_widget.build) == "done"
    [organ] = mesh_widget.organ_meshes
    voxel_ml = (after == LIVER).sum() * np.prod(spacing_kji) / 1000
    assert organ.trimesh().volume / 1000 == pytest.approx(voxel_ml, rel=0.05)
    seg.undo()
    np.testing.assert_array_equal(np.asarray(seg.data), before)

    # smoothing a liver with a ragged edge brings it closer to the smooth original
    rng = np.random.default_rng(0)
    edge = liver & ~ndimage.binary_erosion(liver)
    ragged = np.where(edge & (rng.random(liver.shape) < 0.5), 0, before)
    seg.data = ragged.copy()
    widget.label_spin.setValue(LIVER)
    widget.smooth_spin.setValue(2.0)
    assert _apply(qtbot, widget, "Smooth") == "done"
    smoothed = np.asarray(seg.data)
    assert _dice(smoothed == LIVER, liver) > _dice(ragged == LIVER, liver)
    assert np.all(smoothed[(ragged != 0) & (ragged != LIVER)] == ragged[(ragged != 0) & (ragged != LIVER)])
    seg.undo()
    np.testing.assert_array_equal(np.asarray(seg.data), ragged)


def test_fill_between_slices_stops_at_drawn_and_names_a_plane_mismatch(qtbot, ct_and_seg):
    viewer, ct, seg = ct_and_seg
    full = np.asarray(seg.data) == LIVER
    drawn = np.arange(6, 25, 3)  # axial slices (layer axis 0) 6, 9, ..., 24 of 30
    sparse = np.zeros(full.shape, np.uint8)
    sparse[drawn] = np.where(full[drawn], LIVER, 0)
    layer = viewer.add_labels(sparse.copy(), name="drawn", affine=seg.affine,
                              metadata={"medrecon": {"names": {LIVER: "liver"}}})
    widget = _widget(qtbot, viewer, ct, layer)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("sdf"))
    assert widget.plane_combo.currentText() == "Axial"  # from the viewer's view
    assert widget.stop_check.isChecked()
    assert _apply(qtbot, widget, "Fill between slices") == "done"
    done = np.asarray(layer.data) == LIVER
    slices = np.flatnonzero(done.any(axis=(1, 2)))
    assert slices.min() == drawn.min() and slices.max() == drawn.max()
    inside = slice(drawn.min(), drawn.max() + 1)
    assert _dice(done[inside], full[inside]) > 0.85
    layer.undo()
    np.testing.assert_array_equal(np.asarray(layer.data), sparse)

    # drawn on coronal slices but filled as axial: the status line says so, nothing changes
    coronal = np.zeros(full.shape, np.uint8)
    coronal[:, 30:70:4] = np.where(full[:, 30:70:4], LIVER, 0)
    layer.data = coronal.copy()
    assert _apply(qtbot, widget, "Fill between slices") == "failed"
    assert "coronal" in widget.runner.status.text().lower(), widget.runner.status.text()
    np.testing.assert_array_equal(np.asarray(layer.data), coronal)


def test_mr_threshold_without_ct_presets(qtbot, make_napari_viewer, data_dir):
    viewer = make_napari_viewer(show=True)
    [mr] = viewer.open(str(data_dir / "nibabel_mr" / "anatomical.nii"), plugin="medrecon")
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    widget.image_combo.setCurrentText(mr.name)
    assert [widget.preset_combo.itemText(i) for i in range(widget.preset_combo.count())] == ["(custom range)"]
    values = np.asarray(mr.data)
    assert widget.range_slider.minimum() == values.min() and widget.range_slider.maximum() == values.max()
    widget.new_button.click()
    labels = viewer.layers[widget.labels_combo.currentText()]
    widget.label_spin.setValue(3)
    widget.range_slider.setValue((8000.0, 20000.0))
    assert _apply(qtbot, widget, "Threshold") == "done"
    expected = (values >= 8000) & (values <= 20000)
    assert 0.01 < expected.mean() < 0.9
    np.testing.assert_array_equal(np.asarray(labels.data) == 3, expected)
    labels.undo()
    assert not np.asarray(labels.data).any()

    fields = [widget.image_combo, widget.labels_combo, widget.new_button, widget.label_spin,
              widget.all_check, widget.tabs, widget.preset_combo, widget.range_slider,
              widget.inside_combo, widget.preview_check, widget.keep_check, widget.min_spin,
              widget.background_spin, widget.box_spin, widget.plane_combo, widget.method_combo,
              widget.stop_check, widget.smooth_spin, widget.margin_spin,
              widget.runner.run_button, widget.runner.cancel_button]
    assert [f for f in fields if not f.toolTip()] == []
    for spin in (widget.min_spin, widget.box_spin, widget.smooth_spin, widget.margin_spin):
        assert "mm" in spin.suffix()  # sizes in mm, never voxels
