"""Fuzzing the label inputs (DICOM SEG, RTSTRUCT), and one regression test per bug it found.

The campaign cases are mutated copies of the real dcmqi SEG and of an RTSTRUCT
drawn on the GE series (``tests/_fuzz/_seg.py``, ``_rtstruct.py``); each must
load correctly (a LabelMap of the declared in-plane size or on the image's grid,
every label named) or raise a ``MedreconError`` with a readable message, within
10 s and the traced allocation bound of ``tests/test_fuzz_readers.py``.
Reproduce a failure with ``python tests/_fuzz/worker.py --case '<spec>'``.
"""

import copy
import json
import shutil

import numpy as np
import pydicom
import pytest
from _builders import write_rtstruct
from _fuzz._dicom import _set_raw
from _fuzz.campaign import LABEL_SOURCES, make_specs, run_campaign, summarise

from medrecon.errors import DicomError, EmptySegmentationError, GeometryError, InputError
from medrecon.io import load, load_labels
from medrecon.sources.imported import import_labels, read_rtstruct
from medrecon.volume import Volume

N_CASES = 160  # 80 per input; bench/fuzz_report.py --sources labels runs larger campaigns
BASE_SEED = 2026


def _describe(result: dict) -> str:
    keys = ("source", "mutation", "seed", "what", "entry", "outcome", "error_type", "message", "problems")
    text = json.dumps({k: result.get(k) for k in keys})
    return text + ("\n" + result["traceback"] if result.get("traceback") else "")


@pytest.mark.slow
def test_mutated_seg_and_rtstruct_load_or_fail_cleanly():
    results = run_campaign(make_specs(N_CASES, base_seed=BASE_SEED, sources=LABEL_SOURCES),
                           workers=2, timeout=10.0)
    summary = summarise(results)
    failures = summary.pop("failures")
    print(json.dumps(summary, indent=1))
    assert not failures, f"{len(failures)} bad case(s):\n" + "\n".join(map(_describe, failures[:8]))
    for source, counts in summary["by_source"].items():
        assert counts.get("loaded", 0) >= 10 and counts.get("error", 0) >= 10, (source, counts)


# --- SEG regressions ------------------------------------------------------------------

@pytest.fixture
def seg(dcmqi_dir, tmp_path):
    return pydicom.dcmread(dcmqi_dir / "liver.dcm"), tmp_path / "seg.dcm"


def _save(ds, path):
    ds.save_as(path, enforce_file_format=False)
    return path


def test_seg_without_rows_is_a_dicom_error(seg):  # was AttributeError
    ds, path = seg
    del ds.Rows
    with pytest.raises(DicomError, match="has no Rows"):
        load_labels(_save(ds, path))


def test_seg_element_length_past_the_end_allocates_nothing_big(dcmqi_dir, tmp_path):
    # was a 4 GB read request: the PixelSpacing length rewritten to 0xFFFFFFFF-ish values
    import tracemalloc

    data = bytearray((dcmqi_dir / "liver.dcm").read_bytes())
    at = data.find(bytes.fromhex("28003000"))  # (0028,0030) PixelSpacing, explicit VR
    data[at + 6:at + 8] = (0).to_bytes(2, "little")
    path = tmp_path / "seg.dcm"
    path.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        with pytest.raises(InputError):
            import_labels(path, image=load(dcmqi_dir / "ct-3slice"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024**2


def test_seg_empty_pixel_data_is_a_dicom_error(seg):  # was TypeError inside highdicom
    ds, path = seg
    ds.PixelData = b""
    with pytest.raises(DicomError, match="no pixel data"):
        load_labels(_save(ds, path))


def test_seg_short_pixel_data_is_refused(seg):
    ds, path = seg
    ds.PixelData = bytes(ds.PixelData)[:-2]
    with pytest.raises(DicomError, match="pixel data holds 98,302 bytes"):
        load_labels(_save(ds, path))


def test_seg_fractional_with_one_bit_is_a_dicom_error(seg):  # was AttributeError (MaximumFractionalValue)
    ds, path = seg
    ds.SegmentationType = "FRACTIONAL"
    with pytest.raises(DicomError, match="BitsAllocated is 1 but a FRACTIONAL SEG"):
        load_labels(_save(ds, path))


def test_seg_undeclared_segment_is_a_dicom_error(seg):  # was sqlite3.IntegrityError / silent
    ds, path = seg
    ds.PerFrameFunctionalGroupsSequence[1].SegmentIdentificationSequence[0].ReferencedSegmentNumber = 2
    with pytest.raises(DicomError, match="frame 2 refers to segment 2"):
        load_labels(_save(ds, path))


def test_seg_extra_segment_without_frames_loads(seg):  # was sqlite3.IntegrityError
    ds, path = seg
    extra = copy.deepcopy(ds.SegmentSequence[0])
    extra.SegmentNumber = 2
    extra.SegmentLabel = "Spleen"
    ds.SegmentSequence.append(extra)
    lm = load_labels(_save(ds, path))
    assert set(np.unique(lm.array)) == {0, 1}  # liver (segment 1) only


@pytest.mark.parametrize(("edit", "match"), [
    (lambda ds: ds.SegmentSequence.clear(), "SegmentSequence is missing or empty"),
    (lambda ds: ds.PerFrameFunctionalGroupsSequence.pop(), "has 2 item"),
    (lambda ds: setattr(ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0],
                        "ImagePositionPatient", ["nan", "0", "0"]), "ImagePositionPatient of frame 1"),
    (lambda ds: setattr(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0],
                        "PixelSpacing", ["0", "0"]), "must be positive"),
    (lambda ds: setattr(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0],
                        "ImageOrientationPatient", [2, 0, 0, 0, 2, 0]), "orthogonal unit"),
])
def test_seg_corrupt_structure_names_the_field(seg, edit, match):
    ds, path = seg
    edit(ds)
    with pytest.raises(InputError, match=match):
        load_labels(_save(ds, path))


def test_seg_unknown_transfer_syntax_is_a_dicom_error(seg):  # was ValueError from pydicom.uid
    ds, path = seg
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5"
    with pytest.raises(DicomError, match="not a known DICOM transfer syntax"):
        load_labels(_save(ds, path))


def test_seg_binary_value_is_not_quoted_raw(seg, tmp_path):
    ds, path = seg
    ds["Rows"].VR = "OB"
    ds.Rows = b"\x00\x01\x02" * 40
    with pytest.raises(DicomError, match="binary value of 120 bytes"):
        load_labels(_save(ds, path))


def test_seg_far_from_the_image_is_empty_not_silent(seg, dcmqi_dir):
    ds, path = seg
    for group in ds.PerFrameFunctionalGroupsSequence:
        pos = group.PlanePositionSequence[0].ImagePositionPatient
        group.PlanePositionSequence[0].ImagePositionPatient = [pos[0] + 5000, pos[1], pos[2]]
    with pytest.raises(EmptySegmentationError, match="do not overlap the image"):
        import_labels(_save(ds, path), image=load(dcmqi_dir / "ct-3slice"))


# --- RTSTRUCT regressions -------------------------------------------------------------

def _image():
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    return Volume(np.zeros((40, 36, 10), np.float32), affine, modality="CT", units="HU")


def _square(z, lo=10.0, hi=30.0):
    return np.array([[lo, lo, z], [hi, lo, z], [hi, hi, z], [lo, hi, z]])


def _rt(tmp_path, rois=None):
    return write_rtstruct(tmp_path / "rs.dcm", rois or [(1, "Liver", [_square(6.0)]),
                                                        (2, "Tumour", [_square(9.0, 12, 20)])])


def _edit(path, fn):
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path, enforce_file_format=False)
    return path


@pytest.mark.parametrize(("values", "match"), [
    (["nan"] * 12, "NaN, infinite or absurd"),
    (["1e300"] * 12, "NaN, infinite or absurd"),
    (["1", "2", "3", "4"], "holds 4 numbers"),
    (["1", "x", "3"], "not a number"),
])
def test_rtstruct_bad_contour_data_names_the_contour(tmp_path, values, match):  # were ValueErrors
    path = _edit(_rt(tmp_path), lambda ds: _set_raw(ds.ROIContourSequence[0].ContourSequence[0],
                                                    "ContourData", values))
    with pytest.raises(InputError, match=match + ".*of contour 1 of ROI 1|of contour 1 of ROI 1.*"):
        read_rtstruct(path, _image())


def test_rtstruct_contour_of_undeclared_roi_is_a_dicom_error(tmp_path):  # was KeyError 'roi_1'
    path = _edit(_rt(tmp_path), lambda ds: setattr(ds, "StructureSetROISequence", pydicom.Sequence()))
    with pytest.raises(DicomError, match="refers to ROI 1, which StructureSetROISequence does not declare"):
        read_rtstruct(path, _image())


def test_rtstruct_missing_roi_numbers_are_dicom_errors(tmp_path):  # were AttributeError / TypeError
    path = _edit(_rt(tmp_path), lambda ds: delattr(ds.ROIContourSequence[1], "ReferencedROINumber"))
    with pytest.raises(DicomError, match="ReferencedROINumber of ROIContourSequence item 2 is missing"):
        read_rtstruct(path, _image())
    path = _edit(_rt(tmp_path), lambda ds: _set_raw(ds.StructureSetROISequence[0], "ROINumber", "x"))
    with pytest.raises(DicomError, match="ROINumber of StructureSetROISequence item 1"):
        read_rtstruct(path, _image())


def test_rtstruct_two_rois_of_one_name_stay_two_structures(tmp_path):  # were merged into one label
    path = _rt(tmp_path, [(1, "blob", [_square(6.0)]), (2, "blob", [_square(9.0, 12, 20)])])
    lm = read_rtstruct(path, _image())
    assert sorted(lm.names.values()) == ["blob", "blob_2"]
    assert len(lm.labels) == 2


def test_rtstruct_unknown_vr_is_a_dicom_error(tmp_path):  # was NotImplementedError from pydicom
    path = _rt(tmp_path)
    data = bytearray(path.read_bytes())
    at = data.find(bytes.fromhex("06308400"))  # (3006,0084) ReferencedROINumber
    data[at + 4:at + 6] = b"IQ"
    path.write_bytes(bytes(data))
    with pytest.raises(DicomError, match="ReferencedROINumber"):
        read_rtstruct(path, _image())


def test_rtstruct_without_contours_says_so(tmp_path):
    path = _edit(_rt(tmp_path), lambda ds: setattr(ds, "ROIContourSequence", pydicom.Sequence()))
    with pytest.raises(InputError, match="holds no contours"):
        read_rtstruct(path, _image())


def test_rtstruct_points_only_is_not_called_off_grid(tmp_path):
    def points(ds):
        for roi in ds.ROIContourSequence:
            for c in roi.ContourSequence:
                c.ContourGeometricType = "POINT"
    path = _edit(_rt(tmp_path), points)
    with pytest.raises(GeometryError, match="none of its contours is CLOSED_PLANAR"):
        read_rtstruct(path, _image())


def test_folder_scan_of_a_corrupt_file_allocates_nothing_big(tmp_path):
    # detect_label_source read every file with plain pydicom: a corrupt length read ~0.5-4 GB
    import tracemalloc

    path = _rt(tmp_path)
    data = bytearray(path.read_bytes())
    at = data.find(bytes.fromhex("06301000"))  # (3006,0010) ReferencedFrameOfReferenceSequence
    if at < 0:
        at = data.find(bytes.fromhex("06302000"))
    data[at + 8:at + 12] = (0x7FFFFFFF).to_bytes(4, "little")
    (tmp_path / "case").mkdir()
    shutil.move(path, tmp_path / "case" / "rs.dcm")
    (tmp_path / "case" / "rs.dcm").write_bytes(bytes(data))
    tracemalloc.start()
    try:
        with pytest.raises(InputError):
            import_labels(tmp_path / "case", image=_image())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024**2
