"""Synthetic abdominal CT phantoms with ground-truth organ labels.

:func:`make_phantom` draws a patient from a seed and returns a CT
:class:`~medrecon.volume.Volume` (HU) and its :class:`~medrecon.volume.LabelMap`
(TotalSegmentator ``total`` ids and names), both in LPS millimetres;
:func:`write_phantom` writes one to disk as NIfTI and/or a DICOM series.
"""

from medrecon.phantom.config import PhantomConfig
from medrecon.phantom.generate import make_phantom
from medrecon.phantom.write import write_phantom

__all__ = ["PhantomConfig", "make_phantom", "write_phantom"]
