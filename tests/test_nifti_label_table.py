"""Label names in NIfTI header extensions (TotalSegmentator's Caret LabelTable), read with bounds."""

import gzip
import struct

import nibabel as nib
import numpy as np
import pytest

from medrecon.errors import InputError
from medrecon.io import load_labels
from medrecon.io.nifti import read_nifti

DATA = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) % 4


def _caret(table: dict[int, str], *, prolog: str = "") -> bytes:
    """A Caret LabelTable extension as TotalSegmentator lays it out."""
    rows = "".join(f'<Label Key="{k}" Red="0.0" Green="1.0" Blue="0.0" Alpha="1"><![CDATA[{v}]]></Label>\n'
                   for k, v in table.items())
    return (f'<?xml version="1.0" encoding="UTF-8"?>{prolog} <CaretExtension>  <VolumeInformation Index="0">'
            f"   <LabelTable>\n{rows}\n  </LabelTable>  </VolumeInformation></CaretExtension>\n").encode()


def _write(path, extensions, *, byteorder="<"):
    img = nib.Nifti1Image(DATA, np.diag([2.0, 2.0, 3.0, 1.0]))
    if byteorder == ">":
        img = nib.Nifti1Image(DATA, img.affine, header=img.header.as_byteswapped(">"))
    for code, content in extensions:
        img.header.extensions.append(nib.nifti1.Nifti1Extension(code, content))
    nib.save(img, path)
    return path


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_label_table_after_another_extension(tmp_path, suffix, byteorder):
    path = _write(tmp_path / f"seg{suffix}", [(6, b"a comment, not a table"),
                                             (0, _caret({1: "spleen", 3: "kidney_left", 2: "Two words"}))],
                  byteorder=byteorder)
    assert nib.load(path).header.endianness == byteorder
    array, _, meta = read_nifti(path)
    assert meta["names"] == {1: "spleen", 3: "kidney_left", 2: "Two words"}
    np.testing.assert_array_equal(array, DATA)
    assert load_labels(path).name_of(3) == "kidney_left"


def test_other_extensions_give_no_names(tmp_path):
    path = _write(tmp_path / "seg.nii", [(6, b"<CaretExtension> in a comment"), (4, b"<AFNI_attributes/>")])
    array, _, meta = read_nifti(path)
    assert "names" not in meta
    np.testing.assert_array_equal(array, DATA)


def _patched(tmp_path, esize: int) -> bytes:
    path = _write(tmp_path / "ok.nii", [(0, _caret({1: "spleen"}))])
    raw = bytearray(path.read_bytes())
    assert raw[348] == 1 and struct.unpack("<i", raw[352:356])[0] % 16 == 0
    raw[352:356] = struct.pack("<i", esize)
    return bytes(raw)


@pytest.mark.parametrize("esize", [2**31 - 1, 10**6, 4, 0, -16])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_extension_sizes_are_checked_before_reading(tmp_path, esize, suffix):
    raw = _patched(tmp_path, esize)
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix == ".nii.gz" else raw)
    with pytest.warns(UserWarning, match="header extension declares"):
        array, _, meta = read_nifti(path)
    assert "names" not in meta
    np.testing.assert_array_equal(array, DATA)  # the voxels still come from vox_offset


@pytest.mark.parametrize(("content", "match"), [
    (_caret({1: "spleen"}, prolog='<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]>'), "declares a DTD"),
    (_caret({1: "spleen"}).replace(b"</LabelTable>", b"</Label>"), "not valid XML"),
])
def test_a_bad_table_is_skipped_with_a_warning(tmp_path, content, match):
    path = _write(tmp_path / "seg.nii.gz", [(0, content)])
    with pytest.warns(UserWarning, match=match):
        labels = load_labels(path)
    assert dict(labels.names) == {} and labels.name_of(1) == "label_1"


def test_keys_that_are_not_label_ids_are_left_out(tmp_path):
    content = _caret({0: "???", 1: "spleen", 2: ""}).replace(b'Key="2"', b'Key="-2"') + b"\0" * 5
    content = content.replace(b"</LabelTable>", b'<Label Key="x">bad</Label></LabelTable>')
    _, _, meta = read_nifti(_write(tmp_path / "seg.nii", [(0, content)]))
    assert meta["names"] == {1: "spleen"}


def test_truncated_inside_the_extensions_is_an_input_error(tmp_path):
    raw = _write(tmp_path / "ok.nii", [(0, _caret({1: "spleen"}))]).read_bytes()
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(raw[:400]))
    with pytest.raises(InputError, match="truncated"):
        read_nifti(path)
