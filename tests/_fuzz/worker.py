"""Fuzz worker: builds one mutated case, loads it, classifies it.

Images load with ``medrecon.io.load``; the label inputs as ``reconstruct --labels``
and ``medrecon mesh`` read them: a DICOM SEG through ``medrecon.io.load_labels``
or ``medrecon.sources.imported.import_labels`` onto the GE CT's grid (each half of
the cases), an RTSTRUCT through ``import_labels`` onto that grid.

Run as a process by :mod:`.campaign` (specs in on stdin, results out on stdout,
one JSON object per line), or by hand to reproduce a single case::

    python tests/_fuzz/worker.py --case '{"source": "j2k", "mutation": "set_value", "seed": 12}'

Outcomes: ``loaded`` (a Volume with a finite, non-singular affine and the shape
the headers declare; for labels a LabelMap whose in-plane size is the SEG's
declared one, or that lies on the image's grid, and whose every label has a
name), ``error`` (a :class:`~medrecon.errors.MedreconError` with a
readable message) or ``other`` (anything else: a foreign exception, an
unreadable message, a wrong shape). ``problems`` also flags a traced allocation
peak over the case's limit: 4x the decoded size of the unmutated input plus
twice ``MEDRECON_MAX_BYTES`` (32 MiB here), the most a header may make a reader
allocate after :func:`medrecon.io.limits.check_alloc` accepted it.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
import traceback
import tracemalloc
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``_fuzz`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _fuzz import _dicom, _nifti, _nrrd, _rtstruct, _seg  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"

#: Inputs the mutations start from: name -> (kind, files).
SOURCES = {
    "sample": ("dicom", [ROOT / "sample_data" / "dicom" / f"CT{n:05d}.dcm" for n in range(30, 34)]),
    "j2k": ("dicom", sorted((DATA / "totalseg" / "example_ct_dicom").iterdir())[8:11]),
    "ge3": ("dicom", sorted((DATA / "dcmqi_ct3" / "ct-3slice").iterdir())),
    "nifti": ("nifti", [DATA / "totalseg" / "example_ct_sm.nii.gz"]),
    "nrrd": ("nrrd", [DATA / "dcmqi_ct3" / "liver_seg.nrrd"]),
    "seg": ("seg", [DATA / "dcmqi_ct3" / "liver.dcm"]),
    "rtstruct": ("rtstruct", []),  # drawn on the "ge3" grid by _rtstruct.base_rtstruct
}
#: The image label cases are placed on (import_labels' ``image``).
LABEL_IMAGE = "ge3"
#: MEDRECON_MAX_BYTES in the workers: a header may justify allocations up to this size.
MAX_BYTES = 32 * 1024**2
SLACK = 2 * MAX_BYTES
_HEX = re.compile(r"\\x[0-9a-fA-F]{2}")


def _message_problem(message: str) -> str:
    """Why an error message is not readable ("" when it is)."""
    if not message.strip():
        return "empty message"
    if len(message) > 2000:
        return f"message of {len(message)} characters"
    if any(not (c.isprintable() or c in "\n\t") for c in message):
        return "control characters in the message"
    if "object at 0x" in message or "Traceback" in message or len(_HEX.findall(message)) > 16:
        return "raw repr dump in the message"
    if not re.search(r"[A-Za-z]{3,} [A-Za-z]{2,}", message):
        return "message is not a sentence"
    return ""



def _grid_problem(obj, what: str, check_affine) -> str:
    """Why ``obj`` (a Volume or LabelMap) is not a 3D array with a valid affine, or ""."""
    if obj.array.ndim != 3 or min(obj.shape) < 1:
        return f"{what} array has shape {obj.shape}"
    try:
        check_affine(obj.affine)
    except Exception as e:  # noqa: BLE001
        return f"{what} affine is invalid: {e}"
    return ""

class Worker:
    """Holds the unmutated inputs and their decoded sizes; runs cases."""

    def __init__(self) -> None:
        os.environ["MEDRECON_MAX_BYTES"] = str(MAX_BYTES)
        import medrecon.io  # noqa: F401 - imported before any case is traced

        self.tmp = Path(tempfile.mkdtemp(prefix="medrecon-fuzz-"))
        self.raw_nifti = _nifti_bytes(SOURCES["nifti"][1][0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.image = medrecon.io.load(SOURCES[LABEL_IMAGE][1][0].parent)
        self.rtstruct = _rtstruct.base_rtstruct(self.tmp / "base_rtstruct.dcm", self.image)
        self.base_bytes: dict[str, int] = {}
        for name in SOURCES:
            spec = {"source": name, "mutation": None, "seed": 0}
            case = self._build(spec)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                vol = self._load(spec, case[0])
            size = max(vol.array.size * 4, vol.array.nbytes)
            if SOURCES[name][0] in ("seg", "rtstruct"):
                size += self.image.array.size * 4  # labels are placed on the image's grid
            self.base_bytes[name] = size
            shutil.rmtree(self.tmp / "case")

    def _entry(self, spec: dict) -> str:
        """How a case is loaded: ``load``, ``load_labels`` or ``import_labels``."""
        kind = SOURCES[spec["source"]][0]
        if kind == "rtstruct":
            return "import_labels"
        if kind == "seg":
            pick = random.Random(f"entry:{spec['seed']}").random()
            return "import_labels" if spec["mutation"] is None or pick < 0.5 else "load_labels"
        return "load"

    def _load(self, spec: dict, path: Path):
        import medrecon.io
        from medrecon.sources.imported import import_labels

        entry = self._entry(spec)
        if entry == "import_labels":
            return import_labels(path, image=self.image)
        if entry == "load_labels":
            return medrecon.io.load_labels(path)
        return medrecon.io.load(path)

    def _build(self, spec: dict) -> tuple[Path, str, random.Random]:
        source, mutation = spec["source"], spec["mutation"]
        rng = random.Random(f"{source}:{mutation}:{spec['seed']}")
        kind, files = SOURCES[source]
        folder = self.tmp / "case"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        if kind in ("seg", "rtstruct"):
            base = files[0] if kind == "seg" else self.rtstruct
            path = Path(shutil.copy(base, folder / f"{kind}.dcm"))
            if mutation is None:
                return path, "unmutated", rng
            table = _seg.MUTATIONS if kind == "seg" else _rtstruct.MUTATIONS
            what = table[mutation]([path], rng)
            # a folder holding the file is also a --labels input
            return (folder if rng.random() < 0.2 else path), what, rng
        if kind == "nrrd":
            if mutation is None:
                return Path(shutil.copy(files[0], folder / "case.nrrd")), "unmutated", rng
            path, what = _nrrd.write_case(files[0].read_bytes(), mutation, rng, folder)
            return path, what, rng
        if kind == "nifti":
            if mutation is None:
                path = folder / "case.nii.gz"
                shutil.copy(files[0], path)
                return path, "unmutated", rng
            path, what = _nifti.write_case(self.raw_nifti, mutation, rng, folder)
            return path, what, rng
        series = folder / "series"
        series.mkdir()
        copies = [Path(shutil.copy(f, series / f.name)) for f in files]
        if mutation is None:
            return series, "unmutated", rng
        what = _dicom.MUTATIONS[mutation](copies, rng)
        target = series if rng.random() < 0.8 else rng.choice(copies)
        return target, what, rng

    def run(self, spec: dict) -> dict:
        """Build, load and classify one case."""
        from medrecon.errors import MedreconError
        from medrecon.volume import LabelMap, Volume, check_affine

        result = dict(spec)
        if spec.get("selftest") == "hang":  # lets the tests check that a hang is caught
            time.sleep(3600)
        if spec.get("selftest") == "crash":
            os._exit(3)
        try:
            path, what, _rng = self._build(spec)
        except Exception:  # noqa: BLE001 - a bug of the fuzzer itself: report, do not die
            return dict(result, outcome="harness_error", problems=["the case could not be built"],
                        traceback=traceback.format_exc()[-3000:])
        limit = 4 * self.base_bytes[spec["source"]] + SLACK
        result.update(what=what, target=path.name, limit=limit, problems=[], entry=self._entry(spec))
        vol = exc = None
        start = time.perf_counter()
        tracemalloc.start()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                vol = self._load(spec, path)
        except Exception as e:  # noqa: BLE001 - classifying every exception is the point
            exc = e
            trace = traceback.format_exc()
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        result.update(peak=peak, seconds=round(time.perf_counter() - start, 3))
        if peak > limit:
            result["problems"].append(f"traced peak {peak:,} B over the limit {limit:,} B")
        if exc is not None:
            result.update(error_type=type(exc).__name__, message=str(exc)[:500])
            if isinstance(exc, MedreconError):
                result["outcome"] = "error"
                bad = _message_problem(str(exc))
                if bad:
                    result["problems"].append(bad)
            else:
                result.update(outcome="other", traceback=trace[-3000:])
            return result
        result["outcome"] = "loaded"
        result["shape"] = list(vol.shape) if isinstance(vol, Volume | LabelMap) else None
        problem = self._check_loaded(vol, path, spec, check_affine)
        if problem:
            result["outcome"] = "other"
            result["problems"].append(problem)
        return result

    def _check_loaded(self, vol, path: Path, spec: dict, check_affine) -> str:
        from medrecon.volume import Volume

        kind = SOURCES[spec["source"]][0]
        if kind in ("seg", "rtstruct"):
            return self._check_labels(vol, path, spec, check_affine)
        if not isinstance(vol, Volume):
            return f"load returned {type(vol).__name__}, not a Volume"
        problem = _grid_problem(vol, "loaded", check_affine)
        if problem:
            return problem
        if kind in ("nifti", "nrrd"):
            declared = (_nifti if kind == "nifti" else _nrrd).declared_shape(path)
            if declared is not None and tuple(vol.shape) != declared:
                return f"loaded shape {vol.shape} but the header declares {declared}"
            return ""
        if "gantry_tilt_deg" in vol.meta:
            return ""  # resampled onto a new grid: the in-plane size may differ
        sizes = _dicom.declared_sizes(path if path.is_dir() else path.parent)
        if sizes and tuple(vol.shape[:2]) not in sizes:
            return f"loaded in-plane size {vol.shape[:2]} but the headers declare {sorted(sizes)}"
        return ""

    def _check_labels(self, labels, path: Path, spec: dict, check_affine) -> str:
        import numpy as np

        from medrecon.volume import LabelMap

        if not isinstance(labels, LabelMap):
            return f"returned {type(labels).__name__}, not a LabelMap"
        problem = _grid_problem(labels, "label", check_affine)
        if problem:
            return problem
        if self._entry(spec) == "import_labels":
            if not labels.same_grid(self.image):
                return "labels are not on the image's grid"
        else:
            declared = _seg.declared_size(path if path.is_file() else path / "seg.dcm")
            if declared is not None and tuple(labels.shape[:2]) != declared:
                return f"label in-plane size {labels.shape[:2]} but the SEG declares {declared}"
        present = {int(v) for v in np.unique(labels.array)} - {0}
        if not present:
            return "loaded an empty label map"
        unnamed = present - set(labels.names)
        if unnamed:
            return f"labels {sorted(unnamed)[:5]} have no name"
        bad = [n for n in labels.names.values() if not n or any(not c.isprintable() for c in n)]
        if bad:
            return f"unreadable label names {bad[:3]!r}"
        return ""

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _nifti_bytes(path: Path) -> bytes:
    import gzip

    return gzip.decompress(path.read_bytes())


def main(argv: list[str]) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    worker = Worker()
    try:
        if len(argv) == 2 and argv[0] == "--case":
            print(json.dumps(worker.run(json.loads(argv[1])), indent=1))
            return 0
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            spec = json.loads(line)
            print(json.dumps(worker.run(spec)), flush=True)
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
