"""Run a medrecon job in a napari thread worker with a progress bar and Cancel.

The job gets a ``progress`` callback (see :mod:`medrecon.progress`). It forwards
(stage, fraction) to the GUI thread through a Qt signal (queued across
threads), and raises :class:`~medrecon.errors.Cancelled` once Cancel was
pressed, which medrecon's long loops let through to stop the job cleanly.

Showing the result happens in the GUI thread. A result handler may return an
iterator of steps (adding one layer each); the runner then takes them a few
milliseconds at a time and pauses between batches, so that other events are
handled between two layers, not after several: the viewer keeps drawing and
answering while dozens of layers go in. With :meth:`JobRunner.repaint_apart`,
the canvas does not repaint during a batch but in a turn of its own after it,
with a pause on either side, so that a layer addition and a redraw of the scene
are two short freezes, not one long one. The job is "done" only when the last
step has run; an error in any step, or Cancel, ends it there (the steps get to
tidy up: a generator's ``finally`` runs at once).

While a job runs, the objects that existed before it are kept out of Python's
full garbage collections (:func:`gc.freeze`), and so are those each batch of
result steps made: a full collection walks every object of napari and Qt,
0.15-0.5 s with the GIL held, and a job that makes many objects (dozens of
layers) triggers several. Young objects are still collected; the frozen ones
return to the collector when the job ends.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtGui import QKeySequence, QShortcut
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from medrecon.errors import Cancelled, MedreconError

#: Milliseconds of result steps run between two turns of the Qt event loop (a
#: step that takes longer still runs whole, alone).
STEP_BUDGET_MS = 20
#: Milliseconds from a batch of result steps to the repaint it asks for, and from
#: that repaint to the next batch. Each is a freeze of the UI; between two of them,
#: the timers that fell due meanwhile fire. A shorter wait does not let them:
#: Qt may fire a timer up to 5 % of its interval late (a 100 ms one, 5 ms), and
#: a timer of ours that falls due before that fires first.
STEP_PAUSE_MS = 15

#: Jobs running now, in all runners (the collector is frozen while there is one).
_RUNNING_JOBS = 0


def _freeze_gc() -> None:
    global _RUNNING_JOBS
    _RUNNING_JOBS += 1
    if _RUNNING_JOBS == 1:
        gc.freeze()


def _unfreeze_gc() -> None:
    global _RUNNING_JOBS
    _RUNNING_JOBS = max(0, _RUNNING_JOBS - 1)
    if _RUNNING_JOBS == 0:
        gc.unfreeze()


def _set_updates(widget: QWidget, enabled: bool) -> None:
    """``widget.setUpdatesEnabled(enabled)``, unless the widget is gone (its viewer closed)."""
    try:
        widget.setUpdatesEnabled(enabled)
    except RuntimeError:  # the C++ widget was deleted
        pass


def canvas_widget(viewer) -> QWidget | None:
    """Return the Qt widget that draws ``viewer``'s canvas, or ``None`` where napari has none (no window)."""
    from napari_plugin._view import unproxied

    try:
        return unproxied(viewer).window._qt_viewer.canvas.native  # napari's own attribute path (private)
    except AttributeError:
        return None


class JobRunner(QObject):
    """Run-button, Cancel-button, progress bar and status line for one job at a time.

    Enter (Return) anywhere in ``parent`` presses the run button.

    Attributes
    ----------
    widget : QWidget
        Holds the Run/Cancel buttons, the progress bar and the status line.
    worker : FunctionWorker or None
        The running (or last) worker.
    """

    progressed = Signal(str, float)
    #: Emitted after every job with its outcome: "done", "cancelled" or "failed".
    job_finished = Signal(str)

    def __init__(self, run_text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.widget = QWidget(parent)
        self.run_button = QPushButton(run_text)
        self.run_button.setToolTip(f"{run_text} with the settings above (Enter); runs in the background")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job at its next step; nothing is added to the viewer")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setToolTip("Progress of the running job")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self.widget)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        self.worker = None
        self.outcome = ""
        self._cancel = threading.Event()
        self._steps: Iterator[Any] | None = None
        self._shown = 0
        self._frozen = False
        self._canvas: QWidget | None = None
        self.progressed.connect(self._show_progress)
        self.cancel_button.clicked.connect(self.cancel)
        if parent is not None:
            for key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                shortcut = QShortcut(QKeySequence(key), parent)
                shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
                shortcut.activated.connect(self._enter)

    def repaint_apart(self, canvas: QWidget | None) -> None:
        """Repaint ``canvas`` in a turn of the event loop of its own after each batch of result steps.

        Adding a layer and redrawing the scene are each a freeze of the UI (on
        software OpenGL, 0.1 s and more with dozens of meshes); back to back they
        are one of twice the length. ``None``: repaint as Qt does.
        """
        self._canvas = canvas

    @property
    def running(self) -> bool:
        """True while a job runs or its result is being shown."""
        return self._steps is not None or (self.worker is not None and self.worker.is_running)

    def run_on_enter(self, widget: QWidget) -> None:
        """Make Return/Enter in any text or number field of ``widget`` press the run button."""
        from qtpy.QtWidgets import QLineEdit

        for field in widget.findChildren(QLineEdit):  # spin boxes' editors included
            field.returnPressed.connect(self._enter)

    def _enter(self) -> None:
        if self.run_button.isEnabled() and not self.running:
            self.run_button.click()

    def refuse(self, exc: BaseException) -> None:
        """Say why a job could not start, in the status line and as a notification."""
        from napari.utils.notifications import show_error

        text = str(exc) if isinstance(exc, MedreconError) else f"{type(exc).__name__}: {exc}"
        self.outcome = "refused"
        self.progress_bar.setValue(0)
        self.status.setText(f"not started: {text}")
        show_error(text)

    def start(self, job: Callable[..., Any], on_result: Callable[[Any], None], *args: Any, **kwargs: Any):
        """Run ``job(*args, progress=callback, **kwargs)`` in a thread worker.

        ``on_result`` receives the return value in the GUI thread; it may return
        an iterator of steps, run a few at a time between Qt events. Errors are
        shown in the status line and as napari notifications with medrecon's message.
        """
        from napari.qt.threading import create_worker

        if self.running:
            raise MedreconError("a job is already running; wait for it or press Cancel")
        self._cancel = threading.Event()
        cancel = self._cancel

        def progress(stage: str, fraction: float) -> None:
            if cancel.is_set():
                raise Cancelled("cancelled by the user")
            self.progressed.emit(stage, float(fraction))

        # errors are shown by _errored; do not also re-raise them in the GUI thread
        worker = create_worker(
            job, *args, progress=progress, _start_thread=False, _ignore_errors=True, **kwargs
        )
        worker.returned.connect(lambda result: self._returned(result, on_result))
        worker.errored.connect(self._errored)
        worker.finished.connect(self._finished)
        self.worker = worker
        self.outcome = ""
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setValue(0)
        self.status.setText("starting...")
        _freeze_gc()
        self._frozen = True
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running job to stop at its next progress report (or result step)."""
        if self.running:
            self._cancel.set()
            self.status.setText("cancelling...")

    def _show_progress(self, stage: str, fraction: float) -> None:
        if not self._cancel.is_set():
            self.progress_bar.setValue(int(round(1000 * fraction)))
            self.status.setText(f"{stage}: {100 * fraction:.0f}%")

    def _returned(self, result: Any, on_result: Callable[[Any], Any]) -> None:
        try:
            steps = on_result(result)
        except Exception as exc:  # noqa: BLE001 - whatever stops the result being shown, say so
            self._errored(exc)
            return
        if isinstance(steps, Iterator):
            self._steps = steps
            self._shown = 0
            self.status.setText("adding the results to the viewer...")
            QTimer.singleShot(STEP_PAUSE_MS, self._next_steps)
            return
        self._done()

    def _next_steps(self) -> None:
        if self._steps is None:
            return
        if self._cancel.is_set():
            self._close_steps()
            self._errored(Cancelled("cancelled by the user"))
            self._end()
            return
        canvas = self._canvas
        if canvas is not None:
            _set_updates(canvas, False)  # its repaint comes in a turn of its own, after the batch
        deadline = time.perf_counter() + STEP_BUDGET_MS / 1000
        ended: BaseException | None = None
        try:
            while time.perf_counter() < deadline:
                if next(self._steps) is not None:  # a step that added a layer
                    self._shown += 1
        except StopIteration:
            ended = StopIteration()
        except Exception as exc:  # noqa: BLE001 - a failed step fails the job, in words
            ended = exc
        if ended is not None:
            if canvas is not None:  # as below: after the timers that fell due during the batch
                QTimer.singleShot(STEP_PAUSE_MS, lambda: _set_updates(canvas, True))
            self._close_steps()
            if isinstance(ended, StopIteration):
                self._done()
            else:
                self._errored(ended)
            self._end()
            return
        if self._frozen:
            gc.freeze()  # this batch's objects too: else collections walk every layer made so far
        self.status.setText(f"adding the results to the viewer: {self._shown} layers so far")
        QTimer.singleShot(STEP_PAUSE_MS, self._repaint_then_next)

    def _close_steps(self) -> None:
        """Drop the result steps, letting them tidy up (a generator's ``finally``) now."""
        steps, self._steps = self._steps, None
        close = getattr(steps, "close", None)
        if close is not None:
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - tidying up failed: say so, the job ends anyway
                from napari.utils.notifications import show_error

                show_error(f"{type(exc).__name__} while stopping: {exc}")

    def _repaint_then_next(self) -> None:
        canvas = self._canvas
        if canvas is not None:
            _set_updates(canvas, True)
            try:
                canvas.repaint()  # now, then the pause: not whenever Qt gets to it
            except RuntimeError:  # the C++ widget was deleted (the viewer closed)
                pass
        QTimer.singleShot(STEP_PAUSE_MS, self._next_steps)

    def _done(self) -> None:
        self.outcome = "done"
        self.progress_bar.setValue(1000)
        self.status.setText("done")

    def _errored(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error, show_info

        if isinstance(exc, Cancelled):
            self.outcome = "cancelled"
            self.status.setText("cancelled")
            show_info("medrecon: job cancelled")
        else:
            self.outcome = "failed"
            # medrecon's own errors carry the message the CLI prints
            text = str(exc) if isinstance(exc, MedreconError) else f"{type(exc).__name__}: {exc}"
            self.status.setText(f"failed: {text}")
            show_error(text)
        self.progress_bar.setValue(0)

    def _finished(self) -> None:
        if self._steps is None:  # else the last result step ends the job
            self._end()

    def _end(self) -> None:
        if self._frozen:
            self._frozen = False
            _unfreeze_gc()
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.job_finished.emit(self.outcome or "failed")
