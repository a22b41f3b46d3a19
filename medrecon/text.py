"""Cleaning text taken from untrusted files (DICOM names, descriptions, labels)."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def sanitize_text(text: Any, *, max_len: int = 64) -> str:
    """Clean a name taken from DICOM text (ROI names, segment labels, descriptions).

    Unicode is normalised (NFKC), control characters and DICOM's ``^`` component
    separators become spaces, runs of spaces collapse and the result is cut to
    ``max_len`` characters. File names are made from it separately with
    :func:`medrecon.atomic.safe_name`.
    """
    s = unicodedata.normalize("NFKC", str(text))
    s = _CONTROL.sub(" ", s).replace("^", " ")
    return " ".join(s.split())[:max_len].strip()
