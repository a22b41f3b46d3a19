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


@pytest.fixture(scope="session")
def small_phantom():
    """A small synthetic CT and its exact labels, ``(Volume, LabelMap)`` (96 x 96 x 32, seed 0)."""
    from medrecon.phantom import PhantomConfig, make_phantom

    return make_phantom(0, config=PhantomConfig(small=True))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The committed synthetic sample study (``sample_data/``: dicom/, labels.nii.gz, labels.json)."""
    return Path(__file__).parent.parent / "sample_data"
