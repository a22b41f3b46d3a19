"""A :class:`~medrecon.volume.LabelMap` back to the archive as a DICOM Segmentation (SEG).

Uses highdicom (extra ``dicom-seg``). The SEG references the DICOM series the
labels were made from; that series is found again the way the loader chose it
(:func:`medrecon.io.dicom.load_dicom`, same ``series`` key) and its headers are
re-read with the bounded reader (:func:`~medrecon.io.dicom_file.read_dataset`,
no pixels). It inherits the series' patient, study and frame of reference: a SEG
is filed beside its images, so it carries their identifiers.

**Frames.** The label map must lie on the grid the loader made of that series
(its affine and shape). Label slice ``k`` is then the loader's source frame
``k`` (frames sorted along the slice normal, whatever the file order), so every
SEG frame takes the ImagePositionPatient of its source slice and references it,
oblique and flipped acquisitions included. A series the loader resampled (gantry
tilt, uneven spacing) or spread over several multi-frame files has no slice to
slice correspondence: its frames are placed by the label map's own affine, with
a warning. Frames without any segment are left out (a SEG need not store them).

**Segments.** One BINARY segment per label that holds voxels, numbered 1..N in
increasing label id (DICOM numbers segments from 1 without gaps, so the SEG's
numbers are not medrecon's ids: a structure is found again by its name). Each
has its name as SegmentLabel, its colour (:func:`medrecon.labels.organ_colour`)
as CIELab, and its category, type and side (:func:`medrecon.labels.structure_code`;
a name without a code gets the generic Tissue code, and the result says which).
A named label without voxels is not written as an empty segment: it is left out,
with a warning.

**Algorithm.** Named from the label source's ``describe()``: a network or an
engine is AUTOMATIC (family Artificial Intelligence), a HU-threshold preset is
SEMIAUTOMATIC (the user chose the thresholds; family Morphological Operations),
imported labels are MANUAL (medrecon cannot tell how they were made; the person
importing them vouches for them).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medrecon import __version__
from medrecon.atomic import atomic_path
from medrecon.errors import (
    DicomError,
    EmptySegmentationError,
    GeometryError,
    InputError,
    MedreconError,
    MissingDependencyError,
)
from medrecon.labels import StructureCode, organ_colour, structure_code
from medrecon.volume import LabelMap

#: SegmentAlgorithmType and algorithm family (DICOM CID 7162, DCM codes) of each kind
#: of label source, as ``describe()["kind"]`` names it.
ALGORITHMS: dict[str, tuple[str, tuple[str, str, str]]] = {
    "network": ("AUTOMATIC", ("DCM", "123110", "Artificial Intelligence")),
    "engine": ("AUTOMATIC", ("DCM", "123110", "Artificial Intelligence")),
    "preset": ("SEMIAUTOMATIC", ("DCM", "123104", "Morphological Operations")),
    "imported": ("MANUAL", ("DCM", "123109", "Manual Processing")),
}
#: SeriesNumber of the SEG series.
SEG_SERIES_NUMBER = 1000
_MM = 1e-3  # grid agreement, mm
#: What a SEG copies from its source slices to refer to them and to be filed beside them.
_REFERENCED = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
               "FrameOfReferenceUID")
#: Patient and study attributes of type 2 a SEG copies; an export may leave them out.
_TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
           "ReferringPhysicianName", "StudyID", "AccessionNumber")


@dataclass(frozen=True)
class SegSegment:
    """One segment as written.

    Attributes
    ----------
    number : int
        SegmentNumber in the SEG (1..N).
    label : int
        The label id it came from.
    name : str
        SegmentLabel.
    code : StructureCode
        Category, type and modifiers written.
    """

    number: int
    label: int
    name: str
    code: StructureCode


@dataclass(frozen=True)
class SegWriteResult:
    """What :func:`write_seg` wrote.

    Attributes
    ----------
    path : Path
        The SEG file.
    segments : tuple of SegSegment
        The segments, in SegmentNumber order.
    empty : tuple of str
        Named labels without voxels, not written.
    on_source_slices : bool
        True when every frame sits on (and references) a source slice.
    """

    path: Path
    segments: tuple[SegSegment, ...]
    empty: tuple[str, ...] = ()
    on_source_slices: bool = True

    @property
    def generic(self) -> tuple[str, ...]:
        """Names written with the generic Tissue code (the vocabulary has none for them)."""
        return tuple(s.name for s in self.segments if s.code.generic)

    def summary(self) -> str:
        """One line for the user: file, segments, and what was left out or coded generically."""
        names = ", ".join(s.name for s in self.segments)
        count = f"{len(self.segments)} segment{'' if len(self.segments) == 1 else 's'}"
        line = f"wrote {self.path} (DICOM SEG, {count}: {names})"
        if self.generic:
            line += f"; no code in the vocabulary, coded as Tissue: {', '.join(self.generic)}"
        if self.empty:
            line += f"; empty, not written: {', '.join(self.empty)}"
        return line


def check_seg_source(source: str | os.PathLike) -> None:
    """Make sure a SEG can be written for labels of ``source``, before any work is done.

    Raises
    ------
    InputError
        If ``source`` is not DICOM (a SEG must reference DICOM images).
    MissingDependencyError
        If highdicom is not installed (extra ``dicom-seg``).
    """
    from medrecon.io import detect_format

    src = Path(source)
    fmt = detect_format(src)
    if fmt != "dicom":
        raise InputError(f"{src} is {fmt}, not DICOM: a DICOM SEG references the DICOM series the labels "
                         "were made from; run on the DICOM folder, or keep the label map (labels.nii.gz)")
    try:
        import highdicom  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("highdicom", "dicom-seg", "writing a DICOM SEG") from exc


def write_seg(
    labels: LabelMap,
    source: str | os.PathLike,
    path: str | os.PathLike,
    *,
    algorithm: Mapping[str, Any],
    series: str | int | None = None,
) -> SegWriteResult:
    """Write ``labels`` as a DICOM SEG that references the DICOM series ``source``.

    Parameters
    ----------
    labels : LabelMap
        (I, J, K) integer labels on the grid of the series (the volume
        :func:`~medrecon.io.dicom.load_dicom` made of it), with names.
    source : path-like
        The DICOM folder, file or DICOMDIR the labels were made from.
    path : path-like
        The SEG file to write (atomically).
    algorithm : mapping
        The label source's ``describe()``: ``kind`` (``"network"``, ``"engine"``,
        ``"preset"`` or ``"imported"``), ``name`` and ``version`` (None for none).
    series : str or int, optional
        The series key the volume was loaded with (``volume.meta["series_choice"]["key"]``);
        needed when ``source`` holds several series.

    Returns
    -------
    SegWriteResult
        The segments written, the empty labels left out, and whether the frames
        sit on the source slices.

    Raises
    ------
    InputError
        If ``source`` is not DICOM.
    GeometryError
        If the labels do not lie on the series' grid.
    EmptySegmentationError
        If no label holds a voxel.
    DicomError
        If the source headers lack what a SEG must copy from them.
    MissingDependencyError
        If highdicom is not installed (extra ``dicom-seg``).
    ValueError
        If ``algorithm`` names an unknown kind of label source.
    """
    check_seg_source(source)
    import highdicom as hd

    src = Path(source)
    kind = str(algorithm.get("kind", ""))
    if kind not in ALGORITHMS:
        raise ValueError(f"algorithm kind must be one of {sorted(ALGORITHMS)}, got {kind!r}")

    from medrecon.io.dicom import _pick, plan_series

    info, _choice, _skipped = _pick(src, series)
    plan = plan_series(info)
    resampled = plan.resample_even or plan.tilted
    grid = plan.affine if plan.tilted else plan.source_affine
    if tuple(labels.shape) != tuple(plan.shape) or not np.allclose(labels.affine, grid, atol=_MM):
        raise GeometryError(
            f"the labels (shape {tuple(labels.shape)}) do not lie on the grid of DICOM series "
            f"{info.key} (shape {tuple(plan.shape)}): a SEG can only be written for labels made from "
            "that series; resample them onto its image first"
        )

    array = np.asarray(labels.array)
    present = [int(v) for v in np.unique(array) if v != 0]
    if present and present[0] < 0:
        raise InputError(f"the label map holds negative values ({present[0]}): labels are ids from 1 up, "
                         "0 for background")
    empty = tuple(labels.name_of(i) for i in sorted(labels.names) if int(i) not in set(present))
    if empty:
        warnings.warn(f"{', '.join(empty)}: no voxels, not written to the SEG", stacklevel=2)
    if not present:
        raise EmptySegmentationError("the label map holds no voxels: there is no segment to write to a SEG")
    segments = tuple(SegSegment(number=n, label=ident, name=_segment_label(labels.name_of(ident)),
                                code=structure_code(labels.name_of(ident)))
                     for n, ident in enumerate(present, start=1))
    lut = np.zeros(int(max(present)) + 1, dtype=np.uint8 if len(present) < 256 else np.uint16)
    lut[present] = np.arange(1, len(present) + 1)
    numbered = lut[array].transpose(2, 1, 0)  # highdicom: (slice, row, column)

    datasets, pixels = _on_source(plan, numbered) if not resampled else (None, None)
    further = None
    on_source = datasets is not None
    if not on_source:
        why = "it was resampled on loading" if resampled else "its frames are spread over several files"
        warnings.warn(f"DICOM series {info.key}: {why}, so the SEG frames lie on the label map's grid, "
                      "not on the source slices", stacklevel=2)
        datasets = _read_headers(sorted({f.path for f in plan.frames}))
        if len(datasets) > 1 and any(int(ds.get("NumberOfFrames") or 1) > 1 for ds in datasets):
            # highdicom takes one multi-frame source image; the others are referenced beside it
            further = datasets[1:]
            datasets = datasets[:1]
        affine = np.eye(4)
        affine[:3, :3] = grid[:3, [2, 1, 0]]
        affine[:3, 3] = grid[:3, 3]
        pixels = hd.Volume(numbered, affine, coordinate_system="PATIENT",
                           frame_of_reference_uid=datasets[0].get("FrameOfReferenceUID"))

    alg_type, family = ALGORITHMS[kind]
    name = str(algorithm.get("name") or kind)
    identification = hd.AlgorithmIdentificationSequence(
        name=_lo(f"medrecon {kind} {name}"), family=hd.sr.CodedConcept(family[1], family[0], family[2]),
        version=_lo(str(algorithm.get("version") or __version__)))
    try:
        descriptions = [_description(hd, s, alg_type, identification) for s in segments]
        with warnings.catch_warnings():
            # the source's patient name as it is (a PACS gives one component): not ours to judge
            warnings.filterwarnings("ignore", message=".*person name", category=UserWarning)
            seg = hd.seg.Segmentation(
                source_images=datasets, pixel_array=pixels, segmentation_type="BINARY",
                segment_descriptions=descriptions, series_instance_uid=hd.UID(),
                series_number=SEG_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
                manufacturer="medrecon", manufacturer_model_name="medrecon", software_versions=__version__,
                device_serial_number="0", content_label="MEDRECON",
                content_description=_lo(f"organ labels ({kind} {name})"), further_source_images=further,
            )
    except MedreconError:
        raise
    except Exception as exc:  # noqa: BLE001 - highdicom checks the source headers with many types
        from medrecon.io.dicom_file import describe_error

        raise DicomError(f"DICOM series {info.key}: highdicom cannot make a SEG of it "
                         f"({describe_error(exc)}); the source headers lack what a SEG copies") from exc
    out = Path(path)
    with atomic_path(out) as tmp:
        seg.save_as(tmp)
    return SegWriteResult(path=out, segments=segments, empty=empty, on_source_slices=on_source)


def _lo(text: str) -> str:
    """Make ``text`` a DICOM LO value: at most 64 characters, no backslash."""
    return text.replace("\\", "/")[:64]


def _segment_label(name: str) -> str:
    return _lo(name) or "unnamed"


def _read_headers(paths: list[str]) -> list:
    from medrecon.io.dicom_file import read_dataset

    datasets = [read_dataset(p, stop_before_pixels=True) for p in paths]
    for path, ds in zip(paths, datasets, strict=True):
        missing = [k for k in _REFERENCED if not str(ds.get(k, "") or "").strip()]
        if missing:
            raise DicomError(
                f"{path} has no {', '.join(missing)} (removed by an anonymiser?): a SEG cannot refer to "
                "slices without them; export the series from the archive with its UIDs, or keep the "
                "label map (labels.nii.gz)"
            )
        for keyword in _TYPE_2:  # type 2: may be empty, must be present in the SEG that copies it
            if keyword not in ds:
                setattr(ds, keyword, "")
        # an empty SpecificCharacterSet means the default repertoire; highdicom wants it absent
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet
    return datasets


def _on_source(plan, numbered: np.ndarray) -> tuple[list | None, np.ndarray | None]:
    """Source headers and the frames in their order, or (None, None) without one-to-one slices.

    Single-frame files: one file per label slice, in the plan's (position) order. One
    multi-frame file: the frames in the file's order.
    """
    frames = plan.frames
    paths = [f.path for f in frames]
    if all(f.n_frames == 1 for f in frames) and len(set(paths)) == len(paths):
        return _read_headers(paths), numbered
    if len(set(paths)) == 1 and sorted(f.frame for f in frames) == list(range(frames[0].n_frames)):
        order = np.empty(len(frames), dtype=np.intp)
        order[[f.frame for f in frames]] = np.arange(len(frames))
        return _read_headers(paths[:1]), numbered[order]
    return None, None


def _description(hd, segment: SegSegment, alg_type: str, identification):
    code = segment.code
    r, g, b = (int(round(255 * c)) for c in organ_colour(segment.name, segment.label))
    desc = hd.seg.SegmentDescription(
        segment_number=segment.number, segment_label=segment.name,
        segmented_property_category=_coded(hd, code.category),
        segmented_property_type=_coded(hd, code.type),
        algorithm_type=alg_type, algorithm_identification=identification,
        anatomic_regions=[_coded(hd, code.region)] if code.region else None,
        display_color=hd.color.CIELabColor.from_rgb(r, g, b),
    )
    # highdicom has no arguments for the modifiers; they nest in the coded item they modify
    if code.modifier:
        desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            _coded(hd, code.modifier)]
    if code.region and code.region_modifier:
        desc.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [_coded(hd, code.region_modifier)]
    return desc


def _coded(hd, code):
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)
