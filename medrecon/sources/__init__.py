"""Label sources: the ways to get a :class:`~medrecon.volume.LabelMap` from a study, side by side.

Each source takes a study (:class:`~medrecon.volume.Volume`) and gives labels
on its grid through the same small interface (:class:`.base.LabelSource`:
``segment(volume, *, progress=None)`` and ``describe()`` for the report):

* :mod:`.network` - a segmentation network (the default model, a checkpoint,
  a MONAI bundle; the network library is :mod:`medrecon.models`);
* :mod:`.presets` - classical HU-threshold presets (bone, skin, lung, ...);
* :mod:`.imported` - a segmentation the user already has (label image, DICOM
  SEG, RTSTRUCT, TotalSegmentator output);
* :mod:`.nnunet` and :mod:`.totalseg` - pretrained engines: any nnU-Net v2
  trained-model folder, and TotalSegmentator's weights (run with nnunetv2).

:func:`resolve_source` turns what the user asked for (``--model``, ``--preset``,
``--labels``) into one of them; the pipeline, the CLI and the napari plugin all
go through it. A new engine or interactive tool is one more module here.
"""

from medrecon.sources.base import LabelSource
from medrecon.sources.imported import ImportedSource
from medrecon.sources.network import NetworkSource
from medrecon.sources.nnunet import NnunetSource
from medrecon.sources.presets import PresetSource
from medrecon.sources.resolve import resolve_source
from medrecon.sources.totalseg import TotalSegmentatorSource

__all__ = ["ImportedSource", "LabelSource", "NetworkSource", "NnunetSource", "PresetSource",
           "TotalSegmentatorSource", "resolve_source"]
