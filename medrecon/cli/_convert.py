"""``medrecon convert INPUT OUTPUT.nii.gz [--series S] [--labels]``: any input to NIfTI.

Images go through :func:`medrecon.io.load`, label maps (``--labels``, e.g. a
DICOM SEG or a NRRD segmentation) through :func:`medrecon.io.load_labels`; both
are written with :func:`medrecon.io.save` (atomic; label maps get their
``<stem>.json`` names sidecar). Never imports torch or napari.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from medrecon.io.formats import write_suffixes


def register(subparsers: Any) -> None:
    """Add the ``convert`` sub-command."""
    p = subparsers.add_parser(
        "convert",
        help="convert DICOM/NIfTI/NRRD/MetaImage (or a DICOM SEG) to NIfTI",
        description=f"Write INPUT as NIfTI or NRRD ({', '.join(write_suffixes())}), keeping its geometry.",
    )
    p.add_argument("input", help="DICOM folder, file or DICOMDIR; NIfTI; NRRD; MetaImage")
    p.add_argument("output", help="output file, e.g. image.nii.gz")
    p.add_argument("--series", help="DICOM series to convert: UID, number, UID:part or 'auto'")
    p.add_argument("--labels", action="store_true",
                   help="the input is a label map (DICOM SEG, label NIfTI/NRRD)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert ``args.input`` to ``args.output``."""
    from medrecon.cli._common import print_series_note
    from medrecon.io import load, load_labels, save

    if args.labels:
        obj = load_labels(Path(args.input))
    else:
        obj = load(Path(args.input), series=args.series)
    out = save(obj, Path(args.output))
    print_series_note(getattr(obj, "meta", {}))
    spacing = " x ".join(f"{s:g}" for s in obj.spacing.round(4))
    kind = f"{len(obj.labels)} labels" if args.labels else (obj.units or obj.modality or "image")
    print(f"wrote {out}: {'x'.join(map(str, obj.shape))} voxels, {spacing} mm, "
          f"orientation {obj.orientation}, {kind}")
    return 0
