"""The label vocabulary: ids, names, colours, the name rule and id assignment.

**Vocabulary.** TotalSegmentator's ``total`` task (117 classes, bundled as
``medrecon/data/class_map_total.json``, read once on first use). Its ids are the
vocabulary ids: spleen 1, kidney_right 2, kidney_left 3, liver 5, aorta 52, ...

**Names are compared by one rule**, :func:`name_key`: case, surrounding space,
control characters and the difference between spaces, dashes and underscores are
ignored, so ``"Kidney Left"``, ``"kidney-left"`` and ``"kidney_left"`` are one name.

**Where a label's name comes from** (:func:`pick_names`, applied by
:func:`medrecon.io.load_labels`): the sidecar ``<stem>.json``, else the file's own
table (TotalSegmentator's NIfTI header extension, DICOM SEG segment labels,
NRRD/3D Slicer ``Segment<N>_Name`` fields), else a model's or engine's card;
otherwise ``label_<id>`` (:meth:`~medrecon.volume.LabelMap.name_of`). A name is
never guessed from a bare id. A table the user gives explicitly (``--names``)
replaces all of these.

**Which id a structure gets** (:func:`assign_ids`):

- a source that carries its own numbers (DICOM SEG segment numbers, label-map
  values) keeps them, and its names;
- a source with names only (RTSTRUCT ROIs, a folder of one mask per structure)
  gives a known name its vocabulary id and any other name the first free id from
  :data:`FIRST_NEW_LABEL` up.

A known name is spelled as the vocabulary spells it (``"Liver"`` -> ``"liver"``);
other names keep the source's text. Names stay distinct: a repeated name gets
``_<id>``. No number changes silently: a known name whose vocabulary id is already
taken gets a new id with a warning.

**Colours** (:func:`organ_colour`): familiar anatomical colours (in the spirit of
3D Slicer's generic anatomy table) for the common structures, chosen so that the
abdominal organs are told apart at a glance; other labels get a fixed colour of
their id. The napari plugin and the preview pictures use it.

**Codes** (:func:`structure_code`): the DICOM SEG property category and type of a
structure (SNOMED CT, with a Left/Right modifier where the name has a side), for
TotalSegmentator's ``total`` classes and medrecon's presets, bundled as
``medrecon/data/segment_codes.json``; a name without a code gets the generic
``Tissue`` code, flagged ``generic``.
"""

from __future__ import annotations

import colorsys
import functools
import json
import re
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import NamedTuple

#: First id given to a named structure the vocabulary does not know.
FIRST_NEW_LABEL = 300

# Exact structures (by name_key), RGB 0..255: Slicer-like hues, spread so that every
# pair of abdominal organs is at least 20 CIELAB units apart.
_ORGAN_RGB: dict[str, tuple[int, int, int]] = {
    "liver": (221, 130, 101),
    "spleen": (157, 108, 162),
    "kidney_right": (175, 75, 65),
    "kidney_left": (125, 45, 70),
    "gallbladder": (139, 150, 98),
    "stomach": (230, 150, 190),
    "pancreas": (249, 180, 111),
    "adrenal_gland_right": (244, 214, 49),
    "adrenal_gland_left": (215, 160, 0),
    "duodenum": (255, 253, 229),
    "small_bowel": (205, 167, 142),
    "colon": (140, 100, 60),
    "esophagus": (120, 180, 150),
    "urinary_bladder": (200, 200, 235),
    "aorta": (230, 40, 40),
    "inferior_vena_cava": (0, 151, 206),
    "portal_vein_and_splenic_vein": (0, 190, 170),
    "heart": (180, 40, 90),
}
# (part of a name_key, RGB 0..255) for families of structures; first match wins.
_FAMILY_RGB: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("gallbladder", (139, 150, 98)),
    ("liver", (221, 130, 101)),
    ("spleen", (157, 108, 162)),
    ("kidney", (175, 75, 65)),
    ("adrenal", (244, 214, 49)),
    ("bladder", (200, 200, 235)),
    ("aorta", (230, 40, 40)),
    ("vena_cava", (0, 151, 206)),
    ("portal", (0, 190, 170)),
    ("artery", (216, 101, 79)),
    ("vein", (0, 151, 206)),
    ("heart", (180, 40, 90)),
    ("lung", (197, 165, 145)),
    ("trachea", (182, 228, 255)),
    ("vertebra", (241, 214, 145)),
    ("rib", (241, 214, 145)),
    ("sacrum", (241, 214, 145)),
    ("hip", (241, 214, 145)),
    ("femur", (241, 214, 145)),
    ("sternum", (241, 214, 145)),
    ("bone", (241, 214, 145)),
    ("brain", (250, 250, 225)),
)


@functools.cache
def total_class_map() -> Mapping[int, str]:
    """Label id -> structure name of TotalSegmentator's ``total`` task (117 classes)."""
    text = resources.files("medrecon").joinpath("data", "class_map_total.json").read_text(encoding="utf-8")
    return MappingProxyType({int(k): str(v) for k, v in json.loads(text).items()})


class Code(NamedTuple):
    """A coded concept: coding scheme designator (``"SCT"``, ``"DCM"``), code value, code meaning."""

    scheme: str
    value: str
    meaning: str


@dataclass(frozen=True)
class StructureCode:
    """How a DICOM SEG segment says what a structure is.

    Attributes
    ----------
    category : Code
        Segmented property category (DICOM CID 7150), e.g. Anatomical Structure.
    type : Code
        Segmented property type, e.g. SNOMED CT 10200004 "Liver".
    modifier : Code or None
        Type modifier: the side (SNOMED CT Left / Right) where the name has one.
    region : Code or None
        Anatomic region, for a structure that lies in an organ (a kidney cyst).
    region_modifier : Code or None
        The region's side.
    generic : bool
        True when the vocabulary has no code for the name and the generic
        ``Tissue`` code stands in.
    """

    category: Code
    type: Code
    modifier: Code | None = None
    region: Code | None = None
    region_modifier: Code | None = None
    generic: bool = False


@functools.cache
def _code_table() -> tuple[Mapping[str, StructureCode], StructureCode]:
    text = resources.files("medrecon").joinpath("data", "segment_codes.json").read_text(encoding="utf-8")
    data = json.loads(text)
    categories = {k: Code(*v) for k, v in data["categories"].items()}

    def entry(item: dict, *, generic: bool = False) -> StructureCode:
        extra = {k: Code(*item[k]) for k in ("modifier", "region", "region_modifier") if k in item}
        return StructureCode(category=categories[item["category"]], type=Code(*item["type"]),
                             generic=generic, **extra)

    table = {name_key(k): entry(v) for k, v in data["structures"].items()}
    return MappingProxyType(table), entry(data["generic"], generic=True)


def structure_code(name: str) -> StructureCode:
    """DICOM SEG category, type and modifiers of a structure, by its name (:func:`name_key`).

    ``structure_code("kidney_left")`` is Anatomical Structure / Kidney (SNOMED CT
    64033007) / Left. A name the table does not know gets the generic code,
    Tissue / Tissue (SNOMED CT 85756007), with ``generic=True``.
    """
    table, generic = _code_table()
    return table.get(name_key(name), generic)


def name_key(name: str) -> str:
    """Reduce a name to the key by which names are compared (the one rule).

    ``"Kidney Left"``, ``"kidney-left"`` and ``"kidney_left"`` all give
    ``"kidney_left"``: control characters become spaces, the text is stripped and
    lower-cased, and runs of spaces and dashes become one ``_``.
    """
    printable = "".join(c if c.isprintable() else " " for c in str(name))
    return re.sub(r"[\s\-]+", "_", printable.strip().lower())


@functools.cache
def _total_ids() -> Mapping[str, int]:
    return MappingProxyType({name_key(v): k for k, v in total_class_map().items()})


def total_id(name: str) -> int:
    """Vocabulary id of a structure name, e.g. ``total_id("liver") == 5``.

    Raises
    ------
    KeyError
        If the name is not one of TotalSegmentator's ``total`` classes.
    """
    try:
        return _total_ids()[name_key(name)]
    except KeyError:
        raise KeyError(f"{name!r} is not a TotalSegmentator 'total' class") from None


def _clean(name: str) -> str:
    return " ".join("".join(c if c.isprintable() else " " for c in str(name)).split())


def assign_ids(
    names: Sequence[str],
    *,
    numbers: Sequence[int] | None = None,
    vocabulary: Mapping[int, str] | None = None,
    source: str = "",
) -> list[tuple[int, str]]:
    """Give each structure its label id and name, by the module's one id rule.

    Parameters
    ----------
    names : sequence of str
        The structures' names as the source writes them.
    numbers : sequence of int, optional
        The source's own label numbers, one per name (SEG segment numbers,
        label-map values): they are kept. Without them, ids come from ``vocabulary``.
    vocabulary : mapping of int to str, optional
        Id -> name table for names-only sources; default :func:`total_class_map`.
    source : str
        What the names come from, for the warning.

    Returns
    -------
    list of (int, str)
        ``(label id, name)`` per structure, in the order given; ids and names distinct.

    Raises
    ------
    ValueError
        If ``numbers`` has another length than ``names``, repeats a number or holds one below 1.
    """
    names = [str(n) for n in names]
    table = total_class_map() if vocabulary is None else {int(k): str(v) for k, v in vocabulary.items()}
    known = {}
    for label, name in sorted(table.items()):
        known.setdefault(name_key(name), (label, name))
    if numbers is not None:
        numbers = [int(n) for n in numbers]
        if len(numbers) != len(names) or len(set(numbers)) != len(numbers) or min(numbers, default=1) < 1:
            raise ValueError(f"numbers must be distinct positive ids, one per name; got {numbers} for "
                             f"{len(names)} names")
    used: set[int] = set(numbers or ())
    nxt = max([FIRST_NEW_LABEL - 1, *table]) + 1
    out: list[tuple[int, str]] = []
    taken: set[str] = set()
    for n, name in enumerate(names):
        vocab_id, vocab_name = known.get(name_key(name), (None, None))
        if numbers is not None:
            label = numbers[n]
        elif vocab_id is not None and vocab_id not in used:
            label = vocab_id
        else:
            while nxt in used:
                nxt += 1
            label = nxt
            if vocab_id is not None:
                warnings.warn(f"{source or 'labels'}: {name!r} names {vocab_name!r} a second time; its "
                              f"vocabulary id {vocab_id} is taken, so it gets id {label}", stacklevel=2)
        used.add(label)
        final = vocab_name or _clean(name) or f"label_{label}"
        if name_key(final) in taken:
            final = f"{final}_{label}"  # names stay distinct, so label_of(name) is unambiguous
        taken.add(name_key(final))
        out.append((label, final))
    return out


def pick_names(
    *,
    sidecar: Mapping[int, str] | None = None,
    file: Mapping[int, str] | None = None,
    card: Mapping[int, str] | None = None,
) -> dict[int, str]:
    """Choose a label map's names (the name rule): the first non-empty table given.

    The order is the sidecar ``<stem>.json``, the file's own table, the model's
    or engine's card. Labels the chosen table does not name are called ``label_<id>`` on use;
    no name is taken from the vocabulary for a bare id.
    """
    for table in (sidecar, file, card):
        if table:
            return {int(k): str(v) for k, v in table.items()}
    return {}


def organ_colour(name: str | None, label: int | None = None) -> tuple[float, float, float]:
    """RGB colour in [0, 1] of a structure, by its name, else by its id.

    Parameters
    ----------
    name : str or None
        Structure name; known anatomy gets its anatomical colour.
    label : int, optional
        Label id: picks a fixed colour for a name the table does not know
        (without it, the name does).
    """
    key = name_key(name or "")
    rgb = _ORGAN_RGB.get(key) or next((c for part, c in _FAMILY_RGB if key and part in key), None)
    if rgb is not None:
        return (rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0)
    seed = int(label) if label is not None else zlib.crc32(key.encode())
    # golden-ratio steps around the hue circle: neighbouring ids look different
    hue = (seed * 0.618033988749895) % 1.0
    return colorsys.hsv_to_rgb(hue, 0.55 + 0.3 * (seed % 2), 0.9 - 0.2 * (seed // 2 % 2))
