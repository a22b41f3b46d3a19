"""``medrecon phantom OUTDIR [--seed N] [--format dicom|nifti|both] [--small]``: a synthetic study.

``sample_data/`` is ``medrecon phantom sample_data --seed 0 --format dicom --slices 72 --thickness 3``.

Writes ``OUTDIR/labels.nii.gz`` + ``labels.json`` (ground truth), the image as
``image.nii.gz`` and/or a DICOM series in ``OUTDIR/dicom/``, and
``phantom.json`` (seed, settings, organ volumes). Never imports torch or napari.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the seed must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"the seed must be a non-negative integer, got {value}")
    return value


def _range(text: str) -> tuple[float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"give a size in mm or a range LOW,HIGH such as 0.6,1.0; got {text!r}")
    return (values[0], values[-1])


def register(subparsers: Any) -> None:
    """Add the ``phantom`` sub-command."""
    p = subparsers.add_parser(
        "phantom",
        help="write a synthetic abdominal CT with exact organ labels",
        description=(
            "Make a synthetic abdominal CT study (no patient data) with ground-truth labels "
            "named as TotalSegmentator's 'total' task, and write it as NIfTI and/or DICOM."
        ),
    )
    p.add_argument("outdir", help="output folder")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0); same seed, same study")
    p.add_argument("--format", dest="fmt", choices=("both", "dicom", "nifti"), default="both",
                   help="image format(s) to write (default both); labels are always NIfTI + JSON")
    p.add_argument("--small", action="store_true",
                   help="a coarse 96 x 96 x 32 study (the tests' preset) instead of 256 x 256 x 40-120")
    p.add_argument("--matrix", type=int, metavar="N", help="in-plane voxels per axis (default 256; --small: 96)")
    p.add_argument("--slices", type=int, metavar="N", help="number of slices (default: from a 220-300 mm coverage)")
    p.add_argument("--spacing", type=_range, metavar="MM[,MM]",
                   help="in-plane voxel size or range drawn from (default 1.25,1.6; raised when the body "
                        "would not fit the matrix). Clinical: --matrix 512 --spacing 0.6,1.0 --thickness 1,5")
    p.add_argument("--thickness", type=_range, metavar="MM[,MM]",
                   help="slice thickness (= spacing) or range drawn from (default 2.5,5; --small: 7,8.5)")
    p.add_argument("--orientation", default="axial",
                   help="array layout: 'axial' (default; axial slices, random flips), 'random' "
                        "(any axis order) or LPS codes such as LPS or RAS")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the phantom and print what was written."""
    from medrecon.phantom import PhantomConfig, write_phantom
    from medrecon.progress import TqdmProgress

    try:
        config = PhantomConfig(
            small=args.small,
            matrix=args.matrix,
            slices=args.slices,
            spacing_xy=args.spacing,
            slice_thickness=args.thickness,
            orientation=args.orientation,
        )
    except ValueError as exc:
        from medrecon.errors import InputError

        raise InputError(str(exc)) from None
    with TqdmProgress("phantom") as bar:
        out = write_phantom(Path(args.outdir), seed=args.seed, fmt=args.fmt, config=config, progress=bar)
    import json

    summary = json.loads((out / "phantom.json").read_text(encoding="utf-8"))
    spacing = " x ".join(f"{s:g}" for s in summary["spacing_mm"])
    print(f"wrote {out}: seed {args.seed}, {'x'.join(map(str, summary['shape']))} voxels, {spacing} mm, "
          f"orientation {summary['orientation']}, {len(summary['organs'])} labelled structures")
    return 0
