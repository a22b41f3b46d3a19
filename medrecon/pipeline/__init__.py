"""One study from image to printable meshes: :func:`reconstruct` with a :class:`ReconstructConfig`.

The CLI (``medrecon reconstruct``, ``demo``, ``batch``) and the napari plugin
call :func:`reconstruct`; :mod:`.phi` keeps identifiers out of its outputs and
:mod:`.preview` draws ``preview.png``.
"""

from medrecon.pipeline.config import DISCLAIMER, ReconstructConfig
from medrecon.pipeline.run import ReconstructResult, reconstruct, select_organs

__all__ = ["DISCLAIMER", "ReconstructConfig", "ReconstructResult", "reconstruct", "select_organs"]
