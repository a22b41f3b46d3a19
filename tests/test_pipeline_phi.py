"""No patient identifiers in any output unless keep_phi; preview.png orientation."""

import gzip
import json

import numpy as np
import pydicom
import pytest

from medrecon.cli import main
from medrecon.pipeline import ReconstructConfig, reconstruct
from medrecon.pipeline.phi import collect_identifiers, scrub
from medrecon.pipeline.preview import render_preview
from medrecon.text import sanitize_text
from medrecon.volume import LabelMap, Volume

PHI = {
    "patient_name": "SMITHERS^JOHNATHAN",
    "patient_id": "PID987654",
    "patient_birth_date": "19450317",
    "accession_number": "ACC5551234",
}


@pytest.fixture(scope="module")
def phi_study(tmp_path_factory):
    from medrecon.io.dicom_write import write_dicom_series
    from medrecon.phantom import PhantomConfig, make_phantom

    vol, _ = make_phantom(3, config=PhantomConfig(small=True, matrix=40, slices=10))
    # the folder is named after the patient, as exports often are
    folder = tmp_path_factory.mktemp("phi") / "SMITHERS^JOHNATHAN"
    write_dicom_series(vol, folder, description="Smithers Johnathan abdomen", **PHI)
    header = pydicom.dcmread(sorted(folder.iterdir())[0], stop_before_pixels=True)
    uids = [str(header.StudyInstanceUID), str(header.SeriesInstanceUID), str(header.SOPInstanceUID),
            str(header.FrameOfReferenceUID)]
    assert str(header.PatientName) == PHI["patient_name"]
    return folder, [*PHI.values(), "SMITHERS", "JOHNATHAN", *uids]


def _leaks(folder, needles):
    found = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        low = data.lower()
        found += [(path.name, n) for n in needles if n.lower().encode() in low]
    return found


def test_no_identifier_in_any_output(phi_study, tmp_path, capsys):
    folder, needles = phi_study
    out = tmp_path / "out"
    code = main(["reconstruct", str(folder), "-o", str(out), "--preset", "bone", "--json", "--quiet"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert json.loads(stdout)["organs"][0]["name"] == "bone"
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "labels.nii.gz", "meshes", "preview.png", "report.json"]
    assert _leaks(out, needles) == []
    assert not [n for n in needles if n.lower() in stdout.lower()]


def test_keep_phi_keeps_uids(phi_study, tmp_path):
    folder, needles = phi_study
    out = tmp_path / "keep"
    reconstruct(folder, out, config=ReconstructConfig.for_preset("bone", keep_phi=True, preview=False))
    report = json.loads((out / "report.json").read_text())
    assert report["input"]["series_uid"] in needles
    assert "SMITHERS" in report["input"]["source"]
    assert _leaks(out, needles)  # the leak check above can find what it looks for


def test_collect_identifiers_from_dicom_header(phi_study):
    folder, needles = phi_study
    ids = collect_identifiers(None, source=folder)
    assert set(needles) <= ids


def test_scrub_and_sanitize():
    doc = {"organs": [{"name": "liver", "note": "made for smithers"}], "series_uid": "1.2.3",
           "input": {"source": "/data/x", "shape": [1, 2, 3]}}
    clean = scrub(doc, {"SMITHERS"})
    assert clean == {"organs": [{"name": "liver", "note": "[removed]"}], "input": {"shape": [1, 2, 3]}}
    assert scrub(doc, {"SMITHERS"}, keep_phi=True) is doc
    assert sanitize_text("Liver\x00 ^ (seg)\r\n" + "x" * 200) == "Liver (seg) " + "x" * 52


def test_preview_is_radiological_and_superior_up(tmp_path):
    """A bright marker at the patient's right-anterior-superior corner lands where a
    radiologist expects it, whatever the array layout."""
    shape = (30, 24, 20)
    hu = np.full(shape, -1000.0, np.float32)
    hu[2:8, 2:8, 14:19] = 1000.0  # i small = right, j small = anterior, k large = superior
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    vol = Volume(hu, affine, modality="CT", units="HU")
    lab = LabelMap((hu > 0).astype(np.uint8), affine, names={1: "marker"})
    # the same study stored flipped in every axis (RAI): the picture must not change
    flip = np.array([[-1, 0, 0, shape[0] - 1], [0, -1, 0, shape[1] - 1], [0, 0, -1, shape[2] - 1], [0, 0, 0, 1]])
    vol_f = Volume(hu[::-1, ::-1, ::-1].copy(), affine @ flip, modality="CT", units="HU")
    lab_f = LabelMap(lab.array[::-1, ::-1, ::-1].copy(), affine @ flip, names={1: "marker"})
    import matplotlib.image as mpimg

    images = []
    for v, lm, name in ((vol, lab, "a.png"), (vol_f, lab_f, "b.png")):
        render_preview(v, lm, tmp_path / name, dpi=40)
        images.append(mpimg.imread(tmp_path / name)[..., :3].mean(-1))
    assert images[0].shape == images[1].shape
    assert np.abs(images[0] - images[1]).mean() < 0.01
    img = images[0]
    h, w = img.shape
    axial = img[:, : w // 3]  # first panel: axial
    bright = np.argwhere(axial > 0.8)
    rows, cols = bright[:, 0], bright[:, 1]
    body = np.argwhere(axial[int(0.1 * h):] < 0.05)  # air pixels of the slice (dark)
    top, left = body[:, 0].min() + int(0.1 * h), body[:, 1].min()
    bottom, right = body[:, 0].max() + int(0.1 * h), body[:, 1].max()
    # marker in the upper-left quadrant of the axial image: anterior up, patient right on the left
    assert np.median(rows) < (top + bottom) / 2 and np.median(cols) < (left + right) / 2
    coronal = img[:, w // 3: 2 * w // 3]
    crow = np.argwhere(coronal > 0.8)[:, 0]
    cbody = np.argwhere(coronal[int(0.1 * h):] < 0.05)[:, 0] + int(0.1 * h)
    assert np.median(crow) < (cbody.min() + cbody.max()) / 2  # superior up
