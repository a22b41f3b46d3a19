"""One study from image to printable meshes: :func:`reconstruct` with a :class:`ReconstructConfig`.

The CLI (``medrecon reconstruct``, ``demo``, ``batch``, ``mesh``) and the napari
plugin call :func:`reconstruct` (:func:`export_meshes` writes meshes already
built, with the same files and report); :mod:`.phi` keeps identifiers out of its outputs and
:mod:`.preview` draws ``preview.png``.
"""

from medrecon.pipeline.config import DISCLAIMER, ReconstructConfig
from medrecon.pipeline.run import ReconstructResult, export_meshes, reconstruct, select_organs

__all__ = ["DISCLAIMER", "ReconstructConfig", "ReconstructResult", "export_meshes", "reconstruct", "select_organs"]
