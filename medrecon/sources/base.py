"""What every label source shares: a study in, a :class:`~medrecon.volume.LabelMap` out.

A label source is anything that labels a study: a segmentation network
(:mod:`.network`), the HU-threshold presets (:mod:`.presets`), a segmentation
the user already has (:mod:`.imported`); engines and interactive tools fit the
same shape. It is built from what the user asked for (see
:func:`medrecon.sources.resolve_source`), holds its own settings, and does its
work in :meth:`LabelSource.segment`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from medrecon.progress import ProgressFn
from medrecon.volume import LabelMap, Volume


@runtime_checkable
class LabelSource(Protocol):
    """A way to get organ labels for a study.

    Attributes
    ----------
    kind : str
        What sort of source this is: ``"network"``, ``"preset"``, ``"imported"`` or
        ``"engine"`` (a pretrained nnU-Net model run by nnunetv2). Every kind but ``"preset"`` and
        ``"imported"`` counts as a model: its organs must pass the plausibility
        checks (:mod:`medrecon.sources.plausibility`) to be meshed.

    Notes
    -----
    Two optional members, looked up by the pipeline:

    - ``modality``: the imaging modality the source needs (``"MR"`` for an MR
      engine, ``""`` for any); without it, every source but imported labels needs
      a CT and refuses other studies before running;
    - ``segment_scored(volume, *, progress=None)``: the labels with the model's
      own confidence per organ, a :class:`medrecon.models.ScoredLabels`; the
      plausibility checks use it.
    """

    kind: str

    def segment(self, volume: Volume, *, progress: ProgressFn | None = None) -> LabelMap:
        """Label ``volume``.

        Parameters
        ----------
        volume : Volume
            The study, (I, J, K), LPS affine.
        progress : ProgressFn, optional
            Called with (stage, fraction); may raise ``Cancelled``.

        Returns
        -------
        LabelMap
            Labels with names, on ``volume``'s grid.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """Provenance for the report: ``kind``, ``name`` and ``version``, plus the source's own details.

        Values are JSON-ready; ``version`` is ``None`` where the source has none.
        """
        ...
