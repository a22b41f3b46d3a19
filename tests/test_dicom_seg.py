"""DICOM SEG reading: segment-to-label mapping and the optional dependency."""

from __future__ import annotations

import sys

import pytest

from medrecon.errors import DicomError, MissingDependencyError
from medrecon.io.dicom_seg import read_seg, segment_ids


def test_segments_keep_their_numbers_and_names():
    mapping = segment_ids({1: "Liver", 2: "Kidney Left", 3: "tumour", 4: "liver", 5: "Spleen"})
    # numbers are never changed (a "Liver" numbered 1 stays 1); known names take the
    # vocabulary's spelling, and a repeated name gets the segment number
    assert mapping == {1: (1, "liver"), 2: (2, "kidney_left"), 3: (3, "tumour"),
                       4: (4, "liver_4"), 5: (5, "spleen")}


def test_unknown_names_keep_segment_numbers():
    assert segment_ids({1: "blob", 7: "Thing\x00 two", 9: ""}) == {1: (1, "blob"), 7: (7, "Thing two"),
                                                                   9: (9, "label_9")}


def test_real_seg_liver_numbered_1_stays_1(dcmqi_dir):
    """dcmqi's SEG of Slicer's liver_seg.nrrd: segment 1 "Liver" is label 1, as in the NRRD."""
    import pydicom

    assert [(int(s.SegmentNumber), str(s.SegmentLabel))
            for s in pydicom.dcmread(dcmqi_dir / "liver.dcm").SegmentSequence] == [(1, "Liver")]
    seg = read_seg(dcmqi_dir / "liver.dcm")
    assert dict(seg.names) == {1: "liver"}
    assert seg.labels == [1]


def test_missing_highdicom_names_the_extra(dcmqi_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(MissingDependencyError, match=r"medrecon\[dicom-seg\]"):
        read_seg(dcmqi_dir / "liver.dcm")


def test_image_is_not_a_seg(dcmqi_dir):
    with pytest.raises(DicomError, match="not a DICOM Segmentation"):
        read_seg(dcmqi_dir / "ct-3slice" / "01.dcm")
