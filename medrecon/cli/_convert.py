"""``medrecon convert INPUT OUTPUT.nii.gz [--series S] [--labels]``: any input to NIfTI.

Images go through :func:`medrecon.io.load`, label maps (``--labels``, e.g. a
DICOM SEG or a NRRD segmentation) through :func:`medrecon.io.load_labels`; both
are written with :func:`medrecon.io.save` (atomic; label maps get their
``<stem>.json`` names sidecar). A DICOM series going to NIfTI keeps its stored
integers from the files to the output (:func:`medrecon.io.dicom.load_dicom_stored`),
never made into float32 values. Never imports torch or napari.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from medrecon.io.formats import DICOM, detect_format, write_suffixes, writer_for


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
    from medrecon.io.stored import StoredVolume

    source, target = Path(args.input), Path(args.output)
    if args.labels:
        obj = load_labels(source)
    elif writer_for(target).scales_integers and detect_format(source) == DICOM.name:
        from medrecon.io.dicom import load_dicom_stored

        obj = load_dicom_stored(source, series=args.series)
    else:
        obj = load(source, series=args.series)
    out = save(obj, target)
    image = obj.raw if isinstance(obj, StoredVolume) else obj  # its grid and metadata
    print_series_note(getattr(image, "meta", {}))
    spacing = " x ".join(f"{s:g}" for s in image.spacing.round(4))
    kind = f"{len(image.labels)} labels" if args.labels else (obj.units or image.modality or "image")
    print(f"wrote {out}: {'x'.join(map(str, image.shape))} voxels, {spacing} mm, "
          f"orientation {image.orientation}, {kind}")
    return 0
