"""Kill ``medrecon batch`` (SIGKILL, whole process group) mid-run; the rerun equals an uninterrupted run."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from medrecon.batch import DONE, FAILED
from medrecon.cli import main
from medrecon.io import save

N_STUDIES = 5


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from medrecon.phantom import PhantomConfig, make_phantom

    root = tmp_path_factory.mktemp("resume_in")
    for seed in range(N_STUDIES):
        vol, _ = make_phantom(seed + 10, config=PhantomConfig(small=True, matrix=40, slices=10))
        save(vol, root / f"s{seed}.nii.gz")
    return root


def _args(inputs, out):
    return ["batch", str(inputs), "-o", str(out), "--preset", "bone", "--no-preview", "--quiet"]


def _snapshot(out):
    """Every output file's content, with run-dependent numbers (timings) removed."""
    snap = {}
    for path in sorted(out.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(out).as_posix()
        data = path.read_bytes()
        if rel.endswith(".nii.gz"):
            data = gzip.decompress(data)[352:]  # voxels; the gzip header holds a time stamp
        elif rel.endswith(".json"):
            doc = json.loads(data)
            doc.pop("timings_s", None)
            doc.pop("seconds", None)
            for study in doc.get("studies", []):
                study.pop("seconds", None)
            data = json.dumps(doc, sort_keys=True).encode()
        elif rel == "summary.csv":
            data = b"\n".join(b",".join(c for n, c in enumerate(line.split(b",")) if n != 4)
                              for line in data.splitlines())
        snap[rel] = data
    return snap


def test_sigkill_mid_run_then_rerun_equals_uninterrupted(inputs, tmp_path, capsys):
    reference = tmp_path / "reference"
    assert main(_args(inputs, reference)) == 0

    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "medrecon", *_args(inputs, out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(f"*/{DONE}")):
            assert proc.poll() is None, "batch ended before it could be interrupted"
            assert time.monotonic() < deadline, "no study finished within 120 s"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = {p.parent.name for p in out.glob(f"*/{DONE}")}
    assert 1 <= len(finished) < N_STUDIES, "the kill came too late to test a resume"
    assert not (out / "summary.csv").exists()

    capsys.readouterr()
    assert main(_args(inputs, out)) == 0
    assert f"({len(finished)} from earlier runs)" in capsys.readouterr().out
    got, want = _snapshot(out), _snapshot(reference)
    assert sorted(got) == sorted(want)
    assert not [k for k in got if ".part" in k or k.split("/")[-1].startswith(".")]
    for key in want:
        assert got[key] == want[key], key
    assert not list(out.glob(f"*/{FAILED}"))

