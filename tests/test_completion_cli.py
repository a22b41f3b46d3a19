import json

import numpy as np
import pytest

from medrecon.cli import main
from medrecon.completion import every_nth
from medrecon.completion.metrics import dice
from medrecon.io import load_labels, save
from medrecon.train.shape import ORGANS


@pytest.fixture(scope="module")
def sparse_files(small_phantom, tmp_path_factory):
    image, labels = small_phantom
    truth = np.asarray(labels.array)
    organs = {k: v for k, v in labels.names.items() if k in ORGANS}
    kept = labels.replace(array=np.where(np.isin(truth, list(organs)), truth, 0).astype(truth.dtype),
                          names=organs)
    folder = tmp_path_factory.mktemp("complete")
    sparse = every_nth(kept, 3, offset=1)
    save(sparse, folder / "sparse.nii.gz")
    save(image, folder / "ct.nii.gz")
    return folder, sparse, kept


@pytest.mark.parametrize("method", ["sdf", "network"])
def test_cli_writes_labels_and_sidecar_keeping_drawn_slices(sparse_files, method, capsys):
    folder, sparse, full = sparse_files
    out = folder / f"filled_{method}.nii.gz"
    code = main(["complete", str(folder / "sparse.nii.gz"), "--image", str(folder / "ct.nii.gz"),
                 "-o", str(out), "--method", method, "--quiet"])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    names = json.loads((folder / f"filled_{method}.json").read_text())
    assert names == {str(k): v for k, v in sorted(full.names.items())}
    filled = load_labels(out)
    assert filled.same_grid(sparse)
    np.testing.assert_array_equal(filled.array[:, :, 1::3], sparse.array[:, :, 1::3])
    for label in full.labels:
        assert (filled.array == label).sum() > 1.3 * (sparse.array == label).sum()
    # the filled organs as a whole match the phantom's exact labels
    assert dice(filled.array != 0, full.array != 0) > 0.9


def test_cli_reports_a_missing_model_as_one_line_error(sparse_files, tmp_path, capsys):
    folder, _, _ = sparse_files
    code = main(["complete", str(folder / "sparse.nii.gz"), "-o", str(tmp_path / "x.nii.gz"),
                 "--model", str(tmp_path), "--quiet"])
    assert code == 1
    assert "not a shape model" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists()


def test_cli_stop_at_drawn_ends_each_organ_at_its_drawn_slices(sparse_files, capsys):
    folder, sparse, full = sparse_files
    out = folder / "stopped.nii.gz"
    assert main(["complete", str(folder / "sparse.nii.gz"), "-o", str(out), "--method", "sdf",
                 "--stop-at-drawn", "--quiet"]) == 0
    filled, drawn, truth = load_labels(out).array, sparse.array, full.array
    for label in full.labels:
        ks = np.flatnonzero((drawn == label).any(axis=(0, 1)))
        inside = np.flatnonzero((filled == label).any(axis=(0, 1)))
        assert inside[0] == ks[0] and inside[-1] == ks[-1]
        # the phantom's organ does go on beyond its drawn slices, the default fill follows it
        beyond = np.flatnonzero((truth == label).any(axis=(0, 1)))
        assert beyond[0] < ks[0] or beyond[-1] > ks[-1]


def test_cli_names_the_plane_of_labels_drawn_across_another_axis(sparse_files, tmp_path, capsys):
    _, _, full = sparse_files
    save(every_nth(full, 3, axis=0), tmp_path / "sagittal.nii.gz")
    code = main(["complete", str(tmp_path / "sagittal.nii.gz"), "-o", str(tmp_path / "x.nii.gz"),
                 "--method", "sdf", "--quiet"])
    assert code == 1
    assert "--axis 0" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists()
