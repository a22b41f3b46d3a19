"""Progress reporting shared by the CLI (tqdm bars), the batch runner and napari.

Long-running functions take ``progress: ProgressFn | None``. They call it with a
stage name and a fraction in [0, 1]; the callback may raise
:class:`medrecon.errors.Cancelled` to stop the job cleanly (the napari Cancel
button does this).
"""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[str, float], None]


def report(progress: ProgressFn | None, stage: str, fraction: float) -> None:
    """Call ``progress`` if given, with ``fraction`` clipped to [0, 1]."""
    if progress is not None:
        progress(stage, min(1.0, max(0.0, float(fraction))))


def scaled(progress: ProgressFn | None, start: float, stop: float) -> ProgressFn | None:
    """Return a callback mapping a sub-task's [0, 1] onto [start, stop] of ``progress``."""
    if progress is None:
        return None

    def sub(stage: str, fraction: float) -> None:
        report(progress, stage, start + (stop - start) * fraction)

    return sub


class TqdmProgress:
    """A :data:`ProgressFn` drawing one tqdm bar (to stderr) for the CLI."""

    def __init__(self, desc: str = "medrecon", *, disable: bool = False) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=1000, desc=desc, disable=disable, leave=False,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")

    def __call__(self, stage: str, fraction: float) -> None:
        """Show ``stage`` and move the bar to ``fraction``."""
        self._bar.set_description_str(stage)
        self._bar.n = int(round(1000 * fraction))
        self._bar.refresh()

    def close(self) -> None:
        """Remove the bar."""
        self._bar.close()

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
