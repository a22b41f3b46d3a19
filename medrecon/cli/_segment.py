"""``medrecon segment``: organ labels for a CT with the default (or a given) model."""

from __future__ import annotations

import argparse

from medrecon.io.formats import write_suffixes


def register(subparsers) -> None:
    """Add the ``segment`` sub-command."""
    p = subparsers.add_parser(
        "segment", help="segment organs with a 2.5D network",
        description="Segment organs in a CT (DICOM folder, NIfTI, NRRD, MetaImage) and write a "
                    "label map on exactly the input grid, with its labels.json names sidecar.")
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, segment, save."""
    from medrecon.imagekind import require_image
    from medrecon.io import load, save
    from medrecon.progress import TqdmProgress
    from medrecon.sources import resolve_source

    if args.seg_out:
        from medrecon.io.dicom_seg_write import check_seg_source

        check_seg_source(args.input)  # before the work, not after it
    source = resolve_source(model=args.model, device=args.device, planes=args.planes,
                            trust_bundle=args.trust_bundle, batch_size=args.batch_size, fast=args.fast)
    volume = load(args.input, series=args.series)
    require_image(volume.array, source=args.input, modality=volume.modality, force=args.force_image)
    from medrecon.sources.plausibility import require_ct, required_modality

    if required_modality(source) == "CT":
        require_ct(volume, what=f"CT-only models such as {args.model!r}", override=args.modality)
    with TqdmProgress("segment", disable=args.quiet) as bar:
        labels = source.segment(volume, progress=bar)
    save(labels, args.output)
    found = ", ".join(labels.name_of(i) for i in labels.labels)
    print(f"wrote {args.output} ({len(labels.labels)} structures: {found})")
    if args.seg_out:
        from medrecon.io.dicom_seg_write import write_seg

        seg = write_seg(labels, args.input, args.seg_out, algorithm=source.describe(),
                        series=volume.meta["series_choice"]["key"])
        print(seg.summary())
    return 0
