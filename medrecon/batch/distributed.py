"""Running a batch on a Dask distributed cluster (``--scheduler ADDRESS|local``).

Each study is one task, ``client.submit(process_study, ...)`` with retries: if
a worker dies under a study, the scheduler gives the task to another worker
(and ``retries`` covers errors raised outside the study's own handling). The
workers write the study outputs themselves, so on a real cluster the output
folder must be on a file system every worker and this machine can reach (NFS,
Lustre, a mounted bucket), and every worker needs medrecon installed::

    dask scheduler                      # on the head node -> tcp://head:8786
    dask worker tcp://head:8786 --nworkers 4 --nthreads 1   # on each node
    medrecon batch /shared/studies -o /shared/out --scheduler tcp://head:8786

Resume and failure records work as in local runs: ``DONE.json`` last,
``FAILED.json`` for failures, unfinished folders redone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from medrecon.batch.discover import Study
from medrecon.batch.records import clear_outputs, failed_record, write_record
from medrecon.errors import require
from medrecon.pipeline.config import ReconstructConfig

#: Extra attempts for a study whose task errors or whose worker dies.
RETRIES = 2


def run_dask(
    todo: Sequence[Study],
    outdir: Path,
    config: ReconstructConfig,
    *,
    scheduler: str,
    workers: int = 1,
    study_fn: Callable[[Study, str, ReconstructConfig], dict],
    processes: bool = True,
) -> Iterator[dict]:
    """Submit ``todo`` to a Dask cluster and yield each study's record as it finishes.

    Parameters
    ----------
    todo : sequence of Study
        Studies to run.
    outdir : Path
        Batch output folder (shared with the workers).
    config : ReconstructConfig
        Settings for every study.
    scheduler : str
        ``"local"`` (a LocalCluster on this machine with ``workers`` workers of
        one thread) or a scheduler address such as ``tcp://head:8786``.
    workers : int
        Workers of the LocalCluster.
    study_fn : callable
        Per-study function, picklable and top-level: :func:`medrecon.batch.runner.process_study`
        as passed by :func:`~medrecon.batch.runner.run_batch` (which imports this module).
    processes : bool
        LocalCluster workers as processes (True) or threads (False).
    """
    require("dask.distributed", extra="distributed", feature="--scheduler (Dask)", package="dask")
    from dask.distributed import Client, LocalCluster, as_completed

    if not todo:
        return
    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = [client.submit(study_fn, study, str(outdir / study.key), config,
                                 key=f"medrecon-study-{uuid.uuid4().hex[:8]}-{study.key}",
                                 pure=False, retries=RETRIES)
                   for study in todo]
        by_key = {fut.key: study for fut, study in zip(futures, todo, strict=True)}
        for fut in as_completed(futures):
            study = by_key[fut.key]
            try:
                yield fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost task is recorded as the study's failure
                folder = outdir / study.key
                clear_outputs(folder)
                record = failed_record(study.key, study.source, f"Dask task failed: {type(exc).__name__}: {exc}", 0.0)
                folder.mkdir(parents=True, exist_ok=True)
                write_record(folder, record)
                yield record
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

