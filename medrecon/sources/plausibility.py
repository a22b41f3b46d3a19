"""Is each labelled organ plausible? Checks on every label source's output.

A model can hand back a confident wrong organ (a brain labelled "liver" on a
head CT, tissue in an arm labelled "kidney"). Before an organ becomes a
printable mesh, :func:`check_organs` compares it with adult anatomy
(:mod:`medrecon.anatomy`, literature figures with their sources) and with the
model's own confidence:

- volume within the organ's adult range (only the upper end when the organ
  touches the edge of the field of view: ``cut_at_edge``, a flat face that is
  the scan's edge, not anatomy);
- inside the trunk, on the expected side (LPS: +x is the patient's left), and
  in the expected head-to-feet order with the other organs found;
- mean HU in the organ's range (any contrast phase);
- the number of pieces;
- the model's mean top-class probability over the organ, for model sources.

Which sources get which checks (:func:`checks_for`): models of every kind all
of them, and an organ that fails is not meshed; imported labels the same
checks as warnings (never rejected); HU presets none (they get the CT check
before running, :func:`require_ct`).

Structures the table does not know (bones, muscles, vessels of the limbs) get
only the model's confidence check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medrecon.anatomy import Anatomy, load_anatomy
from medrecon.errors import ImageKindError
from medrecon.imagekind import ImageKind, classify
from medrecon.labels import name_key
from medrecon.sources.measure import Trunk, label_sums, place
from medrecon.volume import LabelMap, Volume

#: Label source kinds whose output is the user's own: checked, never rejected.
WARN_ONLY = frozenset({"imported"})
#: Label source kinds that get no organ checks (only the CT check before running).
NO_ORGAN_CHECKS = frozenset({"preset"})


@dataclass(frozen=True)
class OrganCheck:
    """The verdict on one organ label.

    Attributes
    ----------
    label : int
        Label id.
    name : str
        Organ name.
    plausible : bool
        Whether every check passed.
    reasons : tuple of str
        What failed, one phrase each (empty when plausible).
    cut_at_edge : bool
        The label touches the edge of the field of view.
    confidence : float or None
        The model's mean top-class probability over the organ (None for labels
        without one).
    measured : Mapping[str, Any]
        The numbers checked: ``label_volume_ml``, ``pieces``, and where an image
        was given ``mean_hu``, ``inside_body``, ``lateral`` (fraction of the trunk's
        half width, - = patient's right) and ``centre_z_mm``.
    """

    label: int
    name: str
    plausible: bool
    reasons: tuple[str, ...] = ()
    cut_at_edge: bool = False
    confidence: float | None = None
    measured: Mapping[str, Any] = field(default_factory=dict)

    def report_fields(self) -> dict[str, Any]:
        """Return the organ's report fields: ``plausible``, ``reasons``, ``cut_at_edge``, ``confidence``."""
        out: dict[str, Any] = {"plausible": self.plausible, "reasons": list(self.reasons),
                               "cut_at_edge": self.cut_at_edge}
        if self.confidence is not None:
            out["confidence"] = round(float(self.confidence), 4)
        return out


def checks_for(kind: str) -> str:
    """How a label source of ``kind`` is checked: ``"enforce"``, ``"warn"`` or ``"none"``.

    Models of every kind (``"network"``, engines, bundles, anything else) are
    enforced; imported labels are warned about; presets are not organ-checked.
    """
    if kind in NO_ORGAN_CHECKS:
        return "none"
    return "warn" if kind in WARN_ONLY else "enforce"


def required_modality(source: Any) -> str | None:
    """Return the modality a label source needs: its own ``modality``, else CT (imported labels: any).

    Every medrecon model and HU preset works on CT in Hounsfield units; an engine
    for another modality says so with a ``modality`` attribute (``""`` for any).
    """
    own = getattr(source, "modality", None)
    if own is not None:
        return own or None
    return None if source.kind == "imported" else "CT"


def require_ct(volume: Volume, *, what: str, override: str | None = None) -> ImageKind:
    """Refuse a study that is not a CT, for a CT-only model or an HU preset.

    A DICOM study's Modality decides; without one (NIfTI, NRRD, MetaImage) the
    intensities do: air near -1000 HU and a HU-like range
    (:func:`medrecon.imagekind.classify`).

    Parameters
    ----------
    volume : Volume
        The study.
    what : str
        What needs the CT, plural, for the message (``"HU presets"``, ``"CT-only models
        such as 'default'"``).
    override : str, optional
        The user's ``--modality``: ``"CT"`` takes the study as a CT whatever it
        looks like.

    Returns
    -------
    ImageKind
        What the study looks like.

    Raises
    ------
    ImageKindError
        If the study is not a CT; the message says what to use instead.
    """
    if override is not None and override.strip().upper() == "CT":
        return ImageKind("ct", "a CT (--modality CT)")
    modality = (override or volume.modality or "").strip().upper()
    if modality == "CT":  # the header's word decides, whatever the voxels look like
        return ImageKind("ct", "a CT (modality CT)")
    kind = classify(np.asarray(volume.array), modality=modality)
    if kind.kind != "ct":
        where = f"{volume.source}: " if volume.source else ""
        raise ImageKindError(
            f"{where}this looks like {kind.reason}, not a CT; {what} need a CT in Hounsfield units: "
            "mesh an existing segmentation with --labels, or use an MR engine such as "
            "--model totalsegmentator:total_mr; add --modality CT if it is a CT"
        )
    return kind


def _fmt(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.1f}"


def check_organs(
    labels: LabelMap,
    volume: Volume | None = None,
    *,
    confidence: Mapping[int, float] | None = None,
    anatomy: Anatomy | None = None,
) -> dict[int, OrganCheck]:
    """Check every organ of ``labels`` against adult anatomy and the model's confidence.

    Parameters
    ----------
    labels : LabelMap
        (I, J, K) organ labels.
    volume : Volume, optional
        The CT the labels belong to, on the same grid (HU, trunk and side checks
        need it; without it only volume, pieces and order are checked).
    confidence : mapping of int to float, optional
        Label id -> the model's mean top-class probability over the organ; labels
        missing from it (or all, without it) get no confidence check.
    anatomy : Anatomy, optional
        Reference table (default :func:`medrecon.anatomy.load_anatomy`).

    Returns
    -------
    dict of int to OrganCheck
        One verdict per label present, in label order.
    """
    table = anatomy if anatomy is not None else load_anatomy()
    lab = np.asarray(labels.array)
    if volume is not None and tuple(volume.shape) != tuple(lab.shape):
        raise ValueError(f"labels {lab.shape} and image {volume.shape} must share one grid")
    # exact counts and mean HU in one pass over the labelled voxels
    counts, sums = label_sums(lab, None if volume is None else np.asarray(volume.array))
    mean_hu = None if sums is None else sums / np.maximum(counts, 1)
    cut = set()
    for axis in range(3):
        for end in (0, -1):
            # a plain slice: np.take copies a Fortran-ordered map whole first (seconds at 512^3)
            cut.update(np.unique(lab[(slice(None),) * axis + (end,)]).tolist())
    trunk = None if volume is None else Trunk(volume, body_hu=table.body_hu)
    ml_per_voxel = labels.voxel_volume_mm3 / 1000.0
    present = [int(label) for label in np.flatnonzero(counts) if label != 0]
    # where each organ with norms is
    wanted = [label for label in present if table.organ(labels.name_of(label)) is not None]
    placed = place(labels, wanted, trunk, min_fraction=table.piece_fraction) if wanted else {}
    found: dict[int, dict[str, Any]] = {}
    for label in present:
        m: dict[str, Any] = {"label_volume_ml": round(int(counts[label]) * ml_per_voxel, 2),
                             "cut_at_edge": label in cut}
        if mean_hu is not None:
            m["mean_hu"] = float(mean_hu[label])
        if label in placed:
            m["pieces"] = placed[label]["pieces"]
            m["centre_z_mm"] = placed[label]["centre_z_mm"]
            m.update({k: placed[label][k] for k in ("inside_body", "lateral") if k in placed[label]})
        found[label] = m

    reasons: dict[int, list[str]] = {label: [] for label in found}
    for label, m in found.items():
        name = labels.name_of(label)
        norm = table.organ(name)
        vol = m["label_volume_ml"]
        if norm is not None:
            lo, hi = norm.volume_ml
            if vol > hi:
                reasons[label].append(f"volume {_fmt(vol)} mL above the adult range {lo:g}-{hi:g} mL")
            elif vol < lo and not m["cut_at_edge"]:
                reasons[label].append(f"volume {_fmt(vol)} mL below the adult range {lo:g}-{hi:g} mL")
            if m["pieces"] > norm.pieces:
                reasons[label].append(f"{m['pieces']} separate pieces (at most {norm.pieces} expected)")
            if "mean_hu" in m and not norm.hu[0] <= m["mean_hu"] <= norm.hu[1]:
                reasons[label].append(f"mean {m['mean_hu']:.0f} HU outside {norm.hu[0]:g}..{norm.hu[1]:g} HU")
            lateral = m.get("lateral")
            if lateral is not None and not norm.side[0] <= lateral <= norm.side[1]:
                where = "the patient's right" if lateral < 0 else "the patient's left"
                reasons[label].append(f"on the wrong side: centre {abs(lateral):.2f} of the trunk's half "
                                      f"width to {where} (expected {norm.side[0]:+.2f}..{norm.side[1]:+.2f})")
        if norm is not None and "inside_body" in m and m["inside_body"] < table.min_inside:
            reasons[label].append(f"only {m['inside_body']:.0%} inside the trunk")
        if confidence is not None and label in confidence:
            floor = table.confidence_floor(name)
            if confidence[label] < floor:
                reasons[label].append(f"the model is unsure: mean probability {confidence[label]:.2f} "
                                      f"below {floor:.2f}")

    by_name = {name_key(labels.name_of(label)): label for label in found}
    conf = confidence or {}
    for upper, lower in table.order:
        a, b = by_name.get(name_key(upper)), by_name.get(name_key(lower))
        if a is None or b is None:
            continue
        if found[a]["centre_z_mm"] >= found[b]["centre_z_mm"] - table.order_tolerance_mm:
            continue
        why = f"{upper} found below {lower} (head to feet)"
        ca, cb = conf.get(a), conf.get(b)
        blamed = [a, b] if ca is None or cb is None or ca == cb else [a if ca < cb else b]
        for label in blamed:
            reasons[label].append(why)

    out: dict[int, OrganCheck] = {}
    for label in sorted(found):
        m = found[label]
        measured = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in m.items()
                    if k != "cut_at_edge"}
        out[label] = OrganCheck(
            label=label, name=labels.name_of(label), plausible=not reasons[label],
            reasons=tuple(reasons[label]), cut_at_edge=m["cut_at_edge"],
            confidence=None if confidence is None or label not in confidence else float(confidence[label]),
            measured=measured,
        )
    return out


__all__ = ["OrganCheck", "check_organs", "checks_for", "require_ct", "required_modality"]
