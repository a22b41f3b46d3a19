"""An nnU-Net v2 trained-model folder as a label source (``--model nnunet:FOLDER``).

nnU-Net predicts on the image array as its reader returns it: the file's own
voxel order, read by SimpleITK as (z, y, x), with only the voxel spacing and no
direction; a model whose plans name ``NibabelIOWithReorient`` sees the image
reoriented to the closest RAS axes first. :func:`predict_volume` gives the
network exactly that from a :class:`~medrecon.volume.Volume` ((i, j, k), LPS
affine, the file's order for NIfTI/NRRD/MetaImage) and puts the labels back on
the volume's grid, so a flipped or oblique file gets the labels nnU-Net's own
predictor would write for it.

``dataset.json``'s label names become organ names through the label
vocabulary (:func:`medrecon.labels.assign_ids`): known structures get their
vocabulary id (liver 5, spleen 1, ...), others an id from 300 up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medrecon.progress import ProgressFn
from medrecon.volume import LabelMap, Volume


def predict_volume(model, volume: Volume, *, reorient_to_ras: bool, mirroring: bool, device: str = "cpu",
                   precision: str = "auto", progress: ProgressFn | None = None) -> np.ndarray:
    """Run an nnU-Net model on a volume; return its label values on the volume's grid.

    Parameters
    ----------
    model : medrecon.models.nnunet.NnunetModel
        A loaded trained-model folder.
    volume : Volume
        (I, J, K) image, LPS affine.
    reorient_to_ras : bool
        Give the network the image on its closest RAS axes (nibabel's
        ``as_closest_canonical``), as TotalSegmentator and nnU-Net's
        ``NibabelIOWithReorient`` do; otherwise in the volume's own voxel order.
    mirroring : bool
        Test-time mirroring along the axes the model allows.
    device : str
        Torch device.
    precision : str
        Network arithmetic (see :func:`medrecon.models.nnunet_predict.resolve_precision`).
    progress : ProgressFn, optional
        Called with (stage, fraction).

    Returns
    -------
    (I, J, K) ndarray of uint8 or uint16
        nnU-Net label values (``dataset.json``).
    """
    from medrecon.models.nnunet_predict import predict_array

    work = volume.reorient("RAS") if reorient_to_ras else volume
    zyx = np.asarray(work.array, dtype=np.float32).transpose(2, 1, 0)
    spacing = tuple(float(s) for s in work.spacing[::-1])
    labels = predict_array(model, zyx, spacing, mirroring=mirroring, device=device, precision=precision,
                           progress=progress).transpose(2, 1, 0)
    if reorient_to_ras:
        back = LabelMap(np.ascontiguousarray(labels), work.affine).reorient(volume.orientation)
        if not back.same_grid(volume, atol=1e-4):
            from medrecon.errors import GeometryError

            raise GeometryError(f"{volume.source or 'the volume'}: its labels could not be put back on its "
                                "grid from the RAS axes the model saw; is the affine degenerate?")
        labels = np.asarray(back.array)
    return np.ascontiguousarray(labels)


def vocabulary_table(names: dict[int, str], *, source: str) -> dict[int, tuple[int, str]]:
    """Map each model label value to ``(vocabulary id, name)`` by the vocabulary's id rule."""
    from medrecon.labels import assign_ids

    values = sorted(names)
    return dict(zip(values, assign_ids([names[v] for v in values], source=source), strict=True))


def relabel(values: np.ndarray, table: dict[int, tuple[int, str]], affine, *, source: str = "") -> LabelMap:
    """Turn model label values into a :class:`LabelMap` with vocabulary ids and names."""
    top = max([0, *table, *(int(v) for v in np.unique(values))])
    lut_dtype = np.uint16 if max([0, *(i for i, _ in table.values())]) > 255 else np.uint8
    lut = np.zeros(top + 1, dtype=lut_dtype)
    for value, (label, _name) in table.items():
        lut[value] = label
    return LabelMap(lut[values], affine, names={label: name for label, name in table.values()}, source=source)


@dataclass(frozen=True)
class NnunetSource:
    """Organ labels from an nnU-Net v2 trained-model folder.

    Attributes
    ----------
    folder : str or path-like
        ``.../DatasetXXX_Name/Trainer__Plans__Configuration`` (``plans.json``,
        ``dataset.json``, ``fold_N/checkpoint_final.pth``).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    mirroring : bool
        Test-time mirroring along the axes the trainer allows (nnU-Net's default: on).
    folds : tuple of str, optional
        Folds to ensemble (default: all with a checkpoint).
    precision : str
        Network arithmetic: ``"auto"`` (float16 on CUDA as nnU-Net; bfloat16 on
        CPUs with native bfloat16; else float32) or ``"float32"``.
    """

    kind: ClassVar[str] = "engine"

    folder: str | os.PathLike
    device: str = "cpu"
    mirroring: bool = True
    folds: tuple[str, ...] | None = None
    precision: str = "auto"

    @property
    def modality(self) -> str:
        """``"CT"`` when ``dataset.json`` names only CT channels, else ``""`` (any modality)."""
        import json

        try:
            channels = json.loads((Path(self.folder) / "dataset.json").read_text(encoding="utf-8"))
            names = {str(v).strip().upper() for v in dict(channels.get("channel_names", {})).values()}
        except (OSError, ValueError, TypeError, AttributeError):
            return ""
        return "CT" if names == {"CT"} else ""

    def load(self):
        """Load the model folder (cached); see :func:`medrecon.models.nnunet.load_nnunet_folder`."""
        from medrecon.models.nnunet import load_nnunet_folder

        return load_nnunet_folder(self.folder, folds=self.folds)

    def segment(self, volume: Volume, *, progress: ProgressFn | None = None) -> LabelMap:
        """Label ``volume`` as nnU-Net's own predictor would, with vocabulary ids and names."""
        model = self.load()
        values = predict_volume(model, volume, reorient_to_ras=model.reorient_to_ras,
                                mirroring=self.mirroring, device=_device(self.device),
                                precision=self.precision, progress=progress)
        table = vocabulary_table(model.label_names, source=f"{Path(self.folder).name}/dataset.json")
        return relabel(values, table, volume.affine, source=os.fspath(volume.source) if volume.source else "")

    def describe(self) -> dict[str, Any]:
        """Engine, model folder, trainer, configuration, folds and the weights' SHA-256."""
        model = self.load()
        return {
            "kind": self.kind, "name": "nnunet", "version": None, "engine": engine_version(),
            "task": Path(self.folder).parent.name or Path(self.folder).name,
            "model_folder": Path(self.folder).name, "trainer": model.trainer,
            "configuration": model.configuration.data_identifier, "folds": list(model.folds),
            "mirroring": bool(self.mirroring and model.mirror_axes), "precision": precision_name(
                self.precision, _device(self.device)),
            "weights_sha256": model.weights_sha256, "labels": len(model.label_names),
        }


def engine_version() -> str:
    """``"nnunetv2 <version>"`` of the installed engine."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"nnunetv2 {version('nnunetv2')}"
    except PackageNotFoundError:
        return "nnunetv2"


def precision_name(precision: str, device: str) -> str:
    """Name the network arithmetic ``precision`` means on ``device`` (``"float32"``, ``"bfloat16"``, ...)."""
    import torch

    from medrecon.models.nnunet_predict import resolve_precision

    dtype = resolve_precision(precision, torch.device(device))
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def _device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
