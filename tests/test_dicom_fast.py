"""The fast flat header parser agrees with pydicom, and steps aside when it should."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from _builders import slice_values, write_slice
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from medrecon.io import dicom_header
from medrecon.io.dicom_fast import read_flat_header
from medrecon.io.dicom_header import read_headers


def _both(path: Path):
    fast, _ = read_headers(path)
    slow, _ = dicom_header._read_with_pydicom(path)
    return fast, slow


def test_real_files_fast_equals_pydicom(data_dir):
    files = sorted((data_dir / "totalseg" / "example_ct_dicom").iterdir())[:3]
    files += sorted((data_dir / "dcmqi_ct3" / "ct-3slice").iterdir())
    for path in files:
        assert read_flat_header(str(path)) is not None, path  # Siemens J2K and GE implicit VR
        fast, slow = _both(path)
        assert fast == slow, path


def _with_sequences(path: Path, syntax: str) -> None:
    """A slice with nested sequences (undefined lengths) before the pixel data."""
    write_slice(path, slice_values(2), (1.0, 2.0, 3.0), series_uid="1.2.3", syntax=syntax)
    ds = pydicom.dcmread(path)
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-D4000", "SRT", "Abdomen"
    outer = Dataset()
    outer.AnatomicRegionSequence = Sequence([inner])
    outer.ReferencedSOPInstanceUID = "1.2.3.4.5"
    ds.ReferencedImageSequence = Sequence([outer, Dataset()])
    ds.ProcedureCodeSequence = Sequence([])
    # undefined lengths (delimiters), as many scanners write them
    for keyword in ("ReferencedImageSequence", "ProcedureCodeSequence"):
        ds[keyword].is_undefined_length = True
    outer["AnatomicRegionSequence"].is_undefined_length = True
    for item in (outer, inner):
        item.is_undefined_length_sequence_item = True
    ds.save_as(path, enforce_file_format=True)
    assert b"\xfe\xff\xdd\xe0" in path.read_bytes()  # a sequence delimitation item


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, "1.2.840.10008.1.2.1"])
def test_sequences_are_skipped(tmp_path, syntax):
    path = tmp_path / "seq.dcm"
    _with_sequences(path, syntax)
    flat = read_flat_header(str(path))
    assert flat is not None and flat.implicit == (syntax == ImplicitVRLittleEndian)
    fast, slow = _both(path)
    assert fast == slow
    (frame,) = fast
    assert frame.position == (1.0, 2.0, 3.0) and (frame.rows, frame.cols) == (12, 10)
    raw = path.read_bytes()[frame.pixel_offset:frame.pixel_offset + frame.pixel_length]
    np.testing.assert_array_equal(np.frombuffer(raw, "<i2").reshape(12, 10), slice_values(2))


@pytest.mark.parametrize("syntax", [ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
def test_other_encodings_left_to_pydicom(tmp_path, syntax):
    path = write_slice(tmp_path / "x.dcm", slice_values(0), (0, 0, 0), series_uid="1.2", syntax=syntax)
    assert read_flat_header(str(path)) is None
    (frame,), _ = read_headers(path)
    assert frame.position == (0.0, 0.0, 0.0) and frame.transfer_syntax == syntax


def test_garbage_and_cut_files_left_to_pydicom(tmp_path):
    path = write_slice(tmp_path / "x.dcm", slice_values(0), (0, 0, 0), series_uid="1.2")
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:400])  # ends inside the header: no Pixel Data found
    assert read_flat_header(str(cut)) is None
    noise = tmp_path / "noise.dcm"
    noise.write_bytes(data[:132] + bytes(np.random.default_rng(1).integers(0, 256, 600, np.uint8)))
    assert read_flat_header(str(noise)) is None
