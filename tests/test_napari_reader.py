"""The napari reader on real data: placement checked against the files' own headers."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

napari = pytest.importorskip("napari")
nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")

from napari_plugin._reader import napari_get_reader  # noqa: E402

pytestmark = pytest.mark.napari

LIVER = 5


def test_manifest_is_discovered_and_valid():
    from pathlib import Path

    import npe2

    import napari_plugin

    manifest = npe2.PluginManifest.from_file(Path(napari_plugin.__file__).with_name("napari.yaml"))
    assert manifest.name == "medrecon"
    manifest.validate_imports()  # every python_name resolves to a callable
    pm = npe2.PluginManager.instance()
    pm.discover()
    assert "medrecon" in {m.name for m in pm.iter_manifests()}
    contributions = pm.get_manifest("medrecon").contributions
    assert {w.display_name for w in contributions.widgets} == {
        "Reconstruct organs", "Mesh and export", "Complete from slices", "Segment (edit labels)",
    }
    assert [s.key for s in contributions.sample_data] == ["abdominal_phantom"]


def test_get_reader_declines_what_it_cannot_read(tmp_path, totalseg_dir):
    (tmp_path / "notes.txt").write_text("not an image")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader(str(tmp_path)) is None  # a folder without DICOM
    assert napari_get_reader(str(tmp_path / "missing.nii.gz")) is None
    assert napari_get_reader(str(totalseg_dir / "class_map_total.json")) is None
    two = [str(totalseg_dir / "example_seg.nii.gz"), str(totalseg_dir / "example_ct_sm.nii.gz")]
    assert napari_get_reader(two) is None
    assert napari_get_reader(str(totalseg_dir / "example_ct_dicom")) is not None
    assert napari_get_reader(str(totalseg_dir / "example_seg.nii.gz")) is not None


def test_read_error_becomes_a_notification(tmp_path, monkeypatch, make_napari_viewer):
    import napari.utils.notifications as notifications

    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage that is not a NIfTI image")
    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    reader = napari_get_reader(str(bad))
    assert reader is not None
    assert reader(str(bad)) == [(None,)]  # napari's "read fine, no layers" sentinel
    assert len(shown) == 1 and "broken.nii.gz" in shown[0]
    viewer = make_napari_viewer()
    assert viewer.open(str(bad), plugin="medrecon") == []  # no second, napari-made error
    assert len(viewer.layers) == 0 and len(shown) == 2 and shown[1] == shown[0]


def _lps_zyx_from_ras(points_ras):
    p = np.asarray(points_ras, dtype=float)
    return np.c_[p[:, 2], -p[:, 1], -p[:, 0]]  # RAS -> LPS, then (z, y, x)


def test_dicom_and_nifti_labels_line_up_in_world_mm(make_napari_viewer, totalseg_dir):
    viewer = make_napari_viewer()
    dicom_dir = totalseg_dir / "example_ct_dicom"
    seg_path = totalseg_dir / "example_seg_dicom.nii.gz"
    [ct] = viewer.open(str(dicom_dir), plugin="medrecon")
    [seg] = viewer.open(str(seg_path), plugin="medrecon")
    assert isinstance(ct, napari.layers.Image) and isinstance(seg, napari.layers.Labels)

    # CT: the first pixel of the lowest slice sits at its ImagePositionPatient,
    # rows run along ImageOrientationPatient's column cosines (posterior here)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(dicom_dir.iterdir())]
    lowest = min(headers, key=lambda h: float(h.ImagePositionPatient[2]))
    x, y, z = (float(v) for v in lowest.ImagePositionPatient)
    np.testing.assert_allclose(ct.data_to_world((0, 0, 0)), (z, y, x), atol=1e-3)
    row, col = (float(v) for v in lowest.PixelSpacing)
    np.testing.assert_allclose(
        np.subtract(ct.data_to_world((0, 1, 0)), ct.data_to_world((0, 0, 0))), (0, row, 0), atol=1e-4
    )
    np.testing.assert_allclose(
        np.subtract(ct.data_to_world((0, 0, 1)), ct.data_to_world((0, 0, 0))), (0, 0, col), atol=1e-4
    )
    # the stored pixel at (row j, column i) is layer value [k, j, i] (HU = raw * slope + intercept)
    ds = pydicom.dcmread(lowest.filename)
    raw = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(np.asarray(ct.data[0]), raw, atol=1e-3)

    # labels: the liver centroid lands where the NIfTI header (read by nibabel) puts it
    img = nib.load(seg_path)
    truth = np.asarray(img.dataobj)
    ijk = np.argwhere(truth == LIVER).mean(axis=0)
    expected = _lps_zyx_from_ras([img.affine[:3, :3] @ ijk + img.affine[:3, 3]])[0]
    kji = np.argwhere(np.asarray(seg.data) == LIVER).mean(axis=0)
    np.testing.assert_allclose(seg.data_to_world(kji), expected, atol=1e-3)

    # image and labels line up: liver voxels sample liver-like HU in the CT layer
    liver_kji = np.argwhere(np.asarray(seg.data) == LIVER)[::97]
    world = np.array([seg.data_to_world(p) for p in liver_kji])
    ct_idx = np.rint([ct.world_to_data(w) for w in world]).astype(int)
    inside = np.all((ct_idx >= 0) & (ct_idx < ct.data.shape), axis=1)
    assert inside.all()
    hu = np.asarray(ct.data)[tuple(ct_idx.T)]
    assert 30 < np.median(hu) < 120, np.median(hu)


def test_opened_label_file_can_be_painted_and_undone(make_napari_viewer, totalseg_dir):
    viewer = make_napari_viewer()
    [seg] = viewer.open(str(totalseg_dir / "example_seg.nii.gz"), plugin="medrecon")
    before = np.array(seg.data)
    spot = tuple(int(v) for v in np.argwhere(before == 0)[0])
    seg.paint(spot, 7, refresh=False)  # the brush, as a user's click would apply it
    assert np.asarray(seg.data)[spot] == 7
    seg.undo()
    np.testing.assert_array_equal(np.asarray(seg.data), before)


def test_sample_data_is_the_seeded_phantom_and_lines_up(make_napari_viewer, small_phantom):
    volume, truth = small_phantom  # generated in memory; the sample went through files
    viewer = make_napari_viewer()
    layers = viewer.open_sample("medrecon", "abdominal_phantom")
    [image] = [lyr for lyr in layers if isinstance(lyr, napari.layers.Image)]
    [labels] = [lyr for lyr in layers if isinstance(lyr, napari.layers.Labels)]
    assert labels.metadata["medrecon"]["names"][LIVER] == "liver"
    kji = np.argwhere(np.asarray(labels.data) == LIVER).mean(axis=0)
    expected = truth.voxel_to_world([np.argwhere(truth.mask(LIVER)).mean(axis=0)])[0][::-1]
    np.testing.assert_allclose(labels.data_to_world(kji), expected, atol=0.5)
    # the image layer samples the same liver HU at the labels' world positions
    liver_kji = np.argwhere(np.asarray(labels.data) == LIVER)[::7]
    idx = np.rint([image.world_to_data(labels.data_to_world(p)) for p in liver_kji]).astype(int)
    hu = np.asarray(image.data)[tuple(idx.T)]
    expected_hu = np.median(np.asarray(volume.array)[truth.mask(LIVER)])
    assert abs(np.median(hu) - expected_hu) < 5, (np.median(hu), expected_hu)


@pytest.mark.parametrize(
    ("name", "dtype", "kind"),
    [
        ("segmental_study.nii.gz", np.float32, "image"),  # label-like name, but real-valued
        ("organs.nii.gz", np.uint8, "labels"),  # few non-negative integers
        ("ct.nii.gz", np.int16, "image"),  # many values
    ],
)
def test_labels_or_image_is_decided_by_content(tmp_path, name, dtype, kind):
    from napari_plugin._reader import read_path

    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 1000, (6, 7, 8)) if kind == "image" else rng.integers(0, 4, (6, 7, 8))
    array = array.astype(dtype) + (0.5 if dtype == np.float32 else 0)
    nib.save(nib.Nifti1Image(array, np.diag([0.5, 0.5, 2.0, 1.0])), tmp_path / name)
    [(data, _kwargs, layer_type)] = read_path(tmp_path / name)
    assert layer_type == kind
    np.testing.assert_array_equal(data, array.transpose(2, 1, 0))


def test_content_wins_over_a_label_like_name(tmp_path, totalseg_dir):
    import shutil

    from napari_plugin._layers import CT_WINDOW
    from napari_plugin._reader import read_path

    # a real CT whose name says "seg", and its real segmentation under a plain name
    shutil.copy(totalseg_dir / "example_ct_sm.nii.gz", tmp_path / "ct_for_segmentation.nii.gz")
    shutil.copy(totalseg_dir / "example_seg.nii.gz", tmp_path / "organs.nii.gz")
    [(_data, kwargs, kind)] = read_path(tmp_path / "ct_for_segmentation.nii.gz")
    assert kind == "image" and tuple(kwargs["contrast_limits"]) == CT_WINDOW
    [(data, _kwargs, kind)] = read_path(tmp_path / "organs.nii.gz")
    assert kind == "labels" and np.unique(data).size == 42


def _two_series(tmp_path, dcmqi_dir, sample_dir):
    for name, src in (("a", sample_dir / "dicom"), ("b", dcmqi_dir / "ct-3slice")):
        (tmp_path / name).mkdir()
        for f in src.iterdir():
            (tmp_path / name / f.name).symlink_to(f)
    return tmp_path


class _Asker:
    """Stands in for the dialogs of napari_plugin._qt._series_dialog: records the questions."""

    def __init__(self, rows=None, whole=None):
        self.rows, self.whole, self.asked = rows, whole, []

    def ask_series(self, source, choices, default):
        self.asked.append((source, list(choices), default))
        return self.rows

    def ask_whole_series(self, file_name, series):
        self.asked.append((file_name, series))
        return self.whole


def test_folder_with_two_series_asks_which(tmp_path, dcmqi_dir, sample_dir, monkeypatch):
    import napari.utils.notifications as notifications

    import napari_plugin._reader as reader

    folder = _two_series(tmp_path, dcmqi_dir, sample_dir)
    asker = _Asker(rows=[0])
    monkeypatch.setattr(reader, "_asker", lambda: asker)
    [layer] = reader.read_layers(str(folder))
    [(source, choices, default)] = asker.asked
    assert source == folder.name and len(choices) == 2
    # preselected as the CLI's --series auto: the thinner slices (1 mm, 3 slices) over 3 mm
    assert "(3 slices)" in choices[default] and "(72 slices)" in choices[1 - default]
    assert layer[0].shape[0] == int(choices[0].split("(")[-1].split()[0])  # the chosen row's slices

    asker.rows = [0, 1]  # both: the preselected one shown, and made the active (last) layer
    layers = reader.read_layers(str(folder))
    assert [t[0].shape[0] for t in layers] == [72, 3]
    assert [t[1]["visible"] for t in layers] == [False, True]
    asker.rows = None  # cancelled: nothing opens, no error
    assert reader.read_layers(str(folder)) == [(None,)]

    # no window to ask in (a script): --series auto's choice, the others named in a notice
    shown = []
    monkeypatch.setattr(notifications, "show_info", shown.append)
    monkeypatch.setattr(reader, "_asker", lambda: None)
    [layer] = reader.read_layers(str(folder))
    assert layer[0].shape[0] == 3
    assert len(shown) == 1 and "2 volume series" in shown[0] and "(72 slices)" in shown[0]


def test_one_dropped_dicom_file_offers_its_series(tmp_path, dcmqi_dir, monkeypatch):
    import shutil

    import napari.utils.notifications as notifications

    import napari_plugin._reader as reader

    shutil.copytree(dcmqi_dir / "ct-3slice", tmp_path / "ct")
    one = tmp_path / "ct" / "02.dcm"
    asker = _Asker(whole=True)
    monkeypatch.setattr(reader, "_asker", lambda: asker)
    [(data, _kwargs, kind)] = reader.read_layers(str(one))
    assert kind == "image" and data.shape[0] == 3
    assert asker.asked == [("02.dcm", asker.asked[0][1])] and "(3 slices)" in asker.asked[0][1]
    asker.whole = False
    [(data, _kwargs, _kind)] = reader.read_layers(str(one))
    assert data.shape[0] == 1
    np.testing.assert_allclose(  # the very slice that was dropped
        np.asarray(data[0]), pydicom.dcmread(one).pixel_array * float(pydicom.dcmread(one).RescaleSlope)
        + float(pydicom.dcmread(one).RescaleIntercept), atol=1e-3)
    asker.whole = None
    assert reader.read_layers(str(one)) == [(None,)]
    shown = []
    monkeypatch.setattr(notifications, "show_info", shown.append)
    monkeypatch.setattr(reader, "_asker", lambda: None)
    [(data, _kwargs, _kind)] = reader.read_layers(str(one))
    assert data.shape[0] == 1 and len(shown) == 1 and "ct" in shown[0]


@pytest.mark.parametrize(
    ("tags", "limits"),
    [
        ({"WindowCenter": "35", "WindowWidth": "100", "BodyPartExamined": "HEAD"}, (-15.0, 85.0)),  # its own
        ({"BodyPartExamined": "HEAD"}, (0.0, 80.0)),  # no window in the file: the brain window
        ({"BodyPartExamined": "ABDOMEN"}, (-160.0, 240.0)),  # the CT soft-tissue window
    ],
)
def test_dicom_images_open_in_their_window(tmp_path, dcmqi_dir, tags, limits):
    from napari_plugin._reader import read_path

    (tmp_path / "ct").mkdir()
    for f in sorted((dcmqi_dir / "ct-3slice").iterdir()):
        ds = pydicom.dcmread(f)
        for tag in ("WindowCenter", "WindowWidth", "BodyPartExamined"):
            if tag in ds:
                delattr(ds, tag)
        for tag, value in tags.items():
            setattr(ds, tag, value)
        ds.save_as(tmp_path / "ct" / f.name)
    [(_data, kwargs, _kind)] = read_path(tmp_path / "ct")
    assert tuple(kwargs["contrast_limits"]) == pytest.approx(limits)


def test_real_ct_opens_in_the_first_window_of_its_header(totalseg_dir):
    from napari_plugin._reader import read_path

    folder = totalseg_dir / "example_ct_dicom"
    header = pydicom.dcmread(sorted(folder.iterdir())[0], stop_before_pixels=True)
    center, width = float(header.WindowCenter[0]), float(header.WindowWidth[0])  # [40, 300], [300, 1500]
    [(_data, kwargs, _kind)] = read_path(folder)
    assert tuple(kwargs["contrast_limits"]) == pytest.approx((center - width / 2, center + width / 2))


def test_nrrd_labels_line_up_with_their_dicom(make_napari_viewer, dcmqi_dir):
    nrrd = pytest.importorskip("nrrd")
    viewer = make_napari_viewer()
    [ct] = viewer.open(str(dcmqi_dir / "ct-3slice"), plugin="medrecon")
    [seg] = viewer.open(str(dcmqi_dir / "liver_seg.nrrd"), plugin="medrecon")
    assert isinstance(seg, napari.layers.Labels)
    # ground truth from pynrrd: LPS origin + direction columns, (i, j, k) index order
    data, header = nrrd.read(str(dcmqi_dir / "liver_seg.nrrd"))
    assert header["space"] == "left-posterior-superior"
    ijk = np.argwhere(data == 1).mean(axis=0)
    lps = header["space origin"] + np.asarray(header["space directions"]).T @ ijk
    kji = np.argwhere(np.asarray(seg.data) == 1).mean(axis=0)
    np.testing.assert_allclose(seg.data_to_world(kji), lps[::-1], atol=1e-3)
    # same grid as the DICOM it was drawn on
    for corner in [(0, 0, 0), (2, 511, 511)]:
        np.testing.assert_allclose(seg.data_to_world(corner), ct.data_to_world(corner), atol=1e-3)


def test_metaimage_written_by_simpleitk(make_napari_viewer, totalseg_dir, tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    src = totalseg_dir / "example_seg.nii.gz"
    image = sitk.ReadImage(str(src))
    for key in image.GetMetaDataKeys():  # NIfTI header fields copied as MetaIO keys (dim[0] = 3 ...)
        image.EraseMetaData(key)
    sitk.WriteImage(image, str(tmp_path / "organs_seg.mha"))
    viewer = make_napari_viewer()
    [seg] = viewer.open(str(tmp_path / "organs_seg.mha"), plugin="medrecon")
    assert isinstance(seg, napari.layers.Labels)
    img = nib.load(src)
    ijk = np.argwhere(np.asarray(img.dataobj) == LIVER).mean(axis=0)
    expected = _lps_zyx_from_ras([img.affine[:3, :3] @ ijk + img.affine[:3, 3]])[0]
    kji = np.argwhere(np.asarray(seg.data) == LIVER).mean(axis=0)
    np.testing.assert_allclose(seg.data_to_world(kji), expected, atol=1e-3)
