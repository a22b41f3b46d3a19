"""Many studies at once: discovery, local or Dask execution, resume, failure records, summary.

``medrecon batch INPUT -o OUTDIR`` is :func:`discover_studies` then
:func:`run_batch`; each study goes through :func:`medrecon.pipeline.reconstruct`.
"""

from medrecon.batch.discover import Study, discover_studies, read_study_list
from medrecon.batch.records import DONE, FAILED
from medrecon.batch.runner import BatchSummary, process_study, run_batch

__all__ = ["DONE", "FAILED", "BatchSummary", "Study", "discover_studies", "process_study",
           "read_study_list", "run_batch"]
