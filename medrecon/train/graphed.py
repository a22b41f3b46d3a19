"""Training batches on a GPU as replayed CUDA graphs, made one step ahead.

A :class:`~medrecon.train.sampler.Batcher` batch is a few dozen small device
operations. Launched one by one from Python they cost the host more time than
the GPU spends on them, and that host time is taken from the training step.
:class:`GraphedBatches` records each kind of batch (one per plane) once as a
CUDA graph and replays it, one launch per batch, on a side stream while the
previous training step runs; the batcher's own device generator is registered
with the graphs, so every replay draws fresh random numbers.

Falls back to calling the batcher directly where graphs are not available
(CPU, or a PyTorch without generator registration), with the same batches'
distribution either way.
"""

from __future__ import annotations

import warnings

from medrecon.train.sampler import Batcher


class GraphedBatches:
    """Callable returning the next (x, y) batch of ``batcher``, produced ahead on the GPU.

    Parameters
    ----------
    batcher : Batcher
        Source of batches; its store must be on a CUDA device.
    channels_last : bool
        Return 2D image batches in channels-last memory order (what a
        channels-last network wants; saves a copy in the step).
    warmup : int
        Eager batches per kind before recording (lets lazy CUDA initialisation
        happen outside the capture).
    """

    def __init__(self, batcher: Batcher, *, channels_last: bool = False, warmup: int = 2) -> None:
        import torch

        if batcher.device.type != "cuda":
            raise ValueError("GraphedBatches needs a batcher on a CUDA device")
        self.batcher = batcher
        self.channels_last = channels_last
        self.warmup = warmup
        self.stream = torch.cuda.Stream(device=batcher.device)
        self._graphs: dict[int, tuple] = {}
        self._pending = None  # (kind, event) of the batch being made on the side stream
        for kind in range(batcher.kinds):  # record every kind now, not inside a timed step
            self._graph(kind)

    @classmethod
    def wrap(cls, batcher: Batcher, **kwargs):
        """``GraphedBatches(batcher)`` where CUDA graphs can hold the batcher, else ``batcher``."""
        import torch

        if batcher.device.type != "cuda":
            return batcher
        if not hasattr(torch.cuda.CUDAGraph(), "register_generator_state"):
            warnings.warn("this PyTorch cannot record random generators in CUDA graphs; training "
                          "batches are made eagerly (slower)", RuntimeWarning, stacklevel=2)
            return batcher
        return cls(batcher, **kwargs)

    def _graph(self, kind: int):
        import torch

        if kind not in self._graphs:
            side = self.stream
            side.wait_stream(torch.cuda.current_stream(self.batcher.device))
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.batcher.make(kind)
            graph = torch.cuda.CUDAGraph()
            graph.register_generator_state(self.batcher.dgen)
            with torch.cuda.graph(graph, stream=side):
                x, y = self.batcher.make(kind)
            self._graphs[kind] = (graph, x, y)
        return self._graphs[kind]

    def _launch(self, after=None) -> None:
        """Start making the next batch on the side stream, once ``after`` (an event) has passed."""
        import torch

        kind = self.batcher.next_kind()
        graph = self._graph(kind)[0]
        if after is not None:
            self.stream.wait_event(after)
        with torch.cuda.stream(self.stream):
            graph.replay()
        ready = torch.cuda.Event()
        ready.record(self.stream)
        self._pending = (kind, ready)

    def __call__(self):
        """Return the next batch, (x, y) as from ``Batcher``, and start making the one after."""
        import torch

        if self._pending is None:
            self._launch()
        kind, ready = self._pending
        main = torch.cuda.current_stream(self.batcher.device)
        main.wait_event(ready)
        _, x, y = self._graphs[kind]
        fmt = torch.channels_last if self.channels_last and x.ndim == 4 else torch.contiguous_format
        # copies on the main stream: the graph's output buffers are rewritten by the next replay
        x, y = x.clone(memory_format=fmt), y.clone()
        taken = torch.cuda.Event()
        taken.record(main)
        self._launch(after=taken)
        return x, y

    def add(self, case, *, replace: bool = True) -> None:
        """Swap ``case`` into the batcher's store once the batch being made has been cut."""
        import torch

        if self._pending is not None:
            torch.cuda.current_stream(self.batcher.device).wait_event(self._pending[1])
        # the next launch waits for an event recorded after these writes on the main stream
        self.batcher.add(case, replace=replace)
