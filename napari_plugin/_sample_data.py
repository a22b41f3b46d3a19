"""npe2 sample data: the bundled abdominal CT phantom with its organ labels.

The files committed under ``sample_data/`` (the DICOM series ``dicom/`` and the
label map ``labels.nii.gz`` + ``labels.json``) are opened with the plugin's own
reader, so the sample is placed exactly as a user's files would be. Where they are
not installed (a wheel without the repository's ``sample_data/``), the same
phantom is generated in memory from its seed and grid (identical voxels).
"""

from __future__ import annotations

from pathlib import Path

from medrecon.imagekind import name_suggests_labels
from medrecon.io.formats import NIFTI
from napari_plugin._layers import image_layer_data, labels_layer_data
from napari_plugin._reader import read_path

#: Where the repository keeps the committed sample study.
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
#: Seed and grid of the committed sample (see ``sample_data/README.md``).
SAMPLE_SEED = 0
SAMPLE_SLICES = 72
SAMPLE_THICKNESS_MM = 3.0


def bundled_files(folder: Path = SAMPLE_DIR) -> list[Path]:
    """Return the sample's image (``dicom/`` folder or NIfTI) and label file, or ``[]``."""
    if not folder.is_dir():
        return []

    def is_label(p: Path) -> bool:
        return name_suggests_labels(p.name)

    files = sorted(p for p in folder.iterdir() if p.is_file() and NIFTI.matches(p.name))
    images = [folder / "dicom"] if (folder / "dicom").is_dir() else []
    images += [p for p in files if not is_label(p)]
    labels = [p for p in files if is_label(p)]
    return images[:1] + labels[:1] if images and labels else []


def abdominal_phantom() -> list[tuple]:
    """Return the phantom CT as an Image layer and its organs as a Labels layer."""
    files = bundled_files()
    if files:
        return [layer for p in files for layer in read_path(p)]
    from medrecon.phantom import PhantomConfig, make_phantom

    config = PhantomConfig(
        slices=SAMPLE_SLICES, slice_thickness=(SAMPLE_THICKNESS_MM, SAMPLE_THICKNESS_MM)
    )
    volume, labels = make_phantom(SAMPLE_SEED, config=config)
    return [
        image_layer_data(volume, name="phantom CT"),
        labels_layer_data(labels, name="phantom organs"),
    ]
