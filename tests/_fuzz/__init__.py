"""Seeded fuzzing of medrecon's image readers (DICOM, NIfTI, NRRD) and label inputs (SEG, RTSTRUCT).

:mod:`._dicom`, :mod:`._nifti`, :mod:`._nrrd`, :mod:`._seg` and :mod:`._rtstruct`
mutate copies of real and synthetic test files;
:mod:`.worker` loads one mutated case under ``tracemalloc`` and classifies the
outcome; :mod:`.campaign` runs many cases in worker processes with a time bound
per case. Every case is reproducible from its spec (source, mutation, seed)::

    python tests/_fuzz/worker.py --case '{"source": "sample", "mutation": "truncate", "seed": 7}'
"""
