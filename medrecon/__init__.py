"""medrecon: CT and MRI studies to printable 3D organ models.

Conventions used everywhere in the package
-----------------------------------------
* World frame: **LPS** (DICOM patient coordinates), millimetres. +x points to
  the patient's Left, +y Posterior, +z Superior. NIfTI (RAS) and other frames
  are converted at the I/O edges only.
* Array axis order: **(i, j, k)**, as nibabel and ITK index images. For DICOM,
  i runs along a row (column index), j down the columns (row index), k across
  slices. ``affine @ [i, j, k, 1]`` gives the LPS position in mm of a voxel
  centre.

Heavy dependencies (torch, MONAI, napari) are imported lazily.
"""

from medrecon.errors import MedreconError
from medrecon.volume import LabelMap, Volume

__version__ = "0.1.0"
__all__ = ["LabelMap", "MedreconError", "Volume", "__version__"]
