"""``medrecon mesh``: label map -> one printable mesh per organ + report.json."""

from __future__ import annotations

import argparse
import json
import sys


def _organ_list(text: str) -> list[int | str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("give label ids or names separated by commas, e.g. 1,5,liver")
    return [int(t) if t.lstrip("-").isdigit() else t for t in items]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``mesh`` sub-command."""
    p = subparsers.add_parser(
        "mesh",
        help="label map -> watertight organ meshes (STL/OBJ/PLY/3MF) + print report",
        description=(
            "Turn each organ of a label map into a watertight, smoothed mesh in millimetres "
            "(LPS patient frame unless --frame RAS) and write OUTDIR/meshes/<name>.<ext> "
            "and OUTDIR/report.json. --smooth 0 --decimate 0 gives the raw marching-cubes surface."
        ),
    )
    p.add_argument("labels", metavar="LABELS", help="label file: NIfTI, NRRD, MetaImage or DICOM SEG")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--names", metavar="JSON", help="flat JSON id -> name map (default: sidecar <stem>.json)")
    p.add_argument("--organs", type=_organ_list, metavar="LIST", help="label ids or names, e.g. 1,5,liver")
    p.add_argument("--smooth", type=float, default=0.5, metavar="S",
                   help="smoothing factor on 3D Slicer's scale 0..1 (default 0.5, Slicer's default)")
    p.add_argument("--decimate", type=float, default=0.0, metavar="R",
                   help="fraction of triangles to remove, 0..<1 (default 0)")
    p.add_argument("--target-faces", type=int, metavar="N", help="aim for N triangles per organ instead")
    p.add_argument("--keep-largest", action="store_true", help="keep only the largest piece of each organ")
    p.add_argument("--min-component", type=float, default=0.0, metavar="MM3",
                   help="drop pieces smaller than this volume in mm^3")
    p.add_argument("--format", dest="fmt", choices=("stl", "obj", "ply", "3mf"), default="stl")
    p.add_argument("--frame", choices=("LPS", "RAS"), default="LPS", type=str.upper,
                   help="coordinate frame of the files (default LPS, the DICOM patient frame)")
    p.add_argument("--hollow", type=float, default=0.0, metavar="MM", help="hollow shell wall thickness in mm")
    p.add_argument("--iso-spacing", type=float, metavar="MM", help="resample masks to cubic voxels first")
    p.add_argument("--merged", action="store_true", help="also write all organs into one scene file")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="organs in parallel (0: all cores)")
    p.add_argument("--preview", action="store_true",
                   help="also draw the exported meshes into OUTDIR/meshes.png (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``medrecon mesh``."""
    from pathlib import Path

    from medrecon.io import load_labels
    from medrecon.io.mesh_export import export_organs
    from medrecon.mesh import MeshOptions, build_organ_meshes
    from medrecon.progress import TqdmProgress

    try:
        options = MeshOptions(
            smooth=args.smooth, decimate=args.decimate, target_faces=args.target_faces,
            keep_largest=args.keep_largest, min_component_mm3=args.min_component,
            hollow_mm=args.hollow, iso_spacing=args.iso_spacing, workers=args.workers,
        )
    except ValueError as exc:
        from medrecon.errors import InputError

        raise InputError(str(exc)) from None
    labels = load_labels(args.labels, names=args.names)
    with TqdmProgress("mesh", disable=args.json or not sys.stderr.isatty()) as bar:
        organs = build_organ_meshes(labels, options, organs=args.organs, progress=bar)
        report = export_organs(
            organs, args.output, fmt=args.fmt, frame=args.frame, merged=args.merged,
            extra_report={
                "input": str(Path(args.labels)),
                "options": {
                    "smooth": options.smooth, "decimate": options.decimate,
                    "target_faces": options.target_faces, "keep_largest": options.keep_largest,
                    "min_component_mm3": options.min_component_mm3, "hollow_mm": options.hollow_mm,
                    "iso_spacing": options.iso_spacing,
                },
            },
        )
    if args.preview:
        from medrecon.mesh.render import render_export

        render_export(args.output, title=f"{Path(args.labels).name}: {len(report['organs'])} structures, "
                      f"{report['frame']} mm")
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for organ in report["organs"]:
            ok = "ok" if organ["watertight"] and organ["manifold"] else "NOT PRINTABLE"
            print(f"{organ['file']}: {organ['mesh_volume_ml']:.2f} mL, {organ['faces']} faces, "
                  f"HD95 {organ['hd95_mm']:.2f} mm, {ok}")
        print(f"report: {Path(args.output) / 'report.json'}")
    return 0
