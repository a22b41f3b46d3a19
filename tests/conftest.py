import os

# Two busy-waiting BLAS/OpenMP threads on a loaded 2-core machine run far slower than one.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Real test data copied from ../shared/realdata (provenance in data/README.md)."""
    return DATA


@pytest.fixture(scope="session")
def totalseg_dir() -> Path:
    return DATA / "totalseg"


@pytest.fixture(scope="session")
def dcmqi_dir() -> Path:
    return DATA / "dcmqi_ct3"
