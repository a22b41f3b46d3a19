"""The trained 3D UNet baseline that the segmentation benchmarks set against the 2.5D model.

Its weights are not committed. :func:`ensure_baseline` trains it into a cache folder
(``.bench/unet3d_baseline``, ignored by git) the first time a benchmark needs it, with
the recipe of the published figures (BENCHMARKS.md, "Segmentation"): the default
model's data, grid, window, organs and loss (phantoms from seed 1000 up,
1.5 x 1.5 x 2.5 mm LPS, HU -300..400, 10 organs, MONAI Dice + cross-entropy), a MONAI
3D UNet (channels 16-128, strides 2-2-2, one residual unit), 96^3 patches, batch 4,
24 phantoms held and one swapped in every 10 steps, learning rate 2e-3 with 50 warm-up
steps, seed 0, stopped after 55 s of training.

The published baseline had its 55 s on one H100 (1804 steps). On a CPU the same 55 s
make far fewer steps: such a baseline scores lower, while its inference time (what
``bench_segment.py`` measures) is that of the same network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Where the benchmarks keep the baseline between runs (``/.bench/`` is in .gitignore).
CACHE = ROOT / ".bench" / "unet3d_baseline"
#: Training time of the published baseline (s).
SECONDS = 55.0
FILES = ("model.safetensors", "model.json", "metrics.json")


def default_workers() -> int:
    """Phantom processes: all cores but two, at most 12 (12 on the 16-core GPU host)."""
    return max(1, min(12, (os.cpu_count() or 2) - 2))


def baseline_config(*, seconds: float = SECONDS, workers: int | None = None,
                    steps: int = 100_000, tiny: bool = False):
    """The training settings of the 3D UNet baseline.

    Parameters
    ----------
    seconds : float
        Training time limit (the published baseline: 55 s).
    workers : int, optional
        Processes making phantoms; default :func:`default_workers`.
    steps : int
        Step limit (the time limit ends the published run first).
    tiny : bool
        Small phantoms, patches and batches: a smoke test of the scripts, not a baseline.

    Returns
    -------
    medrecon.train.segtrain.TrainConfig
    """
    from medrecon.train.loop import LoopConfig
    from medrecon.train.segtrain import DEFAULT_ORGANS, TrainConfig

    return TrainConfig(
        arch="unet3d", net_options={"channels": [16, 32, 64, 128], "strides": [2, 2, 2],
                                    "num_res_units": 1},
        labels=DEFAULT_ORGANS, cases=4 if tiny else 24, refresh_every=0 if tiny else 10,
        phantom_small=tiny, spacing_mm=(1.5, 1.5, 2.5), context=1,
        patch=32 if tiny else 96, batch=2 if tiny else 4,
        workers=default_workers() if workers is None else workers,
        loop=LoopConfig(steps=steps, lr=2e-3, warmup=2 if tiny else 50, max_seconds=seconds, seed=0),
    )


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` holds a model (``model.safetensors`` and ``model.json``)."""
    return (path / "model.safetensors").is_file() and (path / "model.json").is_file()


def copy_model(src: Path, dst: Path) -> None:
    """Copy a checkpoint's files (weights, card, held-out metrics when present)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def store(src: Path, dst: Path) -> None:
    """Copy the checkpoint in ``src`` to ``dst`` whole or not at all (a half copy is no cache)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        copy_model(src, partial)
        if dst.exists():
            shutil.rmtree(dst)
        partial.rename(dst)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def ensure_baseline(path: Path = CACHE, *, device: str = "auto", seconds: float = SECONDS,
                    workers: int | None = None) -> Path:
    """Return ``path``, training the baseline into it first when it holds none.

    Parameters
    ----------
    path : Path
        Checkpoint folder; default the cache ``.bench/unet3d_baseline``.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"`` for the training.
    seconds : float
        Training time limit.
    workers : int, optional
        Processes making phantoms; default :func:`default_workers`.
    """
    path = Path(path)
    if is_checkpoint(path):
        return path
    from medrecon.train.segtrain import train_segmenter

    config = baseline_config(seconds=seconds, workers=workers)
    print(f"no 3D UNet baseline in {path}: training one ({seconds:g} s of training on "
          f"{device}, after making {config.cases} phantoms)", flush=True)
    with tempfile.TemporaryDirectory(prefix="unet3d_baseline_") as work:
        _, history = train_segmenter(config, work, device=device, show_bar=False)
        store(Path(work), path)
    print(f"trained {len(history.losses)} steps in {history.seconds:.0f} s, loss "
          f"{history.losses[0]:.3f} -> {history.losses[-1]:.3f}; wrote {path}", flush=True)
    return path
