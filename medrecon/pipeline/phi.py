"""Keeping patient identifiers out of medrecon's outputs.

Reports, previews and file names carry no patient names, IDs, birth dates,
accession numbers or DICOM UIDs unless the user asks for them (``keep_phi``).
Two layers: the pipeline never writes those fields, and :func:`scrub` replaces
any string that still contains a known identifier of the study (a folder named
after the patient, a series description typed by a technician).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medrecon.io.formats import DICOM, format_by_name
from medrecon.volume import Volume

#: DICOM attributes that identify a patient or a study (PS3.15 Annex E, the ones
#: medrecon could plausibly copy into an output).
PHI_ATTRIBUTES = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "OtherPatientIDs",
    "OtherPatientNames", "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers",
    "AccessionNumber", "IssuerOfPatientID", "MedicalRecordLocator", "StudyID",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "InstitutionName",
    "InstitutionAddress", "StationName", "DeviceSerialNumber",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
)

#: Report keys that hold identifiers or paths; dropped unless keep_phi.
PHI_KEYS = frozenset({
    "series_uid", "study_uid", "sop_uid", "frame_of_reference_uid", "source", "input_path",
    "patient_name", "patient_id", "birth_date", "accession_number", "series_description",
    "study_description",
})

REMOVED = "[removed]"


def _dicom_header(source: Path):
    import pydicom

    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for f in files[:50]:
        try:
            return pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - any unreadable file: try the next one
            continue
    return None


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        value = value.decode("latin-1") if isinstance(value, bytes) else value
        return [value]
    if isinstance(value, list | tuple | set | frozenset):  # also pydicom's MultiValue (a list)
        return [str(v) for v in value]
    return [str(value)]  # PersonName, numbers, ...


def collect_identifiers(
    volume: Volume | None = None,
    *,
    source: str | os.PathLike | None = None,
) -> frozenset[str]:
    """Strings that identify the patient or study of ``volume``.

    Looks at the volume's metadata and series UID and, when ``source`` is a DICOM
    file or folder, at its header. Person names also give their components
    (family and given names) of at least 3 characters.

    Returns
    -------
    frozenset of str
        Identifiers to keep out of every output.
    """
    found: list[str] = []
    if volume is not None:
        meta = dict(volume.meta)
        for key in PHI_ATTRIBUTES:
            for k in (key, _snake(key)):
                found += _values(meta.get(k))
        found += _values(volume.series_uid)
        if source is None and volume.source:
            source = volume.source
    if source is not None:
        path = Path(source)
        header = None
        if path.exists() and (path.is_dir() or format_by_name(path.name) in (None, DICOM)):
            header = _dicom_header(path)
        if header is not None:
            for key in PHI_ATTRIBUTES:
                found += _values(header.get(key))
    out: set[str] = set()
    for value in found:
        value = value.strip()
        if len(value) >= 3:
            out.add(value)
        for part in re.split(r"[\^=\s,]+", value):
            if len(part) >= 4:
                out.add(part)
    return frozenset(out)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def scrub(obj: Any, identifiers: Iterable[str], *, keep_phi: bool = False) -> Any:
    """Return a copy of a JSON-like object without identifiers.

    Unless ``keep_phi``: keys in :data:`PHI_KEYS` are dropped and every string
    containing one of ``identifiers`` (case-insensitive) is replaced by
    ``"[removed]"``. With ``keep_phi`` the object is returned unchanged.
    """
    if keep_phi:
        return obj
    needles = sorted({s.lower() for s in identifiers if s}, key=len, reverse=True)

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: clean(v) for k, v in value.items() if str(k).lower() not in PHI_KEYS}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, str):
            low = value.lower()
            return REMOVED if any(n in low for n in needles) else value
        return value

    return clean(obj)


def contains_identifier(text: str, identifiers: Iterable[str]) -> bool:
    """Tell whether ``text`` contains any of ``identifiers`` (case-insensitive)."""
    low = text.lower()
    return any(s.lower() in low for s in identifiers if s)
