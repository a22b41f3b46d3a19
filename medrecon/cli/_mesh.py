"""``medrecon mesh``: label map -> one printable mesh per organ + report.json."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from medrecon.cli._common import add_mesh_options, mesh_options_from_args, organ_list, print_status


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
    p.add_argument("--organs", type=organ_list, metavar="LIST", help="label ids or names, e.g. 1,5,liver")
    p.add_argument("--force-labels", action="store_true",
                   help="take LABELS as a label map even if it looks like an intensity image")
    add_mesh_options(p, workers_flag="--workers")
    p.add_argument("--merged", action="store_true", help="also write all organs into one scene file")
    p.add_argument("--preview", action="store_true",
                   help="also draw the exported meshes into OUTDIR/meshes.png (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``medrecon mesh``."""
    from pathlib import Path

    from medrecon.imagekind import require_labels
    from medrecon.io import load_labels
    from medrecon.pipeline import ReconstructConfig, reconstruct
    from medrecon.progress import TqdmProgress

    options = mesh_options_from_args(args)
    config = ReconstructConfig(organs=tuple(args.organs or ()), mesh=options, fmt=args.fmt,
                               frame=args.frame, merged=args.merged, preview=False)
    labels = load_labels(args.labels, names=args.names)
    require_labels(labels.array, source=args.labels, force=args.force_labels)
    # no bar (and no tqdm import, ~0.06 s) when nobody watches stderr
    show_bar = not args.json and sys.stderr.isatty()
    with TqdmProgress("mesh") if show_bar else contextlib.nullcontext() as bar:
        report = reconstruct(labels, args.output, config=config, progress=bar).report
    if args.preview:
        from medrecon.mesh.render import render_export

        render_export(args.output, title=f"{Path(args.labels).name}: {len(report['organs'])} structures, "
                      f"{report['frame']} mm")
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for organ in report["organs"]:
            print(f"{organ['file']}: {organ['mesh_volume_ml']:.2f} mL, {organ['faces']} faces, "
                  f"HD95 {organ['hd95_mm']:.2f} mm, {print_status(organ)}")
        print(f"report: {Path(args.output) / 'report.json'}")
    return 0
