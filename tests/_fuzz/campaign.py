"""Run many fuzz cases in worker processes, with a wall-clock bound per case.

A case that overruns its bound is recorded as ``hang`` and its worker is killed
and replaced; a worker that dies (segfault in a decoder, killed for memory) is
recorded as ``crash``. Specs are derived from ``(base_seed, index)`` only, so a
campaign (and each of its cases) reproduces exactly.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from _fuzz import _dicom, _nifti, _nrrd, _rtstruct, _seg

WORKER = Path(__file__).with_name("worker.py")
#: Image inputs (the default campaign) and label inputs (DICOM SEG, RTSTRUCT).
SOURCES = ("sample", "j2k", "ge3", "nifti", "nrrd")
LABEL_SOURCES = ("seg", "rtstruct")
_TABLES = {"nifti": _nifti.WEIGHTS, "nrrd": _nrrd.WEIGHTS, "seg": _seg.WEIGHTS, "rtstruct": _rtstruct.WEIGHTS}
STARTUP_S = 120.0  # imports and loading the unmutated inputs, on a loaded CI box


def make_specs(n: int, *, base_seed: int = 0, sources=SOURCES) -> list[dict]:
    """``n`` case specs cycling through ``sources``, mutations drawn by weight."""
    specs = []
    for i in range(n):
        source = sources[i % len(sources)]
        table = _TABLES.get(source, _dicom.WEIGHTS)
        rng = random.Random(f"spec:{base_seed}:{i}")
        mutation = rng.choices(sorted(table), weights=[table[k] for k in sorted(table)])[0]
        specs.append({"id": i, "source": source, "mutation": mutation, "seed": base_seed * 100_000 + i})
    return specs


class _Proc:
    def __init__(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        self.p = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, bufsize=1, env=env)
        self.spec: dict | None = None
        self.deadline = time.monotonic() + STARTUP_S
        self.ready = False

    def send(self, spec: dict, timeout: float) -> None:
        self.spec = spec
        self.deadline = time.monotonic() + timeout
        self.p.stdin.write(json.dumps(spec) + "\n")
        self.p.stdin.flush()

    def kill(self) -> None:
        self.p.kill()
        self.p.wait()


def run_campaign(specs: list[dict], *, workers: int = 2, timeout: float = 10.0) -> list[dict]:
    """Run ``specs`` on ``workers`` processes; return one result per spec, in spec order."""
    todo = list(reversed(specs))
    results: dict[int, dict] = {}
    sel = selectors.DefaultSelector()
    procs: list[_Proc] = []

    def start() -> None:
        proc = _Proc()
        procs.append(proc)
        sel.register(proc.p.stdout, selectors.EVENT_READ, proc)

    def retire(proc: _Proc, outcome: str, detail: str) -> None:
        if proc.spec is not None:
            results[proc.spec["id"]] = dict(proc.spec, outcome=outcome, problems=[detail])
        elif not proc.ready:
            raise RuntimeError(f"fuzz worker failed to start: {detail}")
        sel.unregister(proc.p.stdout)
        proc.kill()
        procs.remove(proc)
        if todo or any(p.spec for p in procs):
            start()

    for _ in range(max(1, min(workers, len(specs)))):
        start()
    try:
        while todo or any(p.spec is not None for p in procs):
            for proc in procs:
                if proc.ready and proc.spec is None and todo:
                    proc.send(todo.pop(), timeout)
            wait = max(0.0, min(p.deadline for p in procs) - time.monotonic())
            for key, _ in sel.select(wait):
                proc = key.data
                line = proc.p.stdout.readline()
                if not line:
                    retire(proc, "crash", f"worker died (exit code {proc.p.poll()})")
                    continue
                msg = json.loads(line)
                if msg.get("ready"):
                    proc.ready = True
                else:
                    results[msg["id"]] = msg
                    proc.spec = None
            now = time.monotonic()
            for proc in list(procs):
                if now > proc.deadline and (proc.spec is not None or not proc.ready):
                    retire(proc, "hang", f"no result within {timeout:.0f} s")
    finally:
        for proc in procs:
            proc.p.stdin.close()
            proc.kill()
    return [results[s["id"]] for s in specs]


def summarise(results: list[dict]) -> dict:
    """Counts of outcomes per source and overall, and the worst memory ratio."""
    out: dict = {"cases": len(results), "outcomes": dict(Counter(r["outcome"] for r in results))}
    out["by_source"] = {s: dict(Counter(r["outcome"] for r in results if r["source"] == s))
                        for s in sorted({r["source"] for r in results})}
    ratios = [r["peak"] / r["limit"] for r in results if "peak" in r]
    out["max_peak_fraction_of_limit"] = round(max(ratios), 4) if ratios else None
    out["max_peak_bytes"] = max((r["peak"] for r in results if "peak" in r), default=None)
    timed = [r for r in results if "seconds" in r]
    slowest = max(timed, key=lambda r: r["seconds"], default=None)
    out["max_case_seconds"] = slowest["seconds"] if slowest else None
    out["slowest_case"] = {k: slowest[k] for k in ("source", "mutation", "seed")} if slowest else None
    out["failures"] = [r for r in results if r["outcome"] not in ("loaded", "error") or r["problems"]]
    return out
