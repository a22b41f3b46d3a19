"""Make ``docs/images/napari.png``: the medrecon napari plugin in use.

Opens the bundled abdominal phantom (File > Open Sample > medrecon), builds
organ meshes with the *Mesh and export* widget, shows them in 3D over an axial
CT plane with the print-readiness table filled in, and saves a screenshot of
the whole window. Needs a display; headless, run it under Xvfb::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/napari_screenshot.py
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_ORGANS = "liver, spleen, kidney_left, kidney_right, stomach, pancreas, aorta, gallbladder"


def main(argv: list[str] | None = None) -> int:
    """Write the screenshot; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/images/napari.png"))
    parser.add_argument("--organs", default=DEFAULT_ORGANS, help="organs to mesh (names or ids)")
    parser.add_argument("--size", default="1500x900", help="window size WxH in pixels")
    parser.add_argument(
        "--view", default="-0.7,1,0.3",
        help="camera view direction in napari world (z, y, x); default: from the front, a little from above",
    )
    parser.add_argument("--zoom", type=float, default=1.15, help="zoom relative to the whole study")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import napari
    import numpy as np
    from qtpy.QtCore import QEventLoop, QTimer

    from medrecon.atomic import atomic_path
    from napari_plugin._layers import show_as_plane

    viewer = napari.Viewer(title="medrecon", show=True)
    layers = viewer.open_sample("medrecon", "abdominal_phantom")
    image = next(lyr for lyr in layers if isinstance(lyr, napari.layers.Image))
    labels = next(lyr for lyr in layers if isinstance(lyr, napari.layers.Labels))
    viewer.window.add_plugin_dock_widget("medrecon", "Reconstruct organs")
    _, widget = viewer.window.add_plugin_dock_widget("medrecon", "Mesh and export", tabify=True)
    widget.live_check.setChecked(False)
    widget.labels_combo.setCurrentText(labels.name)
    widget.organs_edit.setText(args.organs)

    loop = QEventLoop()
    outcome: list[str] = []
    widget.runner.job_finished.connect(lambda result: (outcome.append(result), loop.quit()))
    if widget.build() is None:
        return 1
    loop.exec()
    if outcome != ["done"]:
        print(f"mesh build {outcome[0] if outcome else 'did not finish'}", file=sys.stderr)
        return 1

    labels.visible = False
    show_as_plane(image)
    viewer.dims.ndisplay = 3
    viewer.reset_view()  # resets the camera angles too, so orient afterwards
    surfaces = [lyr for lyr in viewer.layers if isinstance(lyr, napari.layers.Surface)]
    lo = np.min([lyr.extent.world[0] for lyr in surfaces], axis=0)
    hi = np.max([lyr.extent.world[1] for lyr in surfaces], axis=0)
    viewer.camera.center = tuple((lo + hi) / 2)  # frame the organs, not the whole CT
    viewer.camera.zoom *= args.zoom
    view = tuple(float(a) for a in args.view.split(","))
    viewer.camera.set_view_direction(view, up_direction=(1.0, 0.0, 0.0))  # superior up
    viewer.window._qt_window.resize(width, height)
    QTimer.singleShot(500, loop.quit)  # let the window settle and draw
    loop.exec()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        viewer.screenshot(str(tmp), canvas_only=False, flash=False)
    print(f"wrote {args.out}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
