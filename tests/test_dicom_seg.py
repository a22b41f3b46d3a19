"""DICOM SEG reading: segment-to-label mapping and the optional dependency."""

from __future__ import annotations

import sys

import pytest

from medrecon.errors import DicomError, MissingDependencyError
from medrecon.io.dicom_seg import read_seg, segment_ids


def test_segment_labels_map_to_totalsegmentator_ids():
    mapping = segment_ids({1: "Liver", 2: "Kidney Left", 3: "tumour", 4: "liver", 5: "Spleen"})
    # known names get TotalSegmentator ids; "tumour" keeps no number 3 (kidney_left has it),
    # the second "liver" keeps its free number 4 under a distinct name
    assert mapping == {1: (5, "liver"), 2: (3, "kidney_left"), 3: (6, "tumour"),
                       4: (4, "liver_4"), 5: (1, "spleen")}


def test_unknown_names_keep_segment_numbers():
    assert segment_ids({1: "blob", 7: "thing"}) == {1: (1, "blob"), 7: (7, "thing")}


def test_missing_highdicom_names_the_extra(dcmqi_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(MissingDependencyError, match=r"medrecon\[dicom-seg\]"):
        read_seg(dcmqi_dir / "liver.dcm")


def test_image_is_not_a_seg(dcmqi_dir):
    with pytest.raises(DicomError, match="not a DICOM Segmentation"):
        read_seg(dcmqi_dir / "ct-3slice" / "01.dcm")
