"""Surface extraction and whole mesh export: medrecon vs scikit-image and VTK.

A 512 x 512 x 300 label map (0.78 x 0.78 x 1.0 mm) with analytic organs (a
liver-sized ellipsoid, spleen, two kidneys, an aorta) is made here, not read from
disk. Timed side by side (best of ``--repeat``):

* per-organ surfaces: scikit-image on the full volume, scikit-image on a crop,
  VTK flying edges (full, crop), VTK SurfaceNets3D (all labels in one pass),
  medrecon ``label_surfaces`` (auto engine and scikit-image engine);
* peak extra memory of the Python-side allocations (tracemalloc);
* the whole liver mask file -> smoothed, decimated, repaired, reported STL, as a
  fresh process each: the ``medrecon mesh`` command (``python -m medrecon``, the
  console entry's ``main``; output piped, so no progress bar) and the same steps
  as a Python-API script, vs the all-VTK 3D Slicer-style pipeline
  (vtkDiscreteFlyingEdges3D, vtkWindowedSincPolyDataFilter, vtkQuadricDecimation,
  vtkSTLWriter).

Ratios are printed last. Run: ``OMP_NUM_THREADS=1 python bench/bench_mesh.py``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

SHAPE = (512, 512, 300)
SPACING = (0.78, 0.78, 1.0)
ORGANS = {  # label: (name, centre mm, semi-axes mm)
    5: ("liver", (150.0, 180.0, 160.0), (95.0, 75.0, 65.0)),
    1: ("spleen", (310.0, 200.0, 180.0), (45.0, 35.0, 45.0)),
    2: ("kidney_right", (140.0, 260.0, 100.0), (28.0, 25.0, 55.0)),
    3: ("kidney_left", (260.0, 260.0, 100.0), (28.0, 25.0, 55.0)),
}


def make_labels() -> np.ndarray:
    """(512, 512, 300) uint8 label map with the analytic organs and an aorta."""
    array = np.zeros(SHAPE, np.uint8)
    for label, (_, centre, semi) in ORGANS.items():
        lo = [max(0, int((c - r) / s) - 1) for c, r, s in zip(centre, semi, SPACING, strict=True)]
        hi = [min(n, int((c + r) / s) + 2) for c, r, s, n in zip(centre, semi, SPACING, SHAPE, strict=True)]
        grid = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        d = sum(((g * s - c) / r) ** 2 for g, s, c, r in zip(grid, SPACING, centre, semi, strict=True))
        block = array[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        block[d <= 1.0] = label
    i, j = np.ogrid[: SHAPE[0], : SHAPE[1]]
    aorta = (i * SPACING[0] - 200.0) ** 2 + (j * SPACING[1] - 275.0) ** 2 <= 12.0**2
    array[:, :, 20:280][aorta] = 52
    return array


def best(fn, repeat: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def peak_mib(fn) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / 2**20


def vtk_image(mask: np.ndarray):
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData

    image = vtkImageData()
    image.SetDimensions(*mask.shape)
    image.SetSpacing(*SPACING)
    image.GetPointData().SetScalars(numpy_to_vtk(np.asfortranarray(mask).ravel(order="F"), deep=True))
    return image


def vtk_flying_edges(image, level=0.5) -> int:
    from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D

    fe = vtkFlyingEdges3D()
    fe.SetInputData(image)
    fe.SetValue(0, level)
    fe.ComputeNormalsOff()
    fe.Update()
    return fe.GetOutput().GetNumberOfCells()


def vtk_surface_nets(image, labels) -> int:
    from vtkmodules.vtkFiltersCore import vtkSurfaceNets3D

    sn = vtkSurfaceNets3D()
    sn.SetInputData(image)
    for n, label in enumerate(labels):
        sn.SetValue(n, label)
    sn.SetOutputMeshTypeToTriangles()
    sn.SmoothingOff()
    sn.Update()
    return sn.GetOutput().GetNumberOfCells()


#: ``medrecon mesh`` with the options of the VTK pipeline below (smoothing 0.5 is the default).
OURS_CLI = ["-m", "medrecon", "mesh", "{mask}", "-o", "{out}", "--smooth", "0.5", "--decimate", "0.75"]

#: The same through the Python API (what ``medrecon mesh`` calls).
OURS = """
import sys
from medrecon.io import load_labels
from medrecon.mesh import MeshOptions
from medrecon.pipeline import ReconstructConfig, reconstruct
labels = load_labels(sys.argv[1])
config = ReconstructConfig(mesh=MeshOptions(smooth=0.5, decimate=0.75), preview=False)
report = reconstruct(labels, sys.argv[2], config=config).report
assert all(o["watertight"] and o["manifold"] for o in report["organs"])
"""

VTK = """
import sys
from vtkmodules.vtkIOImage import vtkNIFTIImageReader
from vtkmodules.vtkFiltersGeneral import vtkDiscreteFlyingEdges3D
from vtkmodules.vtkFiltersCore import vtkWindowedSincPolyDataFilter, vtkQuadricDecimation, vtkTriangleFilter
from vtkmodules.vtkIOGeometry import vtkSTLWriter
r = vtkNIFTIImageReader(); r.SetFileName(sys.argv[1])
fe = vtkDiscreteFlyingEdges3D(); fe.SetInputConnection(r.GetOutputPort()); fe.SetValue(0, 1)
fe.ComputeNormalsOff(); fe.ComputeGradientsOff(); fe.ComputeScalarsOff()
sm = vtkWindowedSincPolyDataFilter(); sm.SetInputConnection(fe.GetOutputPort())
sm.SetNumberOfIterations(20); sm.SetPassBand(0.01); sm.BoundarySmoothingOff()
sm.FeatureEdgeSmoothingOff(); sm.NonManifoldSmoothingOn(); sm.NormalizeCoordinatesOn()
dec = vtkQuadricDecimation(); dec.SetInputConnection(sm.GetOutputPort()); dec.SetTargetReduction(0.75)
tri = vtkTriangleFilter(); tri.SetInputConnection(dec.GetOutputPort())
w = vtkSTLWriter(); w.SetInputConnection(tri.GetOutputPort()); w.SetFileName(sys.argv[2] + "/liver.stl")
w.SetFileTypeToBinary(); w.SetHeader("SPACE=RAS"); w.Write()
"""


def whole_processes(commands: dict[str, list[str]], repeat: int) -> dict[str, float]:
    """Best wall time of each ``python ARGS`` as a fresh process (output piped, shown on failure).

    The commands take turns, so a change of the machine's load hits all of them alike.
    """
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, args in commands.items():
            t = time.perf_counter()
            done = subprocess.run([sys.executable, *args], capture_output=True, text=True)
            times[name].append(time.perf_counter() - t)
            if done.returncode:
                raise RuntimeError(f"{name} failed:\n{done.stdout}{done.stderr}")
    return {name: min(t) for name, t in times.items()}


def printable_report(outdir: Path) -> None:
    """Check that a run's report says every organ is printable, with the STL frame header."""
    import json

    report = json.loads((outdir / "report.json").read_text())
    assert report["organs"] and all(o["watertight"] and o["manifold"] for o in report["organs"]), report
    assert all((outdir / o["file"]).read_bytes().startswith(b"SPACE=LPS") for o in report["organs"])


def in_process(code: str, args: list[str], repeat: int) -> float:
    """Time ``code`` run in this process (imports already paid for after the first run)."""
    saved = sys.argv
    times = []
    try:
        for _ in range(repeat + 1):
            sys.argv = ["-c", *args]
            t = time.perf_counter()
            exec(compile(code, "<bench>", "exec"), {"__name__": "__bench__"})
            times.append(time.perf_counter() - t)
    finally:
        sys.argv = saved
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from skimage.measure import marching_cubes

    from medrecon.surface import label_surfaces
    from medrecon.surface.extract import padded_crop
    from medrecon.surface.labels import label_boxes
    from medrecon.volume import LabelMap

    print("making a 512x512x300 label map with 5 analytic organs ...", flush=True)
    array = make_labels()
    affine = np.diag([*SPACING, 1.0])
    labels = LabelMap(array, affine, names={k: v[0] for k, v in ORGANS.items()} | {52: "aorta"})
    ids = labels.labels
    box = label_boxes(labels, [5])[5]
    liver = array == 5
    liver_crop, _ = padded_crop(liver.astype(np.uint8), box, 0)
    n = args.repeat
    rows: dict[str, float] = {}

    rows["skimage, full volume, liver"], _ = best(lambda: marching_cubes(liver.astype(np.float32), 0.5), n)
    rows["skimage, crop, liver"], _ = best(lambda: marching_cubes(liver_crop, 0.5), n)
    rows["medrecon label_surfaces, liver (auto engine)"], _ = best(lambda: label_surfaces(labels, organs=[5]), n)
    rows["medrecon label_surfaces, 5 organs (auto engine)"], _ = best(lambda: label_surfaces(labels), n)
    rows["medrecon label_surfaces, 5 organs (skimage engine)"], _ = best(
        lambda: label_surfaces(labels, engine="skimage"), n)
    have_vtk = True
    try:
        full_image, crop_image = vtk_image(liver.astype(np.uint8)), vtk_image(liver_crop)
        multi_image = vtk_image(array)
    except ImportError:
        have_vtk = False
    if have_vtk:
        rows["VTK flying edges, full volume, liver"], _ = best(lambda: vtk_flying_edges(full_image), n)
        rows["VTK flying edges, crop, liver"], _ = best(lambda: vtk_flying_edges(crop_image), n)
        rows["VTK SurfaceNets3D, 5 organs one pass"], _ = best(lambda: vtk_surface_nets(multi_image, ids), n)
    mem = {
        "skimage, full volume, liver": peak_mib(lambda: marching_cubes(liver.astype(np.float32), 0.5)),
        "medrecon label_surfaces, 5 organs (auto engine)": peak_mib(lambda: label_surfaces(labels)),
        "medrecon label_surfaces, 5 organs (skimage engine)": peak_mib(
            lambda: label_surfaces(labels, engine="skimage")),
    }

    with tempfile.TemporaryDirectory() as tmp:
        from medrecon.io import save

        mask_file = Path(tmp) / "liver.nii.gz"
        save(LabelMap(liver.astype(np.uint8), affine, names={1: "liver"}), mask_file)
        cli_out, ours_out, vtk_out = Path(tmp) / "cli", Path(tmp) / "ours", Path(tmp) / "vtk"
        ours_out.mkdir()
        vtk_out.mkdir()
        commands = {
            "whole process: medrecon mesh CLI, mask -> STL + report":
                [a.format(mask=mask_file, out=cli_out) for a in OURS_CLI],
            "whole process: same via the Python API (script)": ["-c", OURS, str(mask_file), str(ours_out)],
        }
        if have_vtk:
            commands["whole process: all-VTK Slicer-style -> STL"] = ["-c", VTK, str(mask_file), str(vtk_out)]
        rows.update(whole_processes(commands, n))
        printable_report(cli_out)
        printable_report(ours_out)
        rows["same, in process (no imports): medrecon"] = in_process(OURS, [str(mask_file), str(ours_out)], n)
        if have_vtk:
            rows["same, in process (no imports): all-VTK"] = in_process(VTK, [str(mask_file), str(vtk_out)], n)

    print(f"\nmachine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; best of {n}")
    print(f"{'what':58s} {'time (s)':>9s}")
    for name, t in rows.items():
        print(f"{name:58s} {t:9.3f}")
    print(f"\n{'peak extra Python memory':58s} {'MiB':>9s}")
    for name, m in mem.items():
        print(f"{name:58s} {m:9.1f}")
    ours5 = rows["medrecon label_surfaces, 5 organs (auto engine)"]
    print("\nratios (target in brackets):")
    print(f"  skimage full volume per organ / ours per organ: "
          f"{rows['skimage, full volume, liver'] / (ours5 / len(ids)):.2f}  [>= 3]")
    if have_vtk:
        print(f"  ours 5 organs / VTK SurfaceNets 5 organs: "
              f"{ours5 / rows['VTK SurfaceNets3D, 5 organs one pass']:.2f}  [<= 1.5]")
        vtk_whole = rows["whole process: all-VTK Slicer-style -> STL"]
        print(f"  all-VTK whole process / ours whole process (medrecon mesh CLI): "
              f"{vtk_whole / rows['whole process: medrecon mesh CLI, mask -> STL + report']:.2f}  [>= 2]")
        print(f"  all-VTK whole process / ours whole process (Python API script): "
              f"{vtk_whole / rows['whole process: same via the Python API (script)']:.2f}")
        print(f"  in process, without import times: "
              f"{rows['same, in process (no imports): all-VTK'] / rows['same, in process (no imports): medrecon']:.2f}")
    print(f"  peak extra memory, ours 5 organs: "
          f"{mem['medrecon label_surfaces, 5 organs (auto engine)']:.1f} MiB  [< 100]")


if __name__ == "__main__":
    main()
