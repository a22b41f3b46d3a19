"""Make the README's screenshots: the medrecon napari plugin on real CTs.

* ``napari_ct_3d.png``: the real abdominal CT ``tests/data/totalseg/example_ct_sm.nii.gz``
  opened with the medrecon reader, meshes of TotalSegmentator's labels of it
  (``example_seg.nii.gz``) built by the *Reconstruct organs* widget, shown in 3D
  over an axial CT plane (anterior view from a little above, head up; the scan
  covers 30 slices of the upper abdomen), with the *Mesh and export*
  widget's print-readiness table;
* ``napari_ct_2d.png``: the same study in 2D, an axial slice with the labels and
  the meshes' contours on it;
* ``napari_head_bone.png``: the real head CT ``tests/data/dcm_qa_ct_ge/GE`` (DICOM)
  with the ``bone`` HU preset's mesh (anterior view).

Each is the whole window, scaled to ``--width`` pixels and stored as a 256-colour
PNG so that it stays small. Needs a display (a viewer that is not shown
screenshots black); headless, run it under Xvfb::

    OMP_NUM_THREADS=1 xvfb-run -a -s "-screen 0 1920x1080x24" python scripts/readme_screenshots.py
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOTALSEG = ROOT / "tests" / "data" / "totalseg"
HEAD = ROOT / "tests" / "data" / "dcm_qa_ct_ge" / "GE"


def wait(ms: int) -> None:
    """Run the Qt event loop for ``ms`` milliseconds (the window settles and draws)."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def run(widget, start) -> None:
    """Start a widget's job with ``start()`` and wait until its results are on screen."""
    from qtpy.QtCore import QEventLoop

    loop = QEventLoop()
    outcome: list[str] = []

    def finished(result: str) -> None:
        outcome.append(result)
        loop.quit()

    widget.runner.job_finished.connect(finished)
    if start() is None:
        raise SystemExit(f"the job did not start: {widget.runner.status.text()}")
    loop.exec()
    widget.runner.job_finished.disconnect(finished)
    if outcome != ["done"]:
        raise SystemExit(f"job {outcome}: {widget.runner.status.text()}")


def save(viewer, path: Path, width: int) -> None:
    """Screenshot the whole window into ``path``, ``width`` pixels wide, 256 colours."""
    from PIL import Image

    from medrecon.atomic import atomic_path

    wait(800)
    shot = Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).convert("RGB")
    height = round(shot.height * width / shot.width)
    small = shot.resize((width, height), Image.Resampling.LANCZOS).quantize(256, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        small.save(tmp, format="PNG", optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB, {width}x{height})")


def frame(viewer, layers, zoom: float, *, from_above: float = 0.0) -> None:
    """Fit the scene, face the patient (anterior view, head up), centre on ``layers``, zoom by ``zoom``.

    ``from_above`` tilts the view down onto the patient (0: straight from the
    front; 0.6: about 30 degrees from above), head still up.
    """
    import numpy as np

    from napari_plugin._view import attach, camera

    viewer.reset_view()
    attach(viewer).face_patient()
    if from_above:
        # napari world (z, y, x) = (superior, posterior, left): look backwards and down
        camera(viewer).set_view_direction((-from_above, 1.0, 0.0), up_direction=(1.0, 0.0, 0.0))
    lo = np.min([lyr.extent.world[0] for lyr in layers], axis=0)
    hi = np.max([lyr.extent.world[1] for lyr in layers], axis=0)
    cam = camera(viewer)
    cam.center = tuple((lo + hi) / 2)
    cam.zoom *= zoom


def abdomen(out: Path, width: int, size: tuple[int, int]) -> None:
    """Screenshot the real CT with TotalSegmentator's labels and their meshes, in 3D and in 2D."""
    import napari
    import numpy as np

    viewer = napari.Viewer(title="medrecon: real CT, TotalSegmentator labels", show=True)
    viewer.window._qt_window.resize(*size)
    [ct] = viewer.open(str(TOTALSEG / "example_ct_sm.nii.gz"), plugin="medrecon")
    [seg] = viewer.open(str(TOTALSEG / "example_seg.nii.gz"), plugin="medrecon")
    _, recon = viewer.window.add_plugin_dock_widget("medrecon", "Reconstruct organs")
    _, mesh = viewer.window.add_plugin_dock_widget("medrecon", "Mesh and export", tabify=True)
    mesh.live_check.setChecked(False)
    recon.set_method("labels")
    recon.labels_combo.setCurrentText(seg.name)
    recon.image_combo.setCurrentText(ct.name)
    run(recon, recon.run)
    # the Mesh and export table of the meshes just made (it reads them from the Labels layer)
    mesh.labels_combo.setCurrentText(seg.name)
    mesh._labels_changed()
    mesh.parentWidget().raise_()
    surfaces = [lyr for lyr in viewer.layers if isinstance(lyr, napari.layers.Surface)]
    frame(viewer, surfaces, 1.15, from_above=0.6)
    save(viewer, out / "napari_ct_3d.png", width)

    # 2D: the axial slice through the most of liver, kidneys and spleen, labels and contours on the CT
    viewer.dims.ndisplay = 2
    names = {v: k for k, v in seg.metadata["medrecon"]["names"].items()}
    wanted = [names[n] for n in ("liver", "spleen", "kidney_left", "kidney_right") if n in names]
    per_slice = np.isin(np.asarray(seg.data), wanted).sum(axis=(1, 2))
    k = int(np.argmax(per_slice))
    world = seg.data_to_world((k, seg.data.shape[1] / 2, seg.data.shape[2] / 2))
    viewer.dims.set_point(0, float(world[0]))
    viewer.reset_view()
    save(viewer, out / "napari_ct_2d.png", width)
    viewer.close()


def head(out: Path, width: int, size: tuple[int, int]) -> None:
    """Screenshot the real head CT (DICOM) with the bone preset's mesh."""
    import napari

    viewer = napari.Viewer(title="medrecon: real head CT, bone preset", show=True)
    viewer.window._qt_window.resize(*size)
    layers = viewer.open(str(HEAD), plugin="medrecon")
    ct = next(lyr for lyr in layers if isinstance(lyr, napari.layers.Image))
    _, recon = viewer.window.add_plugin_dock_widget("medrecon", "Reconstruct organs")
    recon.set_method("preset")
    recon.image_combo.setCurrentText(ct.name)
    recon.preset_combo.setCurrentText("bone")
    run(recon, recon.run)
    ct.visible = False  # the skull alone
    surfaces = [lyr for lyr in viewer.layers if isinstance(lyr, napari.layers.Surface)]
    frame(viewer, surfaces, 1.1)
    save(viewer, out / "napari_head_bone.png", width)
    viewer.close()


def main(argv: list[str] | None = None) -> int:
    """Write the screenshots; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "images", help="folder of the PNGs")
    parser.add_argument("--width", type=int, default=1200, help="width of the saved PNGs in pixels")
    parser.add_argument("--size", default="1900x1000", help="window size WxH in pixels")
    parser.add_argument("--only", choices=("abdomen", "head"), help="make one set only")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    if args.only in (None, "abdomen"):
        abdomen(args.out, args.width, size)
    if args.only in (None, "head"):
        head(args.out, args.width, size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
