"""Label sources side by side: one interface, one resolver, provenance for the report."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import medrecon
from medrecon.errors import InputError, ModelError
from medrecon.pipeline import ReconstructConfig, reconstruct
from medrecon.sources import (
    ImportedSource,
    LabelSource,
    NetworkSource,
    PresetSource,
    resolve_source,
)
from medrecon.volume import LPS_TO_RAS, Volume

PRESETS_JSON = Path(medrecon.__file__).parent / "data" / "presets.json"
DEFAULT_CARD = Path(medrecon.__file__).parent / "models" / "default" / "model.json"


def block_ct():
    """60 x 60 x 30 CT at 2 mm: air, a soft-tissue body and a 20 mm bone block inside it."""
    hu = np.full((60, 60, 30), -1000.0, np.float32)
    hu[8:52, 8:52, :] = 40.0
    hu[20:30, 25:35, 10:20] = 700.0
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-60.0, -80.0, 100.0)
    return Volume(hu, affine, modality="CT", units="HU")


def test_resolver_turns_each_choice_into_its_source():
    assert resolve_source() == NetworkSource("default")
    net = resolve_source(model="ckpt", device="cuda", planes="axial", trust_bundle=True, batch_size=3)
    assert net == NetworkSource("ckpt", device="cuda", planes="axial", trust_bundle=True, batch_size=3)
    assert resolve_source(preset="BONE, lung") == PresetSource(("bone", "lung"))
    assert resolve_source(labels="seg.nii.gz", names="n.json") == ImportedSource("seg.nii.gz", names="n.json")
    kinds = {type(s).kind for s in (net, PresetSource("bone"), ImportedSource("x"))}
    assert kinds == {"network", "preset", "imported"}
    assert all(isinstance(s, LabelSource) for s in (net, PresetSource("bone"), ImportedSource("x")))


def test_resolver_refuses_what_cannot_be_meant():
    with pytest.raises(InputError, match="choose one label source, got --model and --preset"):
        resolve_source(model="default", preset="bone")
    with pytest.raises(InputError, match="--names goes with --labels"):
        resolve_source(names="names.json")
    with pytest.raises(InputError, match="unknown preset 'marrow'; known presets: .*bone"):
        resolve_source(preset="bone,marrow")
    with pytest.raises(InputError, match="no preset given"):
        PresetSource(" , ")


def test_preset_source_labels_the_bone_block_and_describes_its_preset():
    ct = block_ct()
    labels = PresetSource("bone").segment(ct)
    assert labels.same_grid(ct) and labels.names == {200: "bone"}
    expected = np.zeros(ct.shape, bool)
    expected[20:30, 25:35, 10:20] = True
    np.testing.assert_array_equal(np.asarray(labels.array) == 200, expected)
    bone = next(p for p in json.loads(PRESETS_JSON.read_text())["presets"] if p["name"] == "bone")
    about = PresetSource("bone").describe()
    assert about["kind"] == "preset" and about["name"] == "bone" and about["version"] is None
    assert about["presets"][0]["hu"] == bone["hu"] and about["presets"][0]["steps"] == bone["steps"]


def test_imported_source_puts_a_label_file_on_the_study_grid(tmp_path):
    ct = block_ct()
    truth = np.zeros(ct.shape, np.uint8)
    truth[10:40, 10:30, 5:25] = 5
    truth[40:50, 30:50, 5:15] = 1
    path = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(truth, LPS_TO_RAS @ ct.affine), path)  # written by nibabel, in RAS
    (tmp_path / "seg.json").write_text(json.dumps({"5": "liver", "1": "spleen"}))
    source = resolve_source(labels=path)
    labels = source.segment(ct)
    assert labels.same_grid(ct) and labels.names == {5: "liver", 1: "spleen"}
    np.testing.assert_array_equal(np.asarray(labels.array), truth)
    assert source.describe() == {"kind": "imported", "name": "seg.nii.gz", "version": None, "format": "image"}


def test_network_source_describes_the_card_it_loads(tmp_path):
    card = json.loads(DEFAULT_CARD.read_text())
    about = NetworkSource().describe()
    assert about["kind"] == "network" and about["name"] == "default"
    assert about["arch"] == card["net"]["arch"] and about["labels"] == len(card["channel_ids"]) - 1
    assert about["spacing_mm"] == card["spacing_mm"]
    (tmp_path / "model.pt").write_bytes(b"\x80\x04\x95")
    with pytest.raises(ModelError, match="refusing to load a pickled checkpoint"):
        NetworkSource(tmp_path / "model.pt").segment(block_ct())


def test_report_names_the_label_source():
    result = reconstruct(block_ct(), config=ReconstructConfig.for_preset("bone", preview=False))
    assert result.report["label_source"] == {"kind": "preset", "name": "bone", "version": None}
    assert result.report["presets"][0]["name"] == "bone"
    assert [o["name"] for o in result.report["organs"]] == ["bone"]
