"""``medrecon segment``: organ labels for a CT with the default (or a given) model."""

from __future__ import annotations

import argparse

from medrecon.io.formats import write_suffixes


def register(subparsers) -> None:
    """Add the ``segment`` sub-command."""
    p = subparsers.add_parser(
        "segment", help="segment organs with a 2.5D network",
        description="Segment organs in a CT (DICOM folder, NIfTI, NRRD, MetaImage) and write a "
                    "label map on exactly the input grid, with its labels.json names sidecar. The "
                    "model's organs that fail the anatomy and confidence checks are left out "
                    "(--keep-implausible keeps them); one line per organ says why.")
    p.add_argument("input", help="image file or DICOM folder")
    p.add_argument("-o", "--output", required=True, help=f"label map to write ({', '.join(write_suffixes())})")
    p.add_argument("--model", default="default",
                   help="'default', a checkpoint folder/.json/.safetensors, a MONAI bundle folder, "
                        "'totalsegmentator[:total|total_mr]' or 'nnunet:FOLDER'")
    p.add_argument("--fast", action="store_true", help="with --model totalsegmentator: its 3 mm models")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--planes", default="auto", choices=("auto", "axial", "all"),
                   help="axial slices, or fuse axial+coronal+sagittal passes "
                        "(default auto: the planes the model was trained on)")
    p.add_argument("--series", default=None, help="DICOM series UID or number if several")
    p.add_argument("--batch-size", type=int, default=None, help="slices per forward pass")
    p.add_argument("--trust-bundle", action="store_true",
                   help="allow a MONAI bundle (its configs contain code)")
    p.add_argument("--force-image", action="store_true",
                   help="segment INPUT even if it looks like a label map")
    p.add_argument("--seg-out", metavar="FILE.dcm",
                   help="also write the labels as a DICOM Segmentation referencing the input series "
                        "(DICOM input only; it carries the series' patient and study identifiers)")
    p.add_argument("--modality", type=str.upper, metavar="CT",
                   help="the study's modality where its files do not say: CT lets the model run on a "
                        "file that fails the CT intensity test")
    p.add_argument("--keep-implausible", action="store_true",
                   help="also write the model's organs that fail the anatomy and confidence checks "
                        "(default: they are left out of the label map)")
    p.add_argument("--report", metavar="FILE.json",
                   help="also write the report: each organ with its verdict, reasons and confidence")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, segment, check, save; one line per organ with its verdict."""
    from medrecon.errors import ImplausibleSegmentationError
    from medrecon.pipeline import ReconstructConfig, segment_study
    from medrecon.progress import TqdmProgress

    if args.seg_out:
        from medrecon.io.dicom_seg_write import check_seg_source

        check_seg_source(args.input)  # before the work, not after it
    config = ReconstructConfig(model=args.model, device=args.device, planes=args.planes, series=args.series,
                               trust_bundle=args.trust_bundle, batch_size=args.batch_size, fast=args.fast,
                               force_image=args.force_image, modality=args.modality,
                               keep_implausible=args.keep_implausible, preview=False)
    try:
        with TqdmProgress("segment", disable=args.quiet) as bar:
            result = segment_study(args.input, args.output, config=config, report_path=args.report,
                                   progress=bar)
    except ImplausibleSegmentationError as exc:
        print_verdicts(exc.report or {})
        raise
    labels = result.labels
    found = ", ".join(labels.name_of(i) for i in labels.labels)
    print(f"wrote {args.output} ({len(labels.labels)} structures: {found})")
    print_verdicts(result.report)
    if args.seg_out:
        from medrecon.io.dicom_seg_write import write_seg

        seg = write_seg(labels, args.input, args.seg_out, algorithm=result.report["label_source"],
                        series=result.volume.meta["series_choice"]["key"])
        print(seg.summary())
    return 0


def print_verdicts(report: dict) -> None:
    """One line per checked organ of a report: kept or left out, plausible or why not, confidence."""
    for organ in report.get("organs", ()):
        if "plausible" not in organ:
            continue
        conf = f", confidence {organ['confidence']:.2f}" if organ.get("confidence") is not None else ""
        where = "" if organ.get("kept", True) else "left out, "
        if organ["plausible"]:
            edge = ", cut by the edge of the scan" if organ.get("cut_at_edge") else ""
            print(f"{organ['name']}: {where}plausible{edge}{conf}")
        else:
            print(f"{organ['name']}: {where}implausible ({'; '.join(organ.get('reasons') or ())}){conf}")
