"""Mutations of an attached-header NRRD file: field values, dropped lines, bit flips, truncation.

The hostile values include a ``data file`` that points outside the case folder
(``/dev/zero``, ``/etc/passwd``, ``../../``): a header must not make the reader
consume a device or an unrelated file as voxel data.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

VALUES = {
    "type": ["short", "double", "block", "foo", "unsigned char", "int64", ""],
    "dimension": ["0", "1", "2", "4", "17", "-3", "x"],
    "sizes": ["0 0 0", "-1 5 5", "99999 99999 99999", "a b c", "512 512", "512 512 3 2",
              "1e9 1 1", "512 512 300", "256 512 6"],
    "space directions": ["(nan,0,0) (0,1,0) (0,0,1)", "(0,0,0) (0,0,0) (0,0,0)", "none none none",
                         "(1,0,0) (1,0,0) (0,0,1)", "(inf,0,0) (0,1,0) (0,0,1)", "(1,0) (0,1) (0,0,1)",
                         "garbage"],
    "endian": ["big", "middle", ""],
    "encoding": ["raw", "ascii", "bzip2", "foo", "gzip", "hex"],
    "space origin": ["(nan,0,0)", "(1,2)", "(inf,inf,inf)", "none", "(1,2,3,4)"],
    "space": ["right-anterior-superior", "scanner-xyz", "3D-left-handed", "foo"],
    "kinds": ["RGB-color domain domain", "foo", "", "domain domain"],
    "byte skip": ["-1", "100000000", "5"],
    "line skip": ["-1", "99999"],
    "data file": ["/dev/zero", "/etc/passwd", "../../../etc/hostname", "LIST", "missing.raw %d 1 3"],
    "space units": ["\"m\" \"m\" \"m\"", "\"furlong\" \"mm\" \"mm\""],
}
MUTATIONS = ("value", "drop", "flip", "truncate")
WEIGHTS = {"value": 4, "drop": 1, "flip": 2, "truncate": 1}


def write_case(raw: bytes, mutation: str, rng: random.Random, folder: Path) -> tuple[Path, str]:
    """Apply ``mutation`` to the NRRD file ``raw`` and write ``folder/case.nrrd``."""
    split = raw.index(b"\n\n") + 2
    header, body = raw[:split].decode("latin-1"), raw[split:]
    if mutation == "value":
        key = rng.choice(sorted(VALUES))
        value = rng.choice(VALUES[key])
        if re.search(rf"^{key}:", header, re.M):
            header = re.sub(rf"^{key}:.*$", f"{key}: {value}", header, flags=re.M)
        else:
            header = header.replace("\n\n", f"\n{key}: {value}\n\n")
        data, what = header.encode("latin-1") + body, f"{key}: {value!r}"
    elif mutation == "drop":
        lines = header.split("\n")
        n = rng.randrange(1, len(lines) - 2)
        what = f"line {lines[n]!r} dropped"
        del lines[n]
        data = "\n".join(lines).encode("latin-1") + body
    elif mutation == "flip":
        buf = bytearray(raw)
        region = split if rng.random() < 0.7 else len(buf)
        n = rng.randint(1, 8)
        for _ in range(n):
            buf[rng.randrange(region)] ^= 1 << rng.randrange(8)
        data, what = bytes(buf), f"{n} bits flipped in the first {region} bytes"
    else:
        cut = rng.randrange(len(raw))
        data, what = raw[:cut], f"cut at {cut}"
    path = folder / "case.nrrd"
    path.write_bytes(data)
    return path, what


def declared_shape(path: Path) -> tuple[int, ...] | None:
    """The ``sizes`` of a 3D header, or None when the header does not plainly declare one."""
    try:
        head = path.read_bytes().split(b"\n\n", 1)[0].decode("latin-1")
        dims = re.search(r"^dimension:\s*(\S+)\s*$", head, re.M)
        sizes = re.search(r"^sizes:\s*(.+)$", head, re.M)
        if not dims or not sizes or dims.group(1) != "3":
            return None
        return tuple(int(s) for s in sizes.group(1).split())
    except (OSError, ValueError):
        return None
