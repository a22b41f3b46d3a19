"""Run the reader fuzz campaign at a larger size and print its figures.

The same cases as ``tests/test_fuzz_readers.py`` (mutated copies of
``sample_data/dicom``, the JPEG 2000 and GE test series, a real NIfTI CT and a
3D Slicer NRRD) and, with ``--sources labels`` or ``all``, those of
``tests/test_fuzz_labels.py`` (the dcmqi DICOM SEG and an RTSTRUCT drawn on the
GE series), any number of them, from any base seed::

    python bench/fuzz_report.py --cases 3000 --seed 41 --workers 2 [--json out.json]
    python bench/fuzz_report.py --cases 2000 --seed 5 --sources labels
    python bench/fuzz_report.py --cases 500 --sources seg,ge3

Prints the outcome counts (loaded / clean error / other), per source, the
largest traced allocation peak as a fraction of its limit, the slowest case,
and every failing case with the command that reproduces it. Exit code 1 when
any case failed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _fuzz.campaign import LABEL_SOURCES, SOURCES, make_specs, run_campaign, summarise  # noqa: E402

_GROUPS = {"images": SOURCES, "labels": LABEL_SOURCES, "all": SOURCES + LABEL_SOURCES}


def _sources(text: str) -> tuple[str, ...]:
    if text in _GROUPS:
        return _GROUPS[text]
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = sorted(set(names) - set(_GROUPS["all"]))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown source(s) {unknown}; use images, labels, all or names from {list(_GROUPS['all'])}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="base seed of the campaign")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds allowed per case")
    parser.add_argument("--sources", type=_sources, default=SOURCES,
                        help="images (default), labels, all, or a comma-separated list of inputs")
    parser.add_argument("--json", type=Path, help="also write the summary and failures here")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    results = run_campaign(make_specs(args.cases, base_seed=args.seed, sources=args.sources),
                           workers=args.workers, timeout=args.timeout)
    summary = summarise(results)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    summary["machine"] = f"{platform.node()} {platform.machine()} python {platform.python_version()}"
    summary["command"] = "python bench/fuzz_report.py " + " ".join(argv or sys.argv[1:])
    failures = summary["failures"]
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=1))
    for f in failures:
        spec = json.dumps({k: f[k] for k in ("source", "mutation", "seed")})
        print(f"FAILED {f['outcome']} {f.get('error_type')}: {f.get('what')} {f['problems']}\n"
              f"  reproduce: python tests/_fuzz/worker.py --case '{spec}'")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
