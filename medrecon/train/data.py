"""Training data: labelled volumes brought onto a model grid, from any source.

Sources: synthetic phantoms (:func:`medrecon.phantom.make_phantom`, one per
seed; an endless stream of new seeds with :class:`PhantomStream`), the Medical
Segmentation Decathlon layout (``dataset.json``, ``imagesTr/``, ``labelsTr/``),
the nnU-Net raw layout (``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``)
and a plain folder of pairs (``<case>_image.*`` + ``<case>_label.*``, or
``images/`` + ``labels/`` with matching names).

Every case goes through the same :class:`~medrecon.models.grid.GridMap` and
intensity window as inference (MONAI ``ScaleIntensityRange``), so training and
inference agree voxel for voxel. Label ids are mapped to output channels; ids
the model does not predict become background.

Tensors: image (I, J, K) float32 in the card's value range; labels (I, J, K)
int64 channel indices.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrecon.errors import InputError
from medrecon.io.formats import DICOM, format_by_name, strip_suffix
from medrecon.models.grid import GridMap
from medrecon.volume import LabelMap, Volume

#: Training seeds start here; seeds 0-19 are the held-out evaluation phantoms.
FIRST_TRAIN_SEED = 1000
EVAL_SEEDS = tuple(range(20))


@dataclass(frozen=True, eq=False)
class Case:
    """One training volume on the model grid.

    Attributes
    ----------
    image : torch.Tensor
        (I, J, K) float32, normalised.
    labels : torch.Tensor
        (I, J, K) output-channel indices: int64, or uint8 for cases from a
        :class:`PhantomStream` with fewer than 256 channels.
    name : str
        Where it came from (seed or file).
    foreground : torch.Tensor or None
        (F, 3) int64 voxel indices drawn at random from the labelled voxels (where
        training samples are centred), or None when there are none.
    """

    image: object
    labels: object
    name: str
    foreground: object = None


def to_case(volume: Volume, labels: LabelMap, *, spacing, orientation: str,
            window: tuple[float, float], value_range: tuple[float, float],
            channel_ids: Sequence[int], name: str = "") -> Case:
    """Bring an image and its label map onto the model grid.

    The labels are first resampled onto the image grid if they differ.
    """
    import torch
    from monai.transforms import ScaleIntensityRange

    if not labels.same_grid(volume):
        labels = labels.resample_like(volume)
    grid = GridMap.build(volume.affine, volume.shape, spacing=spacing, orientation=orientation)
    image = grid.image_to_model(volume.array, fill=window[0])
    scale = ScaleIntensityRange(a_min=window[0], a_max=window[1], b_min=value_range[0],
                                b_max=value_range[1], clip=True)
    image = torch.as_tensor(scale(image)).float().contiguous()
    ids = grid.labels_to_model(np.asarray(labels.array).astype(np.int64))
    lut = np.zeros(int(max(int(ids.max()), max(channel_ids))) + 1, dtype=np.int64)
    for channel, label in enumerate(channel_ids):
        lut[label] = channel
    channels = torch.from_numpy(lut[ids.numpy()])
    return Case(image=image, labels=channels, name=name, foreground=foreground_sample(channels))


#: Foreground positions kept per case.
FOREGROUND_SAMPLE = 50_000


def foreground_sample(labels, n: int = FOREGROUND_SAMPLE, *, seed: int = 0):
    """Draw ``n`` voxel indices (with replacement) among the non-zero labels, or None."""
    import torch

    fg = torch.nonzero(labels > 0)
    if not len(fg):
        return None
    pick = torch.randint(0, len(fg), (n,), generator=torch.Generator().manual_seed(seed))
    return fg[pick]


def phantom_pair(seed: int, config=None) -> tuple[Volume, LabelMap]:
    """Make the phantom of ``seed`` (CT in HU and its TotalSegmentator labels)."""
    from medrecon.phantom import make_phantom

    return make_phantom(int(seed), config=config)


def _phantom_arrays(seed: int, config=None) -> tuple:
    # runs in worker processes: plain arrays and dicts pickle, frozen mappings do not
    volume, labels = phantom_pair(seed, config)
    return (np.asarray(volume.array), volume.affine, np.asarray(labels.array), dict(labels.names))


def _phantom_case(seed: int, config, convert) -> tuple:
    volume, labels = phantom_pair(seed, config)
    return _pack(convert(volume, labels, name=f"phantom seed {seed}"))


def _pack(case: Case) -> tuple:
    """Turn a case into NumPy arrays for the trip from a worker process.

    Unpickling torch tensors runs ``torch.load`` on each storage while holding the
    GIL (70 ms for a 230 x 230 x 106 case), which stalls the training thread;
    NumPy arrays unpickle as one copy (5 ms). Labels travel as uint8 when they fit.
    """
    import torch

    labels = case.labels
    if int(labels.max()) < 256:
        labels = labels.to(torch.uint8)
    fg = None if case.foreground is None else case.foreground.numpy()
    return case.image.numpy(), labels.numpy(), fg, case.name


def _unpack(packed: tuple) -> Case:
    import torch

    image, labels, fg, name = packed
    return Case(image=torch.from_numpy(image), labels=torch.from_numpy(labels), name=name,
                foreground=None if fg is None else torch.from_numpy(fg))


def _init_worker() -> None:
    # one thread per worker process: the workers already fill the cores
    os.environ["OMP_NUM_THREADS"] = "1"
    # below the training process: on a GPU its thread launches the kernels, and
    # when it waits for a core the GPU waits too
    with contextlib.suppress(OSError):
        os.nice(10)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # phantom-only workers do not need torch
        pass


def _process_pool(workers: int):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                               initializer=_init_worker)


def phantom_pairs(seeds: Iterable[int], config=None, *, workers: int = 1) -> Iterator[tuple[Volume, LabelMap]]:
    """Yield the phantoms of ``seeds`` in order, made by ``workers`` processes."""
    seeds = [int(s) for s in seeds]
    if workers <= 1:
        for seed in seeds:
            yield phantom_pair(seed, config)
        return
    with _process_pool(workers) as pool:
        for arr, aff, lab, names in pool.map(_phantom_arrays, seeds, [config] * len(seeds)):
            yield (Volume(arr, aff, modality="CT", units="HU"), LabelMap(lab, aff, names=names))


class PhantomStream:
    """Endless new training phantoms, generated in background processes.

    Parameters
    ----------
    start : int
        First seed (>= :data:`FIRST_TRAIN_SEED` so evaluation seeds stay unseen).
    convert : callable
        ``convert(volume, labels, name=...) -> Case``, picklable (a module-level function
        or a ``functools.partial`` of one such as :func:`to_case`): it runs in the workers.
    workers : int
        Background processes (0: a thread, for tiny phantoms and tests).
    config : PhantomConfig, optional
        Passed to ``make_phantom``.
    """

    def __init__(self, start: int, convert, *, workers: int = 1, config=None) -> None:
        if start < FIRST_TRAIN_SEED:
            raise ValueError(f"training seeds must be >= {FIRST_TRAIN_SEED} (0-19 are held out), "
                             f"got {start}")
        self._next = int(start)
        self._convert = convert
        self._config = config
        if workers > 0:
            self._pool = _process_pool(workers)
        else:
            self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: list[tuple[int, Future]] = [self._submit() for _ in range(max(1, 2 * workers))]

    def _submit(self) -> tuple[int, Future]:
        seed = self._next
        self._next += 1
        return seed, self._pool.submit(_phantom_case, seed, self._config, self._convert)

    def _case(self, seed: int, fut: Future) -> Case:
        return _unpack(fut.result())

    def ready(self) -> Case | None:
        """Return a finished new case if one is ready (never blocks), else None."""
        for i, (seed, fut) in enumerate(self._pending):
            if fut.done():
                self._pending[i] = self._submit()
                return self._case(seed, fut)
        return None

    def take(self) -> Case:
        """Return the next case, waiting for it if needed."""
        seed, fut = self._pending.pop(0)
        self._pending.append(self._submit())
        return self._case(seed, fut)

    @property
    def next_seed(self) -> int:
        """The seed the stream will generate next (for resuming)."""
        return self._next

    def close(self) -> None:
        """Stop the background threads (pending phantoms are dropped)."""
        for _, fut in self._pending:
            fut.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------- file layouts
def _strip(name: str) -> str:
    return strip_suffix(name, dicom=False)


def _images(folder: Path) -> list[Path]:
    """Image files (NIfTI, NRRD, MetaImage) of ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")
                  and format_by_name(p.name) not in (None, DICOM))


def msd_pairs(root: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(image, label) paths of a Medical Segmentation Decathlon task folder."""
    root = Path(root)
    meta = root / "dataset.json"
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{root}: cannot read dataset.json of the Decathlon layout: {exc}") from exc
    pairs = []
    for entry in data.get("training", []):
        img, lab = root / entry["image"], root / entry["label"]
        if not img.is_file():  # MSD 4D images are split into _0000 files by some tools
            stem = _strip(img.name)
            alt = img.with_name(f"{stem}_0000{img.name[len(stem):]}")
            img = alt if alt.is_file() else img
        pairs.append((img, lab))
    return _checked(pairs, root, "dataset.json 'training'")


def nnunet_pairs(root: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(image, label) paths of an nnU-Net raw dataset (first channel ``_0000`` only)."""
    root = Path(root)
    labels_dir = root / "labelsTr"
    if not labels_dir.is_dir():
        raise InputError(f"{root}: no labelsTr/ folder (nnU-Net raw layout)")
    pairs = []
    for lab in _images(labels_dir):
        case = _strip(lab.name)
        ext = lab.name[len(case):]
        pairs.append((root / "imagesTr" / f"{case}_0000{ext}", lab))
    return _checked(pairs, root, "labelsTr/")


def folder_pairs(root: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(image, label) paths of a plain folder: ``X_image.*``/``X_label.*`` or ``images/``+``labels/``."""
    root = Path(root)
    if (root / "images").is_dir() and (root / "labels").is_dir():
        labels = {_strip(p.name): p for p in _images(root / "labels")}
        pairs = [(p, labels[_strip(p.name)]) for p in _images(root / "images")
                 if _strip(p.name) in labels]
    else:
        files = _images(root)
        labels = {_strip(p.name)[: -len("_label")]: p for p in files if _strip(p.name).endswith("_label")}
        pairs = [(p, labels[_strip(p.name)[: -len("_image")]]) for p in files
                 if _strip(p.name).endswith("_image") and _strip(p.name)[: -len("_image")] in labels]
    return _checked(pairs, root, "image/label pairs")


def _checked(pairs: list[tuple[Path, Path]], root: Path, what: str) -> list[tuple[Path, Path]]:
    if not pairs:
        raise InputError(f"{root}: found no {what}; see 'medrecon train --help' for the layouts")
    for img, lab in pairs:
        for p in (img, lab):
            if not p.exists():
                raise InputError(f"{root}: {p.name} listed in {what} does not exist")
    return pairs


def dataset_pairs(root: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Detect the layout of ``root`` (MSD, nnU-Net raw, plain pairs) and list its pairs."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder of training data")
    if (root / "dataset.json").is_file() and "training" in (root / "dataset.json").read_text(encoding="utf-8"):
        return msd_pairs(root)
    if (root / "labelsTr").is_dir():
        return nnunet_pairs(root)
    return folder_pairs(root)


def load_pairs(pairs: Iterable[tuple[Path, Path]], convert) -> list[Case]:
    """Load and convert each (image, label) pair with ``convert(volume, labels, name=...)``."""
    from medrecon.io import load, load_labels

    return [convert(load(img), load_labels(lab), name=img.name) for img, lab in pairs]
