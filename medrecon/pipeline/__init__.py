"""One study from image to printable meshes: :func:`reconstruct` with a :class:`ReconstructConfig`.

The CLI (``medrecon reconstruct``, ``demo``, ``batch``, ``mesh``) and the napari
plugin call :func:`reconstruct` (:func:`export_meshes` writes meshes already
built, with the same files and report); ``medrecon segment`` calls :func:`segment_study`
(the same labels and checks, no meshes); :mod:`.phi` keeps identifiers out of its outputs and
:mod:`.preview` draws ``preview.png``.
"""

from medrecon.pipeline.config import DISCLAIMER, ReconstructConfig
from medrecon.pipeline.run import ReconstructResult, export_meshes, reconstruct, select_organs
from medrecon.pipeline.segment import SegmentResult, segment_study

__all__ = ["DISCLAIMER", "ReconstructConfig", "ReconstructResult", "SegmentResult", "export_meshes", "reconstruct",
           "segment_study", "select_organs"]
