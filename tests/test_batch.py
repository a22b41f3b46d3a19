"""medrecon batch: discovery, good/corrupt/empty studies, failure records, reruns, Dask."""

import csv
import json
import os
import shutil

import numpy as np
import pytest

from medrecon.batch import (
    DONE,
    FAILED,
    Study,
    discover_studies,
    process_study,
    read_study_list,
    run_batch,
)
from medrecon.cli import main
from medrecon.errors import InputError
from medrecon.io import save
from medrecon.pipeline import ReconstructConfig
from medrecon.volume import LabelMap

CONFIG = ReconstructConfig.for_preset("bone", preview=False)


def _tiny_phantom(seed):
    from medrecon.phantom import PhantomConfig, make_phantom

    return make_phantom(seed, config=PhantomConfig(small=True, matrix=40, slices=10))


@pytest.fixture(scope="module")
def studies_dir(tmp_path_factory):
    """good: a.nii.gz, nested/b.nii.gz; corrupt.nii.gz (truncated); empty/ (no files);
    labels.nii.gz with a names sidecar (a label map, not a study); notes/README.txt."""
    root = tmp_path_factory.mktemp("studies")
    vol_a, lab_a = _tiny_phantom(1)
    vol_b, _ = _tiny_phantom(2)
    save(vol_a, root / "a.nii.gz")
    (root / "nested").mkdir()
    save(vol_b, root / "nested" / "b.nii.gz")
    save(LabelMap(lab_a.array, lab_a.affine, names=dict(lab_a.names)), root / "labels.nii.gz")
    whole = (root / "a.nii.gz").read_bytes()
    (root / "corrupt.nii.gz").write_bytes(whole[: len(whole) // 3])
    (root / "empty").mkdir()
    (root / "notes").mkdir()
    (root / "notes" / "README.txt").write_text("not a study\n")
    return root


def test_discovery_rules(studies_dir, tmp_path):
    studies = discover_studies(studies_dir)
    assert [(s.key, s.kind) for s in studies] == [
        ("a", "image"), ("corrupt", "image"), ("empty", "empty"), ("nested/b", "image")]
    # an output folder inside the input is not searched
    shutil.copytree(studies_dir, tmp_path / "in")
    (tmp_path / "in" / "out" / "x").mkdir(parents=True)
    (tmp_path / "in" / "out" / "x" / "c.nii.gz").write_bytes(b"")
    keys = [s.key for s in discover_studies(tmp_path / "in", exclude=tmp_path / "in" / "out")]
    assert keys == ["a", "corrupt", "empty", "nested/b"]
    with pytest.raises(InputError, match="no studies found"):
        discover_studies(studies_dir / "notes")


def test_dicom_folder_is_one_study(dcmqi_dir, tmp_path):
    shutil.copytree(dcmqi_dir / "ct-3slice", tmp_path / "patient 1" / "ct")
    (tmp_path / "patient 1" / "ct" / "garbage.dcm").write_bytes(b"\0" * 10)
    assert discover_studies(tmp_path) == [Study("patient_1/ct", str(tmp_path / "patient 1" / "ct"), "dicom")]


def test_study_lists(studies_dir, tmp_path):
    (tmp_path / "list.txt").write_text(f"# studies\n{studies_dir / 'a.nii.gz'}\n\n{studies_dir / 'nested'}/b.nii.gz\n")
    assert [s.key for s in read_study_list(tmp_path / "list.txt")] == ["a", "b"]
    with open(tmp_path / "list.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path"])
        w.writerow(["p1/scan", str(studies_dir / "a.nii.gz")])
        w.writerow(["", "rel.nii.gz"])
    studies = discover_studies(tmp_path / "list.csv")
    assert [(s.key, s.source) for s in studies] == [("p1/scan", str(studies_dir / "a.nii.gz")),
                                                    ("rel", str(tmp_path / "rel.nii.gz"))]
    (tmp_path / "bad.csv").write_text("file\nx.nii.gz\n")
    with pytest.raises(InputError, match="'path' column"):
        read_study_list(tmp_path / "bad.csv")


def _never(study, outdir, config):
    raise AssertionError(f"{study.key} should have been skipped")


def test_good_corrupt_and_empty_studies(studies_dir, tmp_path):
    out = tmp_path / "out"
    studies = discover_studies(studies_dir)
    summary = run_batch(studies, out, config=CONFIG, show_progress=False, input_path=str(studies_dir))
    status = {r["study"]: r["status"] for r in summary.records}
    assert status == {"a": "done", "nested/b": "done", "corrupt": "failed", "empty": "failed"}
    assert summary.exit_code == 1
    for key in ("a", "nested/b"):
        folder = out / key
        assert sorted(p.name for p in folder.iterdir()) == [DONE, "labels.json", "labels.nii.gz", "meshes", "report.json"]
        assert (folder / "meshes" / "bone.stl").stat().st_size > 1000
        report = json.loads((folder / "report.json").read_text())
        done = json.loads((folder / DONE).read_text())
        assert done["organs"][0]["mesh_volume_ml"] == pytest.approx(report["organs"][0]["mesh_volume_ml"], abs=1e-3)
    for key, reason in (("corrupt", "truncated"), ("empty", "empty folder")):
        assert [p.name for p in (out / key).iterdir()] == [FAILED]  # no partial outputs left
        assert reason in json.loads((out / key / FAILED).read_text())["error"]
    with open(out / "summary.csv") as fh:
        rows = {r["study"]: r for r in csv.DictReader(fh)}
    # the summary carries each study's own verdict (this coarse 8.6 mm phantom's bone has a
    # few mm^2 of wall under 1 mm where two bones meet, so the print checks fail it)
    report_a = json.loads((out / "a" / "report.json").read_text())
    assert rows["a"]["status"] == "done" and rows["a"]["print_ready"] == str(report_a["print_ready"])
    assert report_a["print_ready"] == all(o["print_ready"] for o in report_a["organs"])
    assert float(rows["a"]["volume_ml:bone"]) > 1
    assert "truncated" in rows["corrupt"]["error"]
    data = json.loads((out / "summary.json").read_text())
    assert data["counts"] == {"done": 2, "failed": 2} and data["input"] == str(studies_dir)

    # a rerun touches nothing and still reports the failures
    again = run_batch(studies, out, config=CONFIG, show_progress=False, study_fn=_never)
    assert again.skipped == 4 and again.exit_code == 1
    # --retry-failed tries only the failed ones (which fail again)
    retried = run_batch(studies, out, config=CONFIG, show_progress=False, retry_failed=True)
    assert retried.skipped == 2 and len(retried.failed) == 2


def test_unfinished_output_is_cleared_and_redone(studies_dir, tmp_path):
    studies = [s for s in discover_studies(studies_dir) if s.key == "a"]
    out = tmp_path / "out"
    partial = out / "a"
    (partial / "meshes").mkdir(parents=True)
    (partial / "meshes" / "bone.stl").write_bytes(b"half")
    (partial / ".report.json.abc.part.json").write_text("{")
    (partial / "report.json").write_text("{}")
    summary = run_batch(studies, out, config=CONFIG, show_progress=False)
    assert summary.exit_code == 0 and summary.skipped == 0
    assert sorted(p.name for p in partial.iterdir()) == [DONE, "labels.json", "labels.nii.gz", "meshes", "report.json"]
    assert (partial / "meshes" / "bone.stl").stat().st_size > 1000
    assert json.loads((partial / "report.json").read_text())["organs"][0]["name"] == "bone"


def test_cli_workers_and_exit_codes(studies_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["batch", str(studies_dir), "-o", str(out), "--preset", "bone", "--no-preview", "--quiet"]
    assert main([*argv, "--workers", "2"]) == 1
    assert "2 finished, 2 failed" in capsys.readouterr().out
    assert main(argv) == 1  # a rerun finds the recorded failures
    assert "(4 from earlier runs)" in capsys.readouterr().out
    ok = tmp_path / "ok"
    ok.mkdir()
    shutil.copy(studies_dir / "a.nii.gz", ok / "a.nii.gz")
    assert main(["batch", str(ok), "-o", str(tmp_path / "ok_out"), "--preset", "bone", "--no-preview", "--quiet"]) == 0


def test_dask_local_cluster_same_outputs(studies_dir, tmp_path):
    pytest.importorskip("dask.distributed")
    studies = discover_studies(studies_dir)
    summary = run_batch(studies, tmp_path / "dask", config=CONFIG, scheduler="local", workers=2,
                        dask_processes=False, show_progress=False)
    assert {r["study"]: r["status"] for r in summary.records} == {
        "a": "done", "nested/b": "done", "corrupt": "failed", "empty": "failed"}
    run_batch([s for s in studies if s.key == "a"], tmp_path / "local", config=CONFIG, show_progress=False)
    a_dask = json.loads((tmp_path / "dask" / "a" / DONE).read_text())
    a_local = json.loads((tmp_path / "local" / "a" / DONE).read_text())
    assert a_dask["organs"] == a_local["organs"]
    import nibabel as nib

    assert np.array_equal(nib.load(tmp_path / "dask" / "a" / "labels.nii.gz").get_fdata(),
                          nib.load(tmp_path / "local" / "a" / "labels.nii.gz").get_fdata())
    # resume through Dask: nothing left to do
    again = run_batch(studies, tmp_path / "dask", config=CONFIG, scheduler="local", workers=1,
                      dask_processes=False, show_progress=False, study_fn=_never)
    assert again.skipped == 4 and again.exit_code == 1


def _die_on_b(study, outdir, config):
    if study.key == "nested/b":
        os._exit(3)  # a worker killed under a study (out of memory, a segfault)
    return process_study(study, outdir, config)


def test_a_dying_worker_fails_only_its_study(studies_dir, tmp_path):
    studies = [s for s in discover_studies(studies_dir) if s.key in ("a", "nested/b")]
    summary = run_batch(studies, tmp_path / "o", config=CONFIG, workers=2, study_fn=_die_on_b,
                        show_progress=False)
    assert {r["study"]: r["status"] for r in summary.records} == {"a": "done", "nested/b": "failed"}
    assert "worker process died" in summary.failed[0]["error"]
    assert (tmp_path / "o" / "a" / "meshes" / "bone.stl").is_file()
    assert [p.name for p in (tmp_path / "o" / "nested" / "b").iterdir()] == [FAILED]
