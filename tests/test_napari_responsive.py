"""How results go into napari without freezing it: hidden until all are in, no 3D copy of what 3D hides.

What is checked is the order of things (which layer is visible, sliced, active
or repainted when), never a duration: timings are in ``bench/bench_napari_ui.py``.
"""

import gc
import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

import pytest  # noqa: E402

napari = pytest.importorskip("napari")
trimesh = pytest.importorskip("trimesh")

from medrecon.mesh import OrganMesh  # noqa: E402
from medrecon.triangles import TriangleMesh  # noqa: E402

pytestmark = pytest.mark.napari


def _organs(count: int) -> list[OrganMesh]:
    organs = []
    for i in range(count):
        ball = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
        ball.apply_translation([30.0 * i, 0.0, 0.0])
        mesh = TriangleMesh.from_trimesh(ball)
        organs.append(OrganMesh(label=i + 1, name=f"organ_{i + 1}", mesh=mesh, raw=mesh, report={}))
    return organs


def test_surfaces_go_in_hidden_and_show_once_all_are_in(make_napari_viewer, totalseg_dir):
    from napari.layers import Surface

    from medrecon.io import load_labels
    from napari_plugin._layers import reconstruction_steps

    viewer = make_napari_viewer()
    [ct] = viewer.open(str(totalseg_dir / "example_ct_sm.nii.gz"), plugin="medrecon")
    viewer.dims.ndisplay = 3
    viewer.layers.selection.active = ct
    labels = load_labels(totalseg_dir / "example_seg.nii.gz")
    organs = _organs(3)
    steps = reconstruction_steps(viewer, labels, organs, name="organs")
    layer = next(steps)
    assert layer.name == "organs" and not layer.visible  # Labels hide in 3D
    added = [next(steps) for _ in organs]
    assert [s.name for s in added] == [o.name for o in organs]
    assert all(isinstance(s, Surface) and not s.visible for s in added)
    assert viewer.layers.selection.active is ct  # adding made no layer active
    shown = []
    for _ in organs:
        assert next(steps) is None
        shown.append(sum(s.visible for s in added))
    assert shown == [1, 2, 3]
    assert list(steps) == []
    assert viewer.layers.selection.active is layer  # then the new segmentation, ready to edit
    assert all(s.metadata["medrecon"]["visible_in"] == {2: False, 3: True} for s in added)


def test_a_view_switch_while_surfaces_are_held_keeps_their_views(make_napari_viewer):
    from napari_plugin._layers import show_reconstruction
    from napari_plugin._view import hold, release

    viewer = make_napari_viewer()
    [_none, surface] = show_reconstruction(viewer, None, _organs(1), name="x")
    viewer.dims.ndisplay = 3
    assert surface.visible
    hold(surface)
    viewer.dims.ndisplay = 2
    viewer.dims.ndisplay = 3
    assert not surface.visible  # held through both switches
    release(surface, viewer.dims.ndisplay)
    assert surface.visible and surface.metadata["medrecon"]["visible_in"] == {2: False, 3: True}
    viewer.dims.ndisplay = 2
    assert not surface.visible


def test_the_switch_to_3d_hides_what_3d_hides_before_napari_slices_it(make_napari_viewer, totalseg_dir):
    from napari_plugin._view import attach, manage, switch_to_3d

    viewer = make_napari_viewer()
    [ct] = viewer.open(str(totalseg_dir / "example_ct_sm.nii.gz"), plugin="medrecon")
    [seg] = viewer.open(str(totalseg_dir / "example_seg.nii.gz"), plugin="medrecon")
    attach(viewer)
    manage(ct, "image", 2)
    manage(seg, "labels", 2)
    assert ct._slice.image.raw.ndim == 2 and seg._slice.image.raw.ndim == 2
    assert list(switch_to_3d(viewer)) == [None, None]
    assert viewer.dims.ndisplay == 3 and not ct.visible and not seg.visible
    # no 3D slice of their data: a 512^3 CT would have become a 3D texture, only to be hidden
    assert ct._slice.empty and seg._slice.empty
    assert viewer.scene.overlays.axes.visible  # the orientation arrows, in the second step
    viewer.dims.ndisplay = 2
    assert ct.visible and seg.visible  # their 2D visibility was kept
    # napari's own switch slices every visible layer before a plugin can hide it
    viewer.dims.ndisplay = 3
    assert not ct.visible and ct._slice.image.raw.shape == ct.data.shape


def test_steps_run_with_the_canvas_repaint_held_and_the_collector_frozen(qtbot, make_napari_viewer):
    from napari_plugin._qt._runner import STEP_BUDGET_MS, JobRunner, canvas_widget

    viewer = make_napari_viewer(show=True)
    canvas = canvas_widget(viewer)
    assert canvas is not None and canvas.updatesEnabled()
    runner = JobRunner("Run", viewer.window._qt_window)
    runner.repaint_apart(canvas)
    seen = []

    def steps(_result):
        for n in range(3):
            time.sleep(1.5 * STEP_BUDGET_MS / 1000)  # one step per batch
            junk = [[n] for _ in range(1000)]  # objects made by a step
            seen.append((canvas.updatesEnabled(), gc.get_freeze_count(), len(junk)))
            yield n

    with qtbot.waitSignal(runner.job_finished, timeout=30_000) as blocker:
        runner.start(lambda progress: 42, steps)
    assert blocker.args == ["done"]
    assert [enabled for enabled, _n, _k in seen] == [False, False, False]  # no repaint inside a batch
    frozen = [n for _e, n, _k in seen]
    assert frozen[0] > 0 and frozen[1] > frozen[0]  # each batch's objects frozen after it
    assert gc.get_freeze_count() == 0  # given back to the collector at the end
    qtbot.waitUntil(canvas.updatesEnabled, timeout=5_000)  # repainting again once the job is done


def test_surfaces_added_before_a_cancel_are_shown_not_left_hidden(qtbot, make_napari_viewer):
    from napari_plugin._layers import reconstruction_steps
    from napari_plugin._qt._runner import JobRunner

    viewer = make_napari_viewer()
    viewer.dims.ndisplay = 3
    organs = _organs(4)
    runner = JobRunner("Run", viewer.window._qt_window)
    added = []

    def steps(_result):
        for step in reconstruction_steps(viewer, None, organs, name="x"):
            if step is not None:
                added.append(step)
            if len(added) == 2:
                runner.cancel()  # the user presses Cancel while the results go in
            yield step

    with qtbot.waitSignal(runner.job_finished, timeout=30_000) as blocker:
        runner.start(lambda progress: 42, steps)
    assert blocker.args == ["cancelled"]
    assert len(added) == 2 and all(s in viewer.layers for s in added)
    assert all(s.visible and not s.metadata["medrecon"].get("held") for s in added)


def test_a_plugin_widgets_proxied_viewer_gets_no_private_access_warnings(make_napari_viewer, totalseg_dir):
    import warnings

    from napari.utils._proxies import PublicOnlyProxy

    from medrecon.io import load_labels
    from napari_plugin._layers import reconstruction_steps
    from napari_plugin._qt._runner import canvas_widget
    from napari_plugin._view import switch_to_3d

    real = make_napari_viewer(show=True)
    viewer = PublicOnlyProxy(real)  # what napari hands a plugin's dock widget
    labels = load_labels(totalseg_dir / "example_seg.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # napari's "Private attribute access" warning
        assert canvas_widget(viewer) is not None
        list(switch_to_3d(viewer))
        steps = list(reconstruction_steps(viewer, labels, _organs(2), name="organs"))
    assert real.dims.ndisplay == 3 and len(steps) == 1 + 2 + 2
    assert real.layers.selection.active is real.layers["organs"]
