"""A segmentation network as a label source: the default model, a checkpoint or a MONAI bundle.

The network itself (loading, the model grid, sliding-window and 2.5D
inference) lives in :mod:`medrecon.models`; this module only holds the
user's choice and runs it. Nothing heavy is imported until a study is
segmented or the model is described.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from medrecon.progress import ProgressFn
from medrecon.volume import LabelMap, Volume


@dataclass(frozen=True)
class NetworkSource:
    """Organ labels from a segmentation network.

    Attributes
    ----------
    model : str or path-like
        ``"default"`` (the shipped model), a checkpoint folder or file, or a
        MONAI bundle folder (needs ``trust_bundle``).
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    planes : str
        ``"auto"`` (the planes the model was trained on), ``"axial"`` or ``"all"``.
    trust_bundle : bool
        Allow a MONAI bundle's configs (they contain code) to run.
    batch_size : int, optional
        Slices or windows per forward pass (default: chosen for the device).
    """

    kind: ClassVar[str] = "network"

    model: str | os.PathLike = "default"
    device: str = "cpu"
    planes: str = "auto"
    trust_bundle: bool = False
    batch_size: int | None = None

    def load(self):
        """Load the network (cached by path), e.g. ahead of time with its own progress message.

        Returns
        -------
        medrecon.models.checkpoint.SegModel

        Raises
        ------
        ModelError
            Unloadable, unsafe or untrusted model.
        """
        from medrecon.models import load_model

        return load_model(self.model, trust_bundle=self.trust_bundle)

    def segment(self, volume: Volume, *, progress: ProgressFn | None = None) -> LabelMap:
        """Label ``volume`` with the network (see :func:`medrecon.models.segment`)."""
        return self.segment_scored(volume, progress=progress).labels

    def segment_scored(self, volume: Volume, *, progress: ProgressFn | None = None):
        """Labels with the model's confidence per organ and the planes used.

        Returns
        -------
        medrecon.models.ScoredLabels
            See :func:`medrecon.models.segment_scored`.
        """
        from medrecon.models import segment_scored

        return segment_scored(volume, model=self.model, device=self.device, planes=self.planes,
                              trust_bundle=self.trust_bundle, batch_size=self.batch_size, progress=progress)

    def describe(self) -> dict[str, Any]:
        """Kind, name, version, architecture, label count, model grid and the card's (phantom) metrics."""
        card = self.load().card
        info: dict[str, Any] = {
            "kind": self.kind,
            "name": "default" if str(self.model) == "default" else Path(self.model).name,
            "arch": card.net.get("arch"),
            "version": card.training.get("version", card.to_dict().get("card_version")),
            "labels": len(card.channel_ids) - 1,
            "spacing_mm": list(card.spacing_mm),
        }
        if card.metrics:
            info["metrics"] = dict(card.metrics)
            # the card's figures describe its validation on phantoms, never the study at hand
            info["metrics_scope"] = ("model card: held-out synthetic phantoms (its validation), "
                                     "not measured on this study")
        return info
