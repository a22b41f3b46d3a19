"""Faults: repeated SIGKILLs of ``medrecon batch``, a full disk, unwritable outputs,
GPU out-of-memory, a Dask worker that dies under a study.

Batch halving on out-of-memory is tested in ``test_models.py``; here the move
from the GPU to the CPU and the error when even the CPU runs out.

The single-kill resume case is in ``test_batch_resume.py``; here the batch is
killed several times at seeded random points, and after every kill each study
that claims to be finished (``DONE.json``) must already equal the uninterrupted
run's outputs.
"""

import errno
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from medrecon.batch import DONE, discover_studies, run_batch
from medrecon.cli import main
from medrecon.errors import OutputError, ResourceLimitError
from medrecon.io import save
from medrecon.pipeline import ReconstructConfig
from medrecon.volume import LabelMap

N_STUDIES = 8
CONFIG = ReconstructConfig.for_preset("bone", preview=False)
RUN_DEPENDENT = ("seconds", "timings_s")


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    from medrecon.phantom import PhantomConfig, make_phantom

    root = tmp_path_factory.mktemp("fault_studies")
    for n in range(N_STUDIES):
        vol, _ = make_phantom(100 + n, config=PhantomConfig(small=True, matrix=40, slices=10))
        save(vol, root / f"s{n}.nii.gz")
    return root


def _batch_args(inputs: Path, out: Path, workers: int = 1) -> list[str]:
    return ["batch", str(inputs), "-o", str(out), "--preset", "bone", "--no-preview", "--quiet",
            "--workers", str(workers)]


def _strip(doc):
    if isinstance(doc, dict):
        return {k: _strip(v) for k, v in doc.items() if k not in RUN_DEPENDENT}
    if isinstance(doc, list):
        return [_strip(v) for v in doc]
    return doc


def _contents(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with run-dependent numbers (timings) removed."""
    snap = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        if rel.endswith(".gz"):
            data = gzip.decompress(data)  # the gzip header holds a time stamp
        elif rel.endswith(".json"):
            data = json.dumps(_strip(json.loads(data)), sort_keys=True).encode()
        elif rel == "summary.csv":
            rows = [line.split(b",") for line in data.splitlines()]
            col = rows[0].index(b"seconds")
            data = b"\n".join(b",".join(r[:col] + r[col + 1:]) for r in rows)
        snap[rel] = data
    return snap


def _partial_files(out: Path) -> list[str]:
    return [str(p) for p in out.rglob("*") if ".part" in p.name or p.name.startswith(".")]


def _touched_since(out: Path, t0: float) -> bool:
    paths = [out, *out.rglob("*")] if out.exists() else []
    try:
        return any(p.stat().st_mtime >= t0 for p in paths)
    except FileNotFoundError:  # a folder being cleared under us: that is activity
        return True


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_repeated_sigkill_then_resume_equals_an_uninterrupted_run(studies, tmp_path, capsys, workers):
    reference = tmp_path / "reference"
    assert main(_batch_args(studies, reference)) == 0
    per_study = float(np.median([json.loads(p.read_text())["seconds"]
                                 for p in reference.glob(f"*/{DONE}")]))
    want = _contents(reference)
    rng = random.Random(7 + workers)

    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    kills, progress = 0, []
    for _cycle in range(5):
        # the whole process group dies, pool workers included
        proc = subprocess.Popen([sys.executable, "-m", "medrecon", *_batch_args(studies, out, workers)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        started = time.time() - 0.01
        deadline = time.monotonic() + 120
        # kill after 0-2 more studies finished (0-1 with 2 workers), at a random point of the next
        target = len(list(out.glob(f"*/{DONE}"))) + rng.choice(range(4 - workers))
        try:
            while proc.poll() is None and (not _touched_since(out, started)
                                           or len(list(out.glob(f"*/{DONE}"))) < target):
                assert time.monotonic() < deadline, "the batch made no progress within 120 s"
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.0) * per_study / workers)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
                progress.append(len(list(out.glob(f"*/{DONE}"))))
            proc.wait()
        if proc.returncode == 0:
            break
        # after any kill, a study that says it is finished is complete and correct
        for done in out.glob(f"*/{DONE}"):
            study = done.parent.name
            assert _contents(done.parent) == {k[len(study) + 1:]: v for k, v in want.items() if k.startswith(study + "/")}
    assert kills >= 3, f"only {kills} kills landed before the batch finished"
    assert progress[-1] > 0, f"no study ever finished between kills ({progress})"

    capsys.readouterr()
    assert main(_batch_args(studies, out, workers)) == 0
    assert not _partial_files(out)
    got = _contents(out)
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key] == want[key], key
    print(f"kill-resume cycles survived: {kills}; studies done at each kill: {progress}")


def test_rerun_of_a_finished_batch_with_workers_does_nothing(studies, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_batch_args(studies, out)) == 0
    before = _contents(out)
    capsys.readouterr()
    assert main(_batch_args(studies, out, workers=2)) == 0  # was: max_workers must be > 0
    assert f"({N_STUDIES} from earlier runs)" in capsys.readouterr().out
    assert _contents(out) == before


# --- disk full, unwritable outputs -----------------------------------------------------


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["replace", "fsync"])
def test_disk_full_keeps_the_previous_output(tmp_path, monkeypatch, where):
    old = np.zeros((6, 6, 6), np.uint8)
    old[1:4, 1:4, 1:4] = 5
    path = tmp_path / "labels.nii.gz"
    save(LabelMap(array=old, affine=np.eye(4), names={5: "liver"}), path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    new = LabelMap(array=np.full((6, 6, 6), 2, np.uint8), affine=np.eye(4), names={2: "kidney_right"})
    monkeypatch.setattr(os, where, _enospc)
    with pytest.raises(OutputError, match="disk full.*free space"):
        save(new, path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp file either


def test_disk_full_mid_batch_keeps_finished_studies(studies, tmp_path, monkeypatch):
    found = discover_studies(studies)[:3]
    out = tmp_path / "out"
    run_batch(found[:2], out, config=CONFIG, show_progress=False)
    finished = {k: v for k, v in _contents(out).items() if not k.startswith("summary")}

    monkeypatch.setattr(os, "replace", _enospc)
    with pytest.raises(OutputError, match="disk full"):
        run_batch(found, out, config=CONFIG, show_progress=False)
    monkeypatch.undo()
    after = {k: v for k, v in _contents(out).items() if not k.startswith("summary")}
    assert after == finished  # the two finished studies intact, nothing of the third kept
    assert not _partial_files(out)

    summary = run_batch(found, out, config=CONFIG, show_progress=False)  # space freed
    assert summary.exit_code == 0 and summary.skipped == 2
    assert (out / found[2].key / DONE).is_file()


def test_output_under_a_regular_file_is_a_clean_cli_error(studies, tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("I am a file")
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[2:6, 2:6, 2:6] = 5
    save(LabelMap(array=labels, affine=np.eye(4), names={5: "liver"}), tmp_path / "labels.nii.gz")
    image = studies / "s0.nii.gz"
    runs = {
        "mesh": ["mesh", str(tmp_path / "labels.nii.gz"), "-o", str(blocker / "out")],
        "reconstruct": ["reconstruct", str(image), "--preset", "bone", "--no-preview", "--quiet",
                        "-o", str(blocker / "out")],
        "batch": _batch_args(studies, blocker / "out"),
        "convert": ["convert", str(image), str(blocker / "ct.nii.gz")],
    }
    for name, argv in runs.items():
        capsys.readouterr()
        assert main(argv) == 1, name
        err = capsys.readouterr().err
        # warnings may come first (a tiny imported "liver" is implausible: warned, never refused)
        errors = [line for line in err.splitlines() if line.startswith("medrecon: error")]
        assert len(errors) == 1 and "Traceback" not in err, (name, err)
        assert errors[0].startswith("medrecon: error:") and "not_a_folder" in errors[0], (name, err)
    assert blocker.read_text() == "I am a file"


# --- GPU out of memory ----------------------------------------------------------------


class _GpuNet:
    """A 1x1 convolution that raises CUDA OOM for batches over ``fits`` while "on the GPU"."""

    def __init__(self, fits: int):
        import torch

        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.fits = fits
        self.runner = None
        self.calls: list[tuple[int, str]] = []
        self.moved_to: list[str] = []

    def to(self, device=None, **_):
        if device is not None:
            self.moved_to.append(str(device))
        return self

    def parameters(self):
        return self.conv.parameters()

    def __call__(self, x):
        import torch

        on = self.runner.device.type
        self.calls.append((x.shape[0], on))
        if on == "cuda" and x.shape[0] > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.conv(x)


@pytest.fixture
def fake_cuda(monkeypatch):
    """Tensors asked onto 'cuda' stay on the CPU (the runner's logic is what is tested)."""
    import torch

    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        if args and isinstance(args[0], torch.device) and args[0].type == "cuda":
            return self
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    return torch.device("cuda")


def _run(net, device, batch, x):
    from medrecon.models.inference import _Runner

    runner = _Runner(net, device, batch)
    net.runner = runner
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # autocast: CUDA not available
        return runner, runner.forward(x)


def test_gpu_oom_at_one_slice_moves_to_the_cpu_and_says_so(fake_cuda):
    import torch

    x = torch.randn(6, 3, 5, 5)
    net = _GpuNet(fits=0)
    with pytest.warns(RuntimeWarning, match="continuing on the CPU"):
        runner, y = _run(net, fake_cuda, 4, x)
    assert runner.device.type == "cpu" and net.moved_to == ["cpu"]
    assert [n for n, _ in net.calls][:3] == [4, 2, 1]
    assert torch.allclose(y, net.conv(x), atol=1e-5)


def test_oom_on_the_cpu_is_a_clean_error():
    import torch

    class Hungry(_GpuNet):
        def __call__(self, x):
            raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(ResourceLimitError, match="out of memory even with one slice"):
        _run(Hungry(fits=0), torch.device("cpu"), 2, torch.randn(2, 3, 5, 5))


# --- a Dask worker dying under a study ------------------------------------------------

MARKERS = "MEDRECON_TEST_DIE_MARKERS"


def die_once(study, outdir, config):
    """Kill the worker process the first time a study runs; then do the study."""
    from medrecon.batch import process_study

    marker = Path(os.environ[MARKERS]) / study.key
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(17)
    return dict(process_study(study, outdir, config), worker_pid=os.getpid())


@pytest.mark.slow
def test_dask_worker_killed_mid_study_is_retried_elsewhere(studies, tmp_path, monkeypatch):
    pytest.importorskip("dask.distributed")
    from medrecon.batch.distributed import run_dask

    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(MARKERS, str(markers))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    todo = discover_studies(studies)[:2]
    records = list(run_dask(todo, tmp_path / "out", CONFIG, scheduler="local", workers=2,
                            study_fn=die_once, processes=True))
    assert sorted(r["study"] for r in records) == sorted(s.key for s in todo)
    assert all(r["status"] == "done" for r in records), records
    for record in records:  # each study ran again in a live worker, not the one that died
        assert int((markers / record["study"]).read_text()) != record["worker_pid"]
        assert (tmp_path / "out" / record["study"] / DONE).is_file()


def die_on_s1(study, outdir, config):
    """A study whose worker process always dies (a crash in a C library, the OOM killer)."""
    from medrecon.batch import process_study

    if study.key == "s1":
        os._exit(9)
    return process_study(study, outdir, config)


@pytest.mark.slow
def test_local_pool_worker_death_fails_only_its_study(studies, tmp_path):
    todo = discover_studies(studies)[:3]
    summary = run_batch(todo, tmp_path / "out", config=CONFIG, workers=2, study_fn=die_on_s1,
                        show_progress=False)
    status = {r["study"]: r["status"] for r in summary.records}
    assert status == {"s0": "done", "s1": "failed", "s2": "done"}
    failed = json.loads((tmp_path / "out" / "s1" / "FAILED.json").read_text())
    assert "worker process died" in failed["error"]
    assert summary.exit_code == 1
    assert not _partial_files(tmp_path / "out")
