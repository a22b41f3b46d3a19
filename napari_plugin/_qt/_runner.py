"""Run a medrecon job in a napari thread worker with a progress bar and Cancel.

The job gets a ``progress`` callback (see :mod:`medrecon.progress`). It forwards
(stage, fraction) to the GUI thread through a Qt signal (queued across
threads), and raises :class:`~medrecon.errors.Cancelled` once Cancel was
pressed, which medrecon's long loops let through to stop the job cleanly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from medrecon.errors import Cancelled, MedreconError


class JobRunner(QObject):
    """Run-button, Cancel-button, progress bar and status line for one job at a time.

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
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setTextVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
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
        self.progressed.connect(self._show_progress)
        self.cancel_button.clicked.connect(self.cancel)

    @property
    def running(self) -> bool:
        """True while a job runs."""
        return self.worker is not None and self.worker.is_running

    def start(self, job: Callable[..., Any], on_result: Callable[[Any], None], *args: Any, **kwargs: Any):
        """Run ``job(*args, progress=callback, **kwargs)`` in a thread worker.

        ``on_result`` receives the return value in the GUI thread. Errors are
        shown as napari notifications with medrecon's message.
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
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running job to stop at its next progress report."""
        if self.running:
            self._cancel.set()
            self.status.setText("cancelling...")

    def _show_progress(self, stage: str, fraction: float) -> None:
        if not self._cancel.is_set():
            self.progress_bar.setValue(int(round(1000 * fraction)))
            self.status.setText(f"{stage}: {100 * fraction:.0f}%")

    def _returned(self, result: Any, on_result: Callable[[Any], None]) -> None:
        try:
            on_result(result)
        except MedreconError as exc:
            self._errored(exc)
            return
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
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.job_finished.emit(self.outcome or "failed")
