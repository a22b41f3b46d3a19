"""``medrecon reconstruct``: one study -> labels, printable organ meshes, preview and report."""

from __future__ import annotations

import argparse
import json
import sys

from medrecon.cli._common import (
    add_reconstruct_options,
    config_from_args,
    print_series_note,
    print_summary,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``reconstruct`` sub-command."""
    p = subparsers.add_parser(
        "reconstruct",
        help="study -> organ labels, watertight meshes, preview.png and report.json",
        description=(
            "Load a CT/MR study (DICOM folder, NIfTI, NRRD, MetaImage), obtain organ labels from a "
            "network (--model), HU-threshold presets (--preset) or an existing segmentation "
            "(--labels), and write OUTDIR/labels.nii.gz (+ labels.json), OUTDIR/meshes/<organ>.<ext>, "
            "OUTDIR/preview.png and OUTDIR/report.json. Outputs carry no patient identifiers unless "
            "--keep-phi. medrecon is not a medical device; its output is not for diagnosis."
        ),
    )
    p.add_argument("input", metavar="INPUT", help="DICOM folder or file, NIfTI, NRRD or MetaImage")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    add_reconstruct_options(p)
    p.add_argument("--seg-out", metavar="FILE.dcm",
                   help="also write the labels as a DICOM Segmentation referencing the input series "
                        "(DICOM input only; it carries the series' patient and study identifiers, "
                        "whatever --keep-phi says, so that it can be filed beside it)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``medrecon reconstruct``."""
    from medrecon.pipeline import reconstruct
    from medrecon.progress import TqdmProgress

    config = config_from_args(args)
    if args.seg_out:
        from medrecon.io.dicom_seg_write import check_seg_source

        check_seg_source(args.input)  # before the work, not after it
    with TqdmProgress("reconstruct", disable=args.quiet or args.json or not sys.stderr.isatty()) as bar:
        result = reconstruct(args.input, args.output, config=config, progress=bar)
    print_series_note(result.volume.meta)
    if args.json:
        json.dump(result.report, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_summary(result.report, args.output)
    if args.seg_out:
        from medrecon.io.dicom_seg_write import write_seg

        seg = write_seg(result.labels, args.input, args.seg_out, algorithm=result.report["label_source"],
                        series=result.volume.meta["series_choice"]["key"])
        print(seg.summary(), file=sys.stderr if args.json else sys.stdout)
    return 0
