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


def require_tool(name: str, *, module: bool = False):
    """The trade's own tool ``name``: an executable's path, or with ``module=True`` the module.

    Outside CI a missing tool skips the test with the reason and how to install it;
    under ``CI=true`` (where ``make apt`` and the ``dev`` extra install them) it fails.
    """
    import importlib
    import shutil

    if module:
        try:
            return importlib.import_module(name)
        except ImportError:
            found, how = None, f"pip install {name} (the dev extra)"
    else:
        found, how = shutil.which(name), f"apt-get install {name} (make apt)"
    if found is None:
        reason = f"{name} is not installed: {how}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI must have it")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="session")
def prusa_slicer() -> str:
    """Path of PrusaSlicer's command line (Debian package ``prusa-slicer``)."""
    return require_tool("prusa-slicer")


@pytest.fixture(scope="session")
def admesh() -> str:
    """Path of ADMesh (Debian package ``admesh``)."""
    return require_tool("admesh")


@pytest.fixture(scope="session")
def lib3mf():
    """The lib3mf module (the 3MF consortium's reference reader)."""
    return require_tool("lib3mf", module=True)
