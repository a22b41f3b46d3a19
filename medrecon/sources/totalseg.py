"""TotalSegmentator's pretrained weights as a label source (``--model totalsegmentator[:TASK]``).

TotalSegmentator's weights are nnU-Net v2 trained-model folders that its own
tools (``totalseg_download_weights``) put under ``$TOTALSEG_HOME_DIR/nnunet/results``
(default ``~/.totalsegmentator``; ``$TOTALSEG_WEIGHTS_PATH`` names the results
folder directly). medrecon reads those folders with nnunetv2
(:mod:`medrecon.sources.nnunet`); it neither imports nor calls the
TotalSegmentator package and never downloads anything.

A task is one or more nnU-Net datasets ("parts"), each predicting a
consecutive block of the task's classes; the parts' labels are merged into one
map, a later part winning where two overlap, as TotalSegmentator does
(``total``: organs 1-24, vertebrae 25-50, cardiac 51-68, muscles 69-91, ribs
92-117). The ``--fast`` variants are single 3 mm models. As TotalSegmentator
does, the image is given to the networks on its closest RAS axes, without
test-time mirroring. Class names come from TotalSegmentator's class maps
(``total``: the vocabulary itself, ``total_mr``: ``data/class_map_total_mr.json``)
and are given vocabulary ids by :func:`medrecon.labels.assign_ids`.

Parts, trainers and folder names follow TotalSegmentator's ``python_api.py``
and ``libs.py`` (v2.x).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medrecon.errors import InputError, ModelError
from medrecon.labels import name_key, total_class_map
from medrecon.progress import ProgressFn, scaled
from medrecon.volume import LabelMap, Volume


@dataclass(frozen=True)
class Task:
    """One TotalSegmentator task variant.

    Attributes
    ----------
    parts : tuple of (int, int)
        ``(nnU-Net dataset id, task class id of the part's label 1)`` per part.
    trainer : str
        Trainer name in the model folder name (``Trainer__nnUNetPlans__3d_fullres``).
    classes : str
        Which class map names the task's classes: ``"total"`` or ``"total_mr"``.
    download : str
        The ``totalseg_download_weights -t`` task that fetches these weights.
    """

    parts: tuple[tuple[int, int], ...]
    trainer: str
    classes: str
    download: str


#: (task, fast) -> Task.
TASKS: dict[tuple[str, bool], Task] = {
    ("total", False): Task(((291, 1), (292, 25), (293, 51), (294, 69), (295, 92)),
                           "nnUNetTrainerNoMirroring", "total", "total"),
    ("total", True): Task(((297, 1),), "nnUNetTrainer_4000epochs_NoMirroring", "total", "total_fast"),
    ("total_mr", False): Task(((850, 1), (851, 30)), "nnUNetTrainer_2000epochs_NoMirroring", "total_mr",
                              "total_mr"),
    ("total_mr", True): Task(((852, 1),), "nnUNetTrainer_2000epochs_NoMirroring", "total_mr", "total_fast_mr"),
}
PLANS_CONFIG = "nnUNetPlans__3d_fullres"


@functools.cache
def class_map(classes: str) -> dict[int, str]:
    """Task class id -> name: ``total`` is the vocabulary, ``total_mr`` the bundled MR map (50 classes)."""
    if classes == "total":
        return dict(total_class_map())
    text = resources.files("medrecon").joinpath("data", f"class_map_{classes}.json").read_text(encoding="utf-8")
    return {int(k): str(v) for k, v in json.loads(text).items()}


@functools.cache
def _vocabulary(classes: str) -> dict[int, tuple[int, str]]:
    from medrecon.sources.nnunet import vocabulary_table

    return vocabulary_table(class_map(classes), source=f"TotalSegmentator {classes}")


def results_dir() -> Path:
    """Where TotalSegmentator keeps its nnU-Net results folders (its ``get_weights_dir``)."""
    if os.environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"]).expanduser()
    if os.environ.get("TOTALSEG_HOME_DIR"):
        home = Path(os.environ["TOTALSEG_HOME_DIR"]).expanduser()
    else:
        home = (Path("/tmp") if str(Path.home()) == "/" else Path.home()) / ".totalsegmentator"
    return home / "nnunet" / "results"


def part_folder(results: Path, dataset: int, trainer: str) -> Path | None:
    """Find the trained-model folder of one part; ``None`` if its weights are not there."""
    candidates = sorted(results.glob(f"Dataset{dataset:03d}_*/*__{PLANS_CONFIG}"))
    candidates = [c for c in candidates if (c / "plans.json").is_file() and any(c.glob("fold_*/checkpoint_final.pth"))]
    preferred = [c for c in candidates if c.name == f"{trainer}__{PLANS_CONFIG}"]
    return (preferred or candidates or [None])[0]


@dataclass(frozen=True)
class TotalSegmentatorSource:
    """Organ labels from TotalSegmentator's pretrained nnU-Net weights.

    Attributes
    ----------
    task : str
        ``"total"`` (CT, 117 classes) or ``"total_mr"`` (MRI, 50 classes).
    fast : bool
        The 3 mm single-model variant.
    organs : tuple of str
        Limit the output to these structures (names or vocabulary ids), like
        TotalSegmentator's ``--roi_subset``: only the parts that hold them run.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    precision : str
        Network arithmetic (see :class:`~medrecon.sources.nnunet.NnunetSource`).
    """

    kind: ClassVar[str] = "engine"

    task: str = "total"
    fast: bool = False
    organs: tuple[str, ...] = ()
    device: str = "cpu"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if (self.task, self.fast) not in TASKS:
            known = sorted({t for t, _ in TASKS})
            raise InputError(f"unknown TotalSegmentator task {self.task!r}; medrecon runs {', '.join(known)}")
        object.__setattr__(self, "organs", tuple(str(o) for o in self.organs))

    @property
    def modality(self) -> str:
        """The modality the task was trained on (``"MR"`` for ``total_mr``, else ``"CT"``)."""
        return "MR" if self.task.endswith("_mr") else "CT"

    @property
    def spec(self) -> Task:
        """The task's parts, trainer and class map."""
        return TASKS[(self.task, self.fast)]

    def folders(self) -> list[tuple[int, int, Path]]:
        """``(dataset id, first class id, model folder)`` of each part that will run.

        Raises
        ------
        ModelError
            If any of those parts' weights are missing (one line saying how to fetch them).
        """
        spec, results = self.spec, results_dir()
        parts = self._parts_for_organs()
        found = [(d, first, part_folder(results, d, spec.trainer)) for d, first in parts]
        missing = [d for d, _, f in found if f is None]
        if missing:
            ids = ", ".join(f"Dataset{d:03d}" for d in missing)
            raise ModelError(
                f"TotalSegmentator's weights for '{self.task}'{' --fast' if self.fast else ''} are not in "
                f"{results} (missing {ids}): fetch them with 'totalseg_download_weights -t {spec.download}' "
                "(TotalSegmentator, any environment; set TOTALSEG_HOME_DIR to put them elsewhere) or install "
                "a release zip with 'nnUNetv2_install_pretrained_model_from_zip ZIP' "
                f"(nnUNet_results={results}); medrecon never downloads them")
        return [(d, first, f) for d, first, f in found if f is not None]

    def _parts_for_organs(self) -> list[tuple[int, int]]:
        spec = self.spec
        if not self.organs:
            return list(spec.parts)
        vocab = _vocabulary(spec.classes)
        wanted = {name_key(o) for o in self.organs}
        classes = {c for c, (label, name) in vocab.items() if name_key(name) in wanted or str(label) in wanted}
        bounds = [first for _, first in spec.parts] + [max(class_map(spec.classes)) + 1]
        chosen = [p for p, lo, hi in zip(spec.parts, bounds, bounds[1:], strict=False)
                  if any(lo <= c < hi for c in classes)]
        return chosen or list(spec.parts)  # unknown names: the pipeline's organ selection says so

    def segment(self, volume: Volume, *, progress: ProgressFn | None = None) -> LabelMap:
        """Run each part on ``volume`` and merge their labels into the task's class map."""
        from medrecon.models.nnunet import load_nnunet_folder
        from medrecon.sources.nnunet import _device, predict_volume, relabel

        parts = self.folders()
        classes = np.zeros(volume.shape, dtype=np.uint8)
        for n, (_dataset, first, folder) in enumerate(parts):
            model = load_nnunet_folder(folder, folds=("0",))
            part = predict_volume(model, volume, reorient_to_ras=True, mirroring=False,
                                  device=_device(self.device), precision=self.precision,
                                  progress=scaled(progress, n / len(parts), (n + 1) / len(parts)))
            hit = part > 0
            classes[hit] = (part[hit].astype(np.int64) + first - 1).astype(np.uint8)
        table = _vocabulary(self.spec.classes)
        if self.organs:
            wanted = {name_key(o) for o in self.organs}
            table = {c: v for c, v in table.items() if name_key(v[1]) in wanted or str(v[0]) in wanted} or table
            classes = np.where(np.isin(classes, list(table)), classes, 0).astype(np.uint8)
        return relabel(classes, table, volume.affine, source=os.fspath(volume.source) if volume.source else "")

    def describe(self) -> dict[str, Any]:
        """Engine, task, the datasets that ran, and one SHA-256 over their weights."""
        import hashlib

        from medrecon.models.nnunet import load_nnunet_folder
        from medrecon.sources.nnunet import _device, engine_version, precision_name

        parts = self.folders()
        digests = [f"{p.parent.name}/{p.name} {load_nnunet_folder(p, folds=('0',)).weights_sha256}\n"
                   for _, _, p in parts]
        return {
            "kind": self.kind, "name": "totalsegmentator", "version": None, "engine": engine_version(),
            "task": self.task, "fast": self.fast, "organs": list(self.organs),
            "datasets": [p.parent.name for _, _, p in parts], "trainer": self.spec.trainer,
            "precision": precision_name(self.precision, _device(self.device)),
            "weights_sha256": hashlib.sha256("".join(sorted(digests)).encode()).hexdigest(),
        }
