"""Fuzzing the DICOM, NIfTI and NRRD readers with seeded mutations of real and synthetic files.

Every mutated case must load correctly (a Volume with a finite, non-singular
affine and the shape its headers declare) or raise a ``MedreconError`` with a
readable message, within 10 s, with a traced allocation peak under 4x the
decoded size of the unmutated input + 2x ``MEDRECON_MAX_BYTES`` (32 MiB in the
workers). A failure prints the case spec; reproduce it with
``python tests/_fuzz/worker.py --case '<spec>'``.
"""

import json

import pytest
from _fuzz.campaign import make_specs, run_campaign, summarise
from _fuzz.worker import _message_problem

N_CASES = 400  # 80 per source; bench/fuzz_report.py runs larger campaigns
BASE_SEED = 2026


def _describe(result: dict) -> str:
    keys = ("source", "mutation", "seed", "what", "outcome", "error_type", "message", "problems")
    text = json.dumps({k: result.get(k) for k in keys})
    return text + ("\n" + result["traceback"] if result.get("traceback") else "")


@pytest.mark.slow
def test_mutated_files_load_or_fail_cleanly():
    results = run_campaign(make_specs(N_CASES, base_seed=BASE_SEED), workers=2, timeout=10.0)
    summary = summarise(results)
    failures = summary.pop("failures")
    print(json.dumps(summary, indent=1))
    assert not failures, f"{len(failures)} bad case(s):\n" + "\n".join(map(_describe, failures[:8]))
    assert summary["cases"] == N_CASES
    # the mutations must reach both ends on every source, or the campaign tests little
    for source, counts in summary["by_source"].items():
        assert counts.get("loaded", 0) >= 10 and counts.get("error", 0) >= 10, (source, counts)


def test_campaign_reports_hangs_and_crashes():
    specs = [{"id": 0, "source": "nifti", "mutation": "dims", "seed": 1, "selftest": "hang"},
             {"id": 1, "source": "nifti", "mutation": "dims", "seed": 1, "selftest": "crash"},
             {"id": 2, "source": "nifti", "mutation": "truncate", "seed": 3}]
    results = run_campaign(specs, workers=1, timeout=2.0)
    assert [r["outcome"] for r in results[:2]] == ["hang", "crash"]
    assert results[2]["outcome"] == "error" and not results[2]["problems"]
    assert len(summarise(results)["failures"]) == 2


@pytest.mark.parametrize(("message", "bad"), [
    ("scans/x.dcm: pixel data ends early; the file is truncated", False),
    ("", True),
    ("x" * 3000, True),
    ("bad value \x00 in header", True),
    ("<pydicom.dataset.FileDataset object at 0x7f3a> failed", True),
    ("'" + "\\x00" * 40 + "'", True),
    ("(0028,0010)", True),
])
def test_message_readability_rule(message, bad):
    assert bool(_message_problem(message)) is bad
