"""``medrecon complete``: fill organs drawn on a few slices (shape completion)."""

from __future__ import annotations

import argparse

from medrecon.io.formats import write_suffixes


def register(subparsers) -> None:
    """Add the ``complete`` sub-command."""
    p = subparsers.add_parser(
        "complete", help="fill organs drawn on a few slices",
        description="Complete a sparse label map (each organ drawn on a few slices) into full 3D "
                    "organs on the same grid. The drawn slices are kept exactly. Writes the label "
                    "map and its labels.json names sidecar.")
    p.add_argument("sparse", metavar="SPARSE_LABELS", help="sparse label map (.nii.gz, .nrrd, DICOM SEG, ...)")
    p.add_argument("--image", help="the image the labels were drawn on (improves the network method)")
    p.add_argument("-o", "--output", required=True, help=f"label map to write ({', '.join(write_suffixes())})")
    p.add_argument("--method", choices=("network", "sdf"), default="network",
                   help="image-to-shape network (default) or signed-distance interpolation")
    p.add_argument("--model", default="default", help="shape model: 'default' or a checkpoint folder")
    p.add_argument("--names", metavar="JSON", help="flat JSON id -> name map (default: the sidecar)")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=2,
                   help="array axis across which the slices were drawn (default 2, the slice axis)")
    p.add_argument("--stop-at-drawn", action="store_true",
                   help="end every organ at its first and last drawn slice (default: a little beyond)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, complete, save."""
    from medrecon.completion import complete
    from medrecon.io import load, load_labels, save
    from medrecon.progress import TqdmProgress

    sparse = load_labels(args.sparse, names=args.names)
    image = load(args.image) if args.image else None
    with TqdmProgress("complete", disable=args.quiet) as bar:
        labels = complete(sparse, image=image, method=args.method, model=args.model, axis=args.axis,
                          stop_at_drawn=args.stop_at_drawn, progress=bar)
    save(labels, args.output)
    found = ", ".join(labels.name_of(i) for i in labels.labels)
    print(f"wrote {args.output} ({args.method}; {len(labels.labels)} structures: {found})")
    return 0
