"""Grouping DICOM frames into series, and choosing one.

A *series* here is one SeriesInstanceUID. Inside a series, image frames are
split into *parts* of one image size, one orientation and one echo number (a
series that mixes them, holds a localizer next to its axial slices, or several
MR echoes, gives several parts); each part is one :class:`SeriesInfo`.

Volume-like rule: a part is volume-like when it has at least 3 frames of one size
and orientation, each with a position, and is not a localizer/scout, a secondary
capture, a dose object, a segmentation or another non-image object.

``series="auto"`` rule, among volume-like parts: CT before MR before anything
else, then the thinnest slice spacing, then the most slices, then the lowest
series number (then UID, for a stable choice).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medrecon.errors import DicomError, SeriesSelectionError
from medrecon.io.dicom_header import FrameHeader

#: SOP classes that carry pixels but are never volumes (prefix match).
_NOT_VOLUME_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation: give it as labels (convert --labels, reconstruct --labels; load_labels in Python)",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT dose",
    "1.2.840.10008.5.1.4.1.1.104": "encapsulated document",
}
_NOT_VOLUME_MODALITIES = {
    "SEG": "segmentation: give it as labels (convert --labels, reconstruct --labels; load_labels in Python)",
    "RTSTRUCT": "RT structure set", "RTDOSE": "RT dose", "RTPLAN": "RT plan",
    "SR": "structured report (dose report)", "PR": "presentation state",
    "KO": "key object selection", "DOC": "document", "REG": "registration",
}
AUTO_RULE = (
    "CT before MR before other modalities, then thinnest slice spacing, "
    "then most slices, then lowest series number"
)
_MODALITY_RANK = {"CT": 0, "MR": 1}


#: Selector of the series formed by files that have no SeriesInstanceUID.
NO_UID = "NOUID"


@dataclass(frozen=True)
class SeriesInfo:
    """One loadable part of a DICOM series, as the headers describe it.

    Attributes
    ----------
    uid : str
        SeriesInstanceUID.
    number : int or None
        SeriesNumber.
    modality, description : str
        Modality and SeriesDescription.
    n_slices : int
        Number of frames (slices) in this part.
    rows, cols : int
        Image size.
    volume_like : bool
        Whether this part can be a 3D volume (see the module docstring).
    reason : str
        Why it is not volume-like ("" when it is).
    part, n_parts : int
        Index of this part inside its series and number of parts.
    slice_spacing : float or None
        Median distance in mm between neighbouring slice positions.
    pixel_spacing : tuple of 2 float or None
        In-plane spacing (between rows, between columns) in mm.
    orientation : tuple of 6 float or None
        ImageOrientationPatient of the part.
    sop_class : str
        SOPClassUID.
    echo : int or None
        EchoNumbers of the part (MR).
    frames : tuple of FrameHeader
        The frames (not included in :meth:`to_dict`).
    """

    uid: str
    number: int | None
    modality: str
    description: str
    n_slices: int
    rows: int
    cols: int
    volume_like: bool
    reason: str = ""
    part: int = 0
    n_parts: int = 1
    slice_spacing: float | None = None
    pixel_spacing: tuple[float, float] | None = None
    orientation: tuple[float, ...] | None = None
    sop_class: str = ""
    echo: int | None = None
    frames: tuple[FrameHeader, ...] = field(default=(), repr=False, compare=False)

    @property
    def key(self) -> str:
        """Selector for ``series=``: the UID, or ``UID:part`` for a split series.

        Files without a SeriesInstanceUID (some anonymisers remove it) form the
        series ``NOUID``, so that it can still be chosen by name.
        """
        uid = self.uid or NO_UID
        return uid if self.n_parts == 1 else f"{uid}:{self.part}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the frames)."""
        return {
            "uid": self.uid, "key": self.key, "number": self.number, "modality": self.modality,
            "description": self.description, "n_slices": self.n_slices, "rows": self.rows,
            "cols": self.cols, "volume_like": self.volume_like, "reason": self.reason,
            "part": self.part, "n_parts": self.n_parts, "slice_spacing": self.slice_spacing,
            "pixel_spacing": list(self.pixel_spacing) if self.pixel_spacing else None,
            "image_orientation": list(self.orientation) if self.orientation else None,
            "sop_class": self.sop_class, "echo": self.echo,
        }

    def label(self) -> str:
        """One human-readable line: number, modality, description, slices, key."""
        number = "-" if self.number is None else str(self.number)
        part = f" part {self.part + 1}/{self.n_parts}" if self.n_parts > 1 else ""
        if self.n_parts > 1 and self.echo is not None:
            part += f" (echo {self.echo})"
        flag = "" if self.volume_like else f" [not a volume: {self.reason}]"
        desc = self.description or "(no description)"
        line = (f"#{number} {self.modality or '?'} '{desc}'{part}: {self.n_slices} slices "
                f"{self.cols}x{self.rows}{flag}  (--series {self.key})")
        # descriptions and UIDs are untrusted: no raw control characters (terminal escapes)
        return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line)


def _same_orientation(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-3


def _non_volume_reason(frame: FrameHeader) -> str:
    for prefix, why in _NOT_VOLUME_CLASSES.items():
        if frame.sop_class == prefix or frame.sop_class.startswith(prefix + "."):
            return why
    if frame.modality in _NOT_VOLUME_MODALITIES:
        return _NOT_VOLUME_MODALITIES[frame.modality]
    if not frame.has_pixels:
        return "no pixel data"
    if frame.samples != 1:
        return f"colour image ({frame.samples} samples per pixel)"
    if frame.bits_allocated not in (8, 16, 32):
        return f"{frame.bits_allocated}-bit pixels"
    return ""


def _median_spacing(frames: Sequence[FrameHeader]) -> float | None:
    if len(frames) < 2 or frames[0].orientation is None or any(f.position is None for f in frames):
        return None
    o = np.asarray(frames[0].orientation)
    normal = np.cross(o[:3], o[3:])
    proj = np.sort(np.asarray([f.position for f in frames]) @ normal)
    steps = np.diff(proj)
    steps = steps[steps > 1e-3]
    return round(float(np.median(steps)), 6) if steps.size else None


def _parts(frames: list[FrameHeader]) -> list[tuple[list[FrameHeader], str]]:
    """Split one series' frames into (frames, reason-not-volume-like) parts."""
    groups: list[tuple[tuple, list[FrameHeader], str]] = []
    for f in frames:
        reason = _non_volume_reason(f) or ("localizer" if f.is_localizer else "")
        for key, members, _why in groups:
            rows, cols, orient, group_reason, echo = key
            if (rows, cols, group_reason, echo) == (f.rows, f.cols, reason, f.echo) and (
                orient is None and f.orientation is None
                or orient is not None and f.orientation is not None
                and _same_orientation(orient, f.orientation)
            ):
                members.append(f)
                break
        else:
            groups.append(((f.rows, f.cols, f.orientation, reason, f.echo), [f], reason))
    out = []
    for _key, members, reason in groups:
        if not reason:
            if any(m.position is None or m.orientation is None or m.pixel_spacing is None
                   for m in members):
                reason = "no ImagePositionPatient/ImageOrientationPatient/PixelSpacing"
            elif len(members) < 3:
                reason = f"only {len(members)} slice(s)"
        out.append((members, reason))
    out.sort(key=lambda item: (item[1] != "", -len(item[0])))
    return out


def group_series(frames: Sequence[FrameHeader]) -> list[SeriesInfo]:
    """Group frames by SeriesInstanceUID, then into parts of one size and orientation.

    Returns
    -------
    list of SeriesInfo
        Sorted by series number, then UID, then part.
    """
    by_uid: dict[str, list[FrameHeader]] = {}
    for f in frames:
        by_uid.setdefault(f.series_uid, []).append(f)
    infos = []
    for uid, members in by_uid.items():
        parts = _parts(members)
        for index, (part, reason) in enumerate(parts):
            first = part[0]
            infos.append(SeriesInfo(
                uid=uid, number=first.series_number, modality=first.modality,
                description=first.description, n_slices=len(part), rows=first.rows,
                cols=first.cols, volume_like=not reason, reason=reason, part=index,
                n_parts=len(parts), slice_spacing=_median_spacing(part),
                pixel_spacing=first.pixel_spacing, orientation=first.orientation,
                sop_class=first.sop_class, echo=first.echo, frames=tuple(part),
            ))
    infos.sort(key=lambda s: (s.number is None, s.number or 0, s.uid, s.part))
    return infos


def _auto_key(s: SeriesInfo) -> tuple:
    spacing = s.slice_spacing if s.slice_spacing is not None else math.inf
    return (_MODALITY_RANK.get(s.modality, 2), spacing, -s.n_slices,
            s.number if s.number is not None else math.inf, s.uid, s.part)


def _listing(infos: Sequence[SeriesInfo]) -> str:
    return "\n".join("  " + s.label() for s in infos)


def select_series(
    infos: Sequence[SeriesInfo], series: str | int | None, *, source: str = ""
) -> tuple[SeriesInfo, dict[str, Any]]:
    """Pick the part to load.

    Parameters
    ----------
    infos : sequence of SeriesInfo
        From :func:`group_series`.
    series : str, int or None
        ``None``: the only volume-like part (error when there are several).
        ``"auto"``: by :data:`AUTO_RULE`. Otherwise a SeriesInstanceUID, a
        :attr:`SeriesInfo.key` (``UID:part``), a SeriesNumber, or ``number:part``.

    Returns
    -------
    (SeriesInfo, dict)
        The choice and a record of how it was made (for ``volume.meta``).

    Raises
    ------
    SeriesSelectionError
        When the choice is ambiguous or matches nothing; the message lists the series.
    DicomError
        When nothing volume-like exists and no series was named.
    """
    volumes = [s for s in infos if s.volume_like]
    where = f" in {source}" if source else ""
    if series is None or str(series).strip() == "":
        if len(volumes) == 1:
            return volumes[0], {"rule": "only volume-like series", "key": volumes[0].key}
        if not volumes:
            raise DicomError(f"no volume-like DICOM series{where}:\n{_listing(infos)}")
        raise SeriesSelectionError(
            f"{len(volumes)} volume-like DICOM series{where}; choose one with --series "
            f"(UID or number) or --series auto:\n{_listing(infos)}",
            series=list(volumes),
        )
    text = str(series).strip()
    if text.lower() == "auto":
        if not volumes:
            raise DicomError(f"--series auto: no volume-like DICOM series{where}:\n{_listing(infos)}")
        ranked = sorted(volumes, key=_auto_key)
        return ranked[0], {
            "rule": AUTO_RULE, "key": ranked[0].key, "candidates": [s.key for s in ranked],
        }
    matches = [s for s in infos if text in (s.uid, s.key)]
    if not matches:
        number, _, part = text.partition(":")
        if number.lstrip("-").isdigit() and (not part or part.isdigit()):
            matches = [s for s in infos if s.number == int(number)
                       and (not part or s.part == int(part))]
    if len(matches) > 1:
        picked = [s for s in matches if s.volume_like]
        matches = picked if len(picked) == 1 else matches
    if len(matches) != 1:
        what = "matches no series" if not matches else f"matches {len(matches)} series"
        raise SeriesSelectionError(
            f"--series {text!r} {what}{where}; choose one of:\n{_listing(infos)}",
            series=list(matches or infos),
        )
    return matches[0], {"rule": "requested", "key": matches[0].key, "requested": text}
