"""nnU-Net v2 engines against nnunetv2's own predictor, on a model nnunetv2's trainer made.

Ground truth is nnunetv2 itself: its ``nnUNetPredictor`` reads the same NIfTI
file (SimpleITK) and writes its labels; medrecon must give the same labels on
the same grid, also for a flipped and an oblique copy of the study.
"""

import hashlib
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from medrecon.io import load
from medrecon.volume import LPS_TO_RAS

nnunetv2 = pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed: pip install 'medrecon[nnunet]' "
                                                  "(the Makefile installs it)")
torch = pytest.importorskip("torch")

from _nnunet import LABELS, phantom, train_phantom_model  # noqa: E402

pytestmark = pytest.mark.slow
VOCABULARY = json.loads((__import__("pathlib").Path(__file__).parent / "data" / "totalseg"
                         / "class_map_total.json").read_text())
VOCAB_ID = {name: int(k) for k, name in VOCABULARY.items()}


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    torch.set_num_threads(1)
    return train_phantom_model(tmp_path_factory.mktemp("nnunet"))


def write_variants(tmp_path):
    """The held-out phantom as stored, flipped along i, and with an oblique affine: NIfTI files by nibabel."""
    volume, _ = phantom(11)
    array = np.asarray(volume.array, np.int16)
    ras = LPS_TO_RAS @ volume.affine
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, array.shape[0] - 1
    angle = np.deg2rad(20)
    rot = np.eye(4)
    rot[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    variants = {"stored": (array, ras), "flipped": (array[::-1].copy(), ras @ flip), "oblique": (array, rot @ ras)}
    paths = {}
    for name, (data, affine) in variants.items():
        paths[name] = tmp_path / f"{name}_0000.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), paths[name])
    return paths


def nnunet_predict(folder, files, out_dir, *, mirroring, folds=("0",)):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=folds)
    outs = [str(out_dir / f.name.replace("_0000.nii.gz", "")) for f in files]
    predictor.predict_from_files_sequential([[str(f)] for f in files], outs, save_probabilities=False)
    return [nib.load(o + ".nii.gz") for o in outs]


def dice(a, b):
    return 1.0 if not a.any() and not b.any() else 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize(("mirroring", "precision", "folds"), [(False, "auto", 1), (True, "float32", 2)])
def test_labels_equal_nnunets_own_predictor_on_flipped_and_oblique_files(model_folder, tmp_path, mirroring,
                                                                         precision, folds):
    from medrecon.sources import resolve_source

    if folds == 2:  # a two-fold ensemble: its 2 x 4 features are not fewer than the 7 outputs, so logits
        model_folder = shutil.copytree(model_folder, tmp_path / "two_folds")
        shutil.copytree(model_folder / "fold_0", model_folder / "fold_1")
    paths = write_variants(tmp_path)
    names = list(paths) if not mirroring else ["stored"]
    theirs = nnunet_predict(model_folder, [paths[n] for n in names], tmp_path, mirroring=mirroring,
                            folds=tuple(str(f) for f in range(folds)))
    theirs = dict(zip(names, theirs, strict=True))
    source = resolve_source(model=f"nnunet:{model_folder}")
    source = type(source)(source.folder, mirroring=mirroring, precision=precision)
    for name in names:
        volume = load(paths[name])
        ours = source.segment(volume)
        assert ours.same_grid(volume)
        np.testing.assert_allclose(LPS_TO_RAS @ ours.affine, theirs[name].affine, atol=1e-4)
        ref = np.asarray(theirs[name].dataobj).astype(int)
        got = np.asarray(ours.array)
        for organ, value in LABELS.items():
            if value:
                assert ours.names.get(VOCAB_ID[organ]) == organ
                assert dice(got == VOCAB_ID[organ], ref == value) >= 0.99, (name, organ)
        liver = ref == LABELS["liver"]
        assert liver.sum() > 500, f"{name}: the model must predict a liver for this test to mean anything"
        assert dice(liver, liver[::-1]) < 0.5, "the prediction must not be left/right symmetric"
    if not mirroring:
        # the model is not flip invariant: a loader that ignored the flip would disagree with nnU-Net
        stored, flipped = (np.asarray(theirs[n].dataobj) == LABELS["liver"] for n in ("stored", "flipped"))
        assert dice(stored, flipped[::-1]) < 0.95


def test_report_names_the_engine_and_the_weights_hash(model_folder, tmp_path):
    from medrecon.pipeline import ReconstructConfig, reconstruct

    volume = load(write_variants(tmp_path)["stored"])
    result = reconstruct(volume, tmp_path / "out",
                         config=ReconstructConfig(model=f"nnunet:{model_folder}", preview=False))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["label_source"]["kind"] == "engine" and report["label_source"]["name"] == "nnunet"
    engine = report["engine"]
    assert engine["engine"].startswith("nnunetv2 ") and engine["task"] == "Dataset901_Phantom"
    checkpoint = model_folder / "fold_0" / "checkpoint_final.pth"
    line = f"fold_0/checkpoint_final.pth {hashlib.sha256(checkpoint.read_bytes()).hexdigest()}\n"
    assert engine["weights_sha256"] == hashlib.sha256(line.encode()).hexdigest()
    assert "liver" in {o["name"] for o in report["organs"]} and all(f.is_file() for f in result.mesh_files)


def test_totalsegmentator_merges_its_parts_on_ras_axes(model_folder, tmp_path, monkeypatch):
    """Two copies of the model stand in for parts 291 and 292 of TotalSegmentator's 'total' task."""
    from medrecon.sources import resolve_source

    home = tmp_path / "home"
    for dataset in ("Dataset291_TotalSegmentator_part1_organs_1559subj",
                    "Dataset292_TotalSegmentator_part2_vertebrae_1532subj"):
        shutil.copytree(model_folder, home / "nnunet" / "results" / dataset
                        / "nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres")
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(home))
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    # TotalSegmentator's input: the study on its closest RAS axes (nibabel), as nnU-Net reads it
    stored = write_variants(tmp_path)["flipped"]
    canonical = tmp_path / "canonical_0000.nii.gz"
    nib.save(nib.as_closest_canonical(nib.load(stored)), canonical)
    (ref,) = nnunet_predict(model_folder, [canonical], tmp_path, mirroring=False)
    ref_values = np.asarray(ref.dataobj).astype(int)

    volume = load(stored)
    with pytest.raises(Exception, match="Dataset293"):  # parts 293-295 are not there
        resolve_source(model="totalsegmentator").segment(volume)
    # --organs runs only the parts that hold them: spleen is class 1 (part 291's label 1), sacrum
    # class 25 (part 292's label 1), in TotalSegmentator's class map
    source = resolve_source(model="totalsegmentator:total", organs=["spleen", "sacrum"])
    assert [d for d, _, _ in source.folders()] == [291, 292]
    labels = source.segment(volume)
    # back on TotalSegmentator's RAS grid (nibabel) to compare with nnU-Net's output there
    ours = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(labels.array), LPS_TO_RAS @ labels.affine))
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-4)
    got = np.asarray(ours.dataobj)
    # part 292 (classes 25..) is run after part 291 and wins where both label a voxel
    assert VOCAB_ID["sacrum"] == 25 and VOCAB_ID["spleen"] == 1
    assert dice(got == 25, ref_values == 1) >= 0.99
    assert not (got == 1).any()  # both parts label the same voxels: the later part wins
    assert labels.names == {1: "spleen", 25: "sacrum"}
    about = source.describe()
    assert about["task"] == "total" and about["datasets"] == [
        "Dataset291_TotalSegmentator_part1_organs_1559subj", "Dataset292_TotalSegmentator_part2_vertebrae_1532subj"]
    assert len(about["weights_sha256"]) == 64


def test_checkpoint_from_the_trainer_loads_and_a_foreign_object_in_it_is_refused(model_folder, tmp_path):
    from medrecon.errors import ModelError
    from medrecon.models.nnunet import load_checkpoint, load_nnunet_folder

    checkpoint = load_checkpoint(model_folder / "fold_0" / "checkpoint_final.pth")
    assert isinstance(checkpoint["logging"]["mean_fg_dice"][0], np.float64)  # numpy scalars are allowed
    evil = tmp_path / "evil"
    shutil.copytree(model_folder, evil)
    raw = load_checkpoint(evil / "fold_0" / "checkpoint_final.pth")
    raw["init_args"]["device"] = __import__("fractions").Fraction(1, 3)
    torch.save(raw, evil / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(ModelError, match=r"refused: the checkpoint holds the object fractions\.Fraction"):
        load_nnunet_folder(evil)


def test_an_in_memory_study_is_left_as_it_was(model_folder):
    from medrecon.sources.nnunet import NnunetSource

    volume, _ = phantom(12)  # float32, read-only
    before = np.array(volume.array)
    labels = NnunetSource(model_folder, mirroring=False).segment(volume)
    np.testing.assert_array_equal(np.asarray(volume.array), before)
    assert labels.same_grid(volume) and (np.asarray(labels.array) == 5).sum() > 500
