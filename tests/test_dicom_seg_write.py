"""DICOM SEG writing (--seg-out): round trip, placement on the source slices, codes, colours.

Ground truth comes from outside the writer: the source files as pydicom reads them
(their positions, UIDs and pixels), dcmqi's own SEG of the same labels, label maps
made in 3D Slicer, and CIELab colours computed by scikit-image.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from _builders import enhanced_ct, write_series
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from scipy.spatial.transform import Rotation

from medrecon.cli import main
from medrecon.errors import DicomError, EmptySegmentationError, GeometryError, InputError
from medrecon.io import load, load_labels
from medrecon.io.dicom import list_series, plan_series
from medrecon.io.dicom_seg_write import write_seg
from medrecon.labels import organ_colour
from medrecon.volume import LabelMap

hd = pytest.importorskip("highdicom")

NETWORK = {"kind": "network", "name": "default", "version": "3"}
ROWS, COLS = 12, 10


def _dice_by_name(a: LabelMap, b: LabelMap) -> dict[str, float]:
    """Dice of each structure of ``a`` against the structure of the same name in ``b``."""
    ids = {name: label for label, name in b.names.items()}
    out = {}
    for label in a.labels:
        x = np.asarray(a.array) == label
        y = np.asarray(b.array) == ids.get(a.name_of(label), -1)
        out[a.name_of(label)] = 2.0 * np.count_nonzero(x & y) / (np.count_nonzero(x) + np.count_nonzero(y))
    return out


def _frames(seg) -> list[tuple[int, str, np.ndarray, int | None]]:
    """(segment number, referenced SOP instance, ImagePositionPatient, referenced frame) per SEG frame."""
    out = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        ref = item.DerivationImageSequence[0].SourceImageSequence[0]
        frame = ref.get("ReferencedFrameNumber")
        out.append((int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
                    str(ref.ReferencedSOPInstanceUID),
                    np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float),
                    None if frame is None else int(frame)))
    return out


def _segments(seg) -> dict[str, Dataset]:
    return {str(s.SegmentLabel): s for s in seg.SegmentSequence}


# --- a synthetic series whose pixels say which voxel they are --------------------------------


def _raw(k: int) -> np.ndarray:
    """Raw values of slice k: c + 16 r + 256 k + 100, unique per voxel."""
    r, c = np.mgrid[:ROWS, :COLS]
    return (100 + c + 16 * r + 256 * k).astype(np.int16)


def _truth(raw: np.ndarray) -> dict[str, np.ndarray]:
    """The organs as a rule on a slice's raw pixels, so each frame can be checked against its source."""
    v = np.asarray(raw, dtype=np.int64) - 100
    c, r, k = v % 16, v // 16 % 16, v // 256
    return {"liver": (c < 4) & (k % 2 == 0), "kidney_left": (r >= 8) & (c >= 6)}


def _labels_of(volume) -> LabelMap:
    raw = np.rint(np.asarray(volume.array) + 1024).astype(np.int64)  # RescaleIntercept -1024
    truth = _truth(raw)
    array = np.zeros(volume.shape, np.uint8)
    array[truth["liver"]] = 5
    array[truth["kidney_left"]] = 3
    return LabelMap(array=array, affine=volume.affine, names={5: "liver", 3: "kidney_left"})


def _oblique_positions(n, *, rotvec, dz=1.5, p0=(-3.0, 4.0, -20.0)):
    rot = Rotation.from_rotvec(rotvec).as_matrix()
    row, col = rot @ [1.0, 0.0, 0.0], rot @ [0.0, 1.0, 0.0]
    normal = np.cross(row, col)
    return [tuple(np.asarray(p0) + k * dz * normal) for k in range(n)], tuple(row) + tuple(col)


def _series(folder, layout: str):
    """Write a 6-slice series in one of several layouts; returns the folder."""
    n = 6
    positions = [(-3.0, 4.0, -20.0 + 1.5 * k) for k in range(n)]
    kwargs: dict = {}
    if layout == "shuffled":  # file names and instance numbers in no particular order
        order = [3, 0, 5, 1, 4, 2]
        kwargs = {"names": [f"x{o}.dcm" for o in order], "instances": [n - o for o in order]}
    elif layout == "descending":  # files and instances run head to feet
        positions = positions[::-1]
    elif layout == "flipped":  # rows run right to left: the slice normal points to the feet
        kwargs = {"orientation": (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)}
    elif layout == "oblique":
        positions, orientation = _oblique_positions(n, rotvec=[0.3, -0.2, 0.4])
        kwargs = {"orientation": orientation}
    elif layout == "tilted":  # gantry tilt: positions drift along the columns
        positions = [(-3.0, 4.0 + 0.4 * k, -20.0 + 1.5 * k) for k in range(n)]
    elif layout == "uneven":  # a slice missing: resampled to even spacing on loading
        positions = [(-3.0, 4.0, z) for z in (-20.0, -18.5, -17.0, -14.0, -12.5, -11.0)]
    write_series(folder, positions, values=_raw, **kwargs)
    return folder


@pytest.mark.parametrize("layout", ["shuffled", "descending", "flipped", "oblique"])
def test_frames_sit_on_their_source_slices(tmp_path, layout):
    src = _series(tmp_path / "ct", layout)
    volume = load(src)
    result = write_seg(_labels_of(volume), src, tmp_path / "seg.dcm", algorithm=NETWORK)
    assert result.on_source_slices
    sources = {}
    for f in src.iterdir():
        ds = pydicom.dcmread(f)
        sources[str(ds.SOPInstanceUID)] = (np.array(ds.ImagePositionPatient, float), ds.pixel_array)
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    numbers = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    frames = _frames(seg)
    pixels = seg.pixel_array.reshape(len(frames), ROWS, COLS)
    covered = set()
    for (number, sop, ipp, _frame), mask in zip(frames, pixels, strict=True):
        source_ipp, raw = sources[sop]
        np.testing.assert_allclose(ipp, source_ipp, atol=1e-6)  # the frame is the source slice
        name = next(n for n, v in numbers.items() if v == number)
        np.testing.assert_array_equal(mask.astype(bool), _truth(raw)[name])  # and holds its labels
        covered.add((name, sop))
    # every source slice where an organ is present has its frame
    expected = {(name, sop) for sop, (_p, raw) in sources.items() for name, m in _truth(raw).items()
                if m.any()}
    assert covered == expected


@pytest.mark.parametrize("layout", ["shuffled", "flipped", "oblique", "tilted", "uneven"])
def test_round_trip_through_the_seg_reader(tmp_path, layout):
    src = _series(tmp_path / "ct", layout)
    volume = load(src)
    labels = _labels_of(volume)
    if layout in ("tilted", "uneven"):  # resampled on loading: label slices are not source slices
        with pytest.warns(UserWarning, match="not on the source slices"):
            result = write_seg(labels, src, tmp_path / "seg.dcm", algorithm=NETWORK)
        assert not result.on_source_slices
    else:
        result = write_seg(labels, src, tmp_path / "seg.dcm", algorithm=NETWORK)
    back = load_labels(tmp_path / "seg.dcm")
    assert back.same_grid(volume, atol=1e-4)
    assert _dice_by_name(labels, back) == {"liver": 1.0, "kidney_left": 1.0}


def _enhanced_ct(path, positions, order, *, series_uid=None) -> None:
    """One enhanced (multi-frame) CT file; frame f holds slice order[f]."""
    enhanced_ct(path, [positions[k] for k in order], lambda f: _raw(order[f]), slope=1,
                intercept=-1024, series_uid=series_uid)


def test_multiframe_source_frames_are_referenced_by_number(tmp_path):
    positions = [(-3.0, 4.0, -20.0 + 1.25 * k) for k in range(5)]
    order = [3, 1, 4, 0, 2]  # frames stored out of order
    _enhanced_ct(tmp_path / "mf.dcm", positions, order)
    volume = load(tmp_path / "mf.dcm")
    labels = _labels_of(volume)
    result = write_seg(labels, tmp_path / "mf.dcm", tmp_path / "seg.dcm", algorithm=NETWORK)
    assert result.on_source_slices
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    frames = _frames(seg)
    assert frames
    for _number, _sop, ipp, frame in frames:
        np.testing.assert_allclose(ipp, positions[order[frame - 1]], atol=1e-6)
    assert _dice_by_name(labels, load_labels(tmp_path / "seg.dcm")) == {"liver": 1.0, "kidney_left": 1.0}


def test_series_over_several_multiframe_files(tmp_path):
    """No one-to-one frame references there: frames placed by the grid, said, and still exact."""
    positions = [(-3.0, 4.0, -20.0 + 1.25 * k) for k in range(6)]
    uid = generate_uid()
    _enhanced_ct(tmp_path / "ct" / "a.dcm", positions, [0, 2, 4], series_uid=uid)
    _enhanced_ct(tmp_path / "ct" / "b.dcm", positions, [5, 3, 1], series_uid=uid)
    volume = load(tmp_path / "ct")
    labels = _labels_of(volume)
    with pytest.warns(UserWarning, match="spread over several files"):
        result = write_seg(labels, tmp_path / "ct", tmp_path / "seg.dcm", algorithm=NETWORK)
    assert not result.on_source_slices
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 2  # both files
    for item in seg.PerFrameFunctionalGroupsSequence:  # every frame still lies on a slice position
        ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
        assert min(np.abs(ipp - np.array(p)).max() for p in positions) < 1e-4
    assert _dice_by_name(labels, load_labels(tmp_path / "seg.dcm")) == {"liver": 1.0, "kidney_left": 1.0}


# --- real data ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ct3(dcmqi_dir, tmp_path_factory):
    """dcmqi's 3-slice CT, Slicer's liver + spine label map on it, and the SEG medrecon writes."""
    volume = load(dcmqi_dir / "ct-3slice")
    slicer = load_labels(dcmqi_dir / "liver_spine_seg.nrrd")
    assert slicer.same_grid(volume)
    labels = slicer.replace(names={1: "liver", 2: "spine"})
    out = tmp_path_factory.mktemp("seg") / "seg.dcm"
    result = write_seg(labels, dcmqi_dir / "ct-3slice", out, algorithm=NETWORK,
                       series=volume.meta["series_choice"]["key"])
    return volume, labels, out, result


def test_real_ct_round_trip_dice_one(ct3):
    volume, labels, out, _result = ct3
    back = load_labels(out)
    assert back.same_grid(volume, atol=1e-4)
    assert _dice_by_name(labels, back) == {"liver": 1.0, "spine": 1.0}


def test_pydicom_and_highdicom_read_it(ct3, dcmqi_dir):
    _volume, _labels, out, _result = ct3
    source = pydicom.dcmread(dcmqi_dir / "ct-3slice" / "01.dcm")
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.Modality == "SEG"
    # filed beside its images: same patient, study and frame of reference; the series is referenced
    for key in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert ds[key].value == source[key].value
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    seg = hd.seg.segread(out)
    assert [seg.get_segment_description(n).segment_label for n in seg.segment_numbers] == ["liver", "spine"]
    assert seg.get_segment_numbers(segment_label="liver") == [1]


def test_frames_match_dcmqi_seg_of_the_same_labels(ct3, dcmqi_dir):
    """dcmqi's liver.dcm (made from Slicer's liver_seg.nrrd): same source slices, same pixels."""
    _volume, _labels, out, _result = ct3
    ours, theirs = pydicom.dcmread(out), pydicom.dcmread(dcmqi_dir / "liver.dcm")

    def liver_frames(ds, number):
        frames = _frames(ds)
        pixels = ds.pixel_array.reshape(len(frames), ds.Rows, ds.Columns)
        return {sop: (ipp, pixels[f]) for f, (n, sop, ipp, _) in enumerate(frames) if n == number}

    mine, ref = liver_frames(ours, 1), liver_frames(theirs, 1)
    assert set(mine) == set(ref) and len(ref) == 3
    for sop, (ipp, mask) in ref.items():
        np.testing.assert_allclose(mine[sop][0], ipp, atol=1e-4)
        np.testing.assert_array_equal(mine[sop][1], mask)


def test_names_colours_and_codes(ct3):
    from skimage.color import rgb2lab

    _volume, _labels, out, result = ct3
    segments = _segments(pydicom.dcmread(out))
    liver = segments["liver"]
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodingSchemeDesignator == "SCT"
    typ = liver.SegmentedPropertyTypeCodeSequence[0]
    assert (typ.CodingSchemeDesignator, typ.CodeValue, typ.CodeMeaning) == ("SCT", "10200004", "Liver")
    # "spine" is in no code table: the generic Tissue code, and the result says so
    spine = segments["spine"].SegmentedPropertyTypeCodeSequence[0]
    assert (spine.CodeValue, spine.CodeMeaning) == ("85756007", "Tissue")
    assert result.generic == ("spine",)
    assert "coded as Tissue: spine" in result.summary()
    for name, item in segments.items():
        value = np.array(item.RecommendedDisplayCIELabValue, float)
        lab = [value[0] * 100 / 65535, value[1] * 255 / 65535 - 128, value[2] * 255 / 65535 - 128]
        rgb = np.round(np.array(organ_colour(name, 1 if name == "liver" else 2)) * 255) / 255
        np.testing.assert_allclose(lab, rgb2lab(rgb[None, None])[0, 0], atol=0.3)


def test_sample_study_all_organs(sample_dir, tmp_path):
    """The sample study's 44 structures: Dice 1.0 each, each with its own SNOMED CT code, sides as modifiers."""
    volume = load(sample_dir / "dicom")
    labels = load_labels(sample_dir / "labels.nii.gz")
    result = write_seg(labels, sample_dir / "dicom", tmp_path / "seg.dcm",
                       algorithm={"kind": "preset", "name": "bone", "version": None})
    assert result.generic == () and result.empty == ()
    back = load_labels(tmp_path / "seg.dcm")
    assert back.same_grid(volume, atol=1e-4)
    dice = _dice_by_name(labels, back)
    assert len(dice) == 44 and set(dice.values()) == {1.0}
    segments = _segments(pydicom.dcmread(tmp_path / "seg.dcm"))
    # codes from TotalSegmentator's published mapping
    expected = {"spleen": ("78961009", None), "kidney_left": ("64033007", "7771000"),
                "kidney_right": ("64033007", "24028007"), "pancreas": ("15776009", None),
                "aorta": ("15825003", None), "vertebrae_L1": ("66794005", None),
                "rib_left_5": ("15339008", "7771000")}
    for name, (code, side) in expected.items():
        typ = segments[name].SegmentedPropertyTypeCodeSequence[0]
        assert typ.CodeValue == code
        modifier = typ.get("SegmentedPropertyTypeModifierCodeSequence")
        assert (modifier[0].CodeValue if modifier else None) == side


@pytest.mark.parametrize(("kind", "algorithm_type", "family"), [
    ("network", "AUTOMATIC", "Artificial Intelligence"),
    ("engine", "AUTOMATIC", "Artificial Intelligence"),
    ("preset", "SEMIAUTOMATIC", "Morphological Operations"),
    ("imported", "MANUAL", "Manual Processing"),
])
def test_algorithm_is_named(tmp_path, kind, algorithm_type, family):
    src = _series(tmp_path / "ct", "shuffled")
    write_seg(_labels_of(load(src)), src, tmp_path / "seg.dcm",
              algorithm={"kind": kind, "name": "thing", "version": None})
    for item in pydicom.dcmread(tmp_path / "seg.dcm").SegmentSequence:
        assert item.SegmentAlgorithmType == algorithm_type
        ident = item.SegmentationAlgorithmIdentificationSequence[0]
        assert ident.AlgorithmName == f"medrecon {kind} thing"
        assert ident.AlgorithmFamilyCodeSequence[0].CodeMeaning == family
        assert ident.AlgorithmVersion  # medrecon's version where the source has none


def test_empty_organ_is_not_an_empty_segment(tmp_path):
    src = _series(tmp_path / "ct", "shuffled")
    labels = _labels_of(load(src))
    labels = labels.replace(names={**labels.names, 1: "spleen"})
    with pytest.warns(UserWarning, match="spleen: no voxels, not written"):
        result = write_seg(labels, src, tmp_path / "seg.dcm", algorithm=NETWORK)
    assert result.empty == ("spleen",)
    assert set(_segments(pydicom.dcmread(tmp_path / "seg.dcm"))) == {"liver", "kidney_left"}
    with pytest.raises(EmptySegmentationError, match="no voxels"):
        write_seg(labels.replace(array=np.zeros(labels.shape, np.uint8)), src, tmp_path / "e.dcm",
                  algorithm=NETWORK)
    assert not (tmp_path / "e.dcm").exists()


def test_refusals(tmp_path, totalseg_dir):
    src = _series(tmp_path / "ct", "shuffled")
    labels = _labels_of(load(src))
    with pytest.raises(InputError, match="not DICOM"):
        write_seg(labels, totalseg_dir / "example_ct_sm.nii.gz", tmp_path / "a.dcm", algorithm=NETWORK)
    moved = labels.replace(affine=labels.affine @ np.diag([1.0, 1.0, 2.0, 1.0]))
    with pytest.raises(GeometryError, match="do not lie on the grid"):
        write_seg(moved, src, tmp_path / "b.dcm", algorithm=NETWORK)
    with pytest.raises(ValueError, match="algorithm kind"):
        write_seg(labels, src, tmp_path / "c.dcm", algorithm={"kind": "guess", "name": "x"})
    # an anonymised export without study, series and SOP instance UIDs cannot be referenced
    plan = plan_series(next(s for s in list_series(totalseg_dir / "example_ct_dicom") if s.volume_like))
    grid = np.zeros(plan.shape, np.uint8)
    grid[10:20, 10:20, 2] = 1
    with pytest.raises(DicomError, match="has no SOPClassUID, SOPInstanceUID, SeriesInstanceUID"):
        write_seg(LabelMap(array=grid, affine=plan.source_affine, names={1: "liver"}),
                  totalseg_dir / "example_ct_dicom", tmp_path / "d.dcm", algorithm=NETWORK)
    assert not list(tmp_path.glob("*.dcm"))


# --- the command line -----------------------------------------------------------------------


def test_cli_reconstruct_seg_out(dcmqi_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reconstruct", str(dcmqi_dir / "ct-3slice"), "-o", str(out), "--preset", "bone",
                 "--seg-out", str(out / "seg.dcm"), "--quiet", "--no-preview"]) == 0
    assert f"wrote {out / 'seg.dcm'} (DICOM SEG, 1 segment: bone)" in capsys.readouterr().out
    labels = load_labels(out / "labels.nii.gz")
    assert _dice_by_name(labels, load_labels(out / "seg.dcm")) == {"bone": 1.0}
    item = pydicom.dcmread(out / "seg.dcm").SegmentSequence[0]
    assert item.SegmentAlgorithmType == "SEMIAUTOMATIC" and item.SegmentAlgorithmName == "medrecon preset bone"
    typ = item.SegmentedPropertyTypeCodeSequence[0]
    assert (typ.CodeValue, typ.CodeMeaning) == ("3138006", "Bone")


def test_cli_refuses_seg_out_for_non_dicom_before_working(totalseg_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reconstruct", str(totalseg_dir / "example_ct_sm.nii.gz"), "-o", str(out),
                 "--preset", "bone", "--seg-out", str(out / "seg.dcm"), "--quiet"]) == 1
    assert "not DICOM" in capsys.readouterr().err
    assert not out.exists()
    assert main(["segment", str(totalseg_dir / "example_ct_sm.nii.gz"), "-o", str(tmp_path / "l.nii.gz"),
                 "--seg-out", str(tmp_path / "seg.dcm"), "--quiet"]) == 1
    assert "not DICOM" in capsys.readouterr().err
    assert not (tmp_path / "l.nii.gz").exists()


def test_cli_segment_seg_out(sample_dir, tmp_path, capsys):
    from medrecon.io.dicom_write import write_dicom_series

    volume = load(sample_dir / "dicom")
    crop = (slice(60, 190), slice(60, 190), slice(30, 36))
    affine = volume.affine.copy()
    affine[:3, 3] = volume.voxel_to_world([s.start for s in crop])
    write_dicom_series(volume.replace(array=np.asarray(volume.array)[crop], affine=affine), tmp_path / "ct")
    assert main(["segment", str(tmp_path / "ct"), "-o", str(tmp_path / "labels.nii.gz"),
                 "--seg-out", str(tmp_path / "seg.dcm"), "--quiet"]) == 0
    assert f"wrote {tmp_path / 'seg.dcm'} (DICOM SEG, " in capsys.readouterr().out
    labels = load_labels(tmp_path / "labels.nii.gz")
    dice = _dice_by_name(labels, load_labels(tmp_path / "seg.dcm"))
    assert "liver" in dice and set(dice.values()) == {1.0}
    for item in pydicom.dcmread(tmp_path / "seg.dcm").SegmentSequence:
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentAlgorithmName == "medrecon network default"
