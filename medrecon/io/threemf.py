"""3MF writer: a zip package of one XML model, in millimetres, with metadata.

3MF (3D Manufacturing Format, core specification 1.x) carries its unit, so a
slicer cannot mistake millimetres for inches. Each mesh becomes one object; the
world frame of the coordinates is written as model metadata.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from medrecon.atomic import write_bytes
from medrecon.triangles import TriangleMesh

CORE_NS = "http://schemas.microsoft.com/3dmanufacturing/core/2015/02"
MEDRECON_NS = "https://github.com/medrecon/medrecon/3mf/2024"

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="model" ContentType="application/vnd.ms-package.3dmanufacturing-3dmodel+xml"/>'
    "</Types>"
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Target="/3D/3dmodel.model" Id="rel0" '
    'Type="http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"/>'
    "</Relationships>"
)


def _object_xml(object_id: int, name: str, mesh: TriangleMesh) -> str:
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    vertices = "".join(f'<vertex x="{x:.9g}" y="{y:.9g}" z="{z:.9g}"/>' for x, y, z in v.tolist())
    triangles = "".join(f'<triangle v1="{a}" v2="{b}" v3="{c}"/>' for a, b, c in f.tolist())
    return (
        f'<object id="{object_id}" type="model" name={quoteattr(name)}><mesh>'
        f"<vertices>{vertices}</vertices><triangles>{triangles}</triangles>"
        "</mesh></object>"
    )


def model_xml(meshes: Mapping[str, TriangleMesh], *, frame: str) -> str:
    """Return the ``3D/3dmodel.model`` document for ``meshes`` (name -> mesh in mm)."""
    objects = "".join(_object_xml(n + 1, name, m) for n, (name, m) in enumerate(meshes.items()))
    items = "".join(f'<item objectid="{n + 1}"/>' for n in range(len(meshes)))
    description = f"Organ meshes in {frame} patient coordinates, millimetres (medrecon)"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<model unit="millimeter" xml:lang="en-US" xmlns="{CORE_NS}" xmlns:medrecon="{MEDRECON_NS}">'
        f'<metadata name="Application">medrecon</metadata>'
        f'<metadata name="Description">{escape(description)}</metadata>'
        f'<metadata name="medrecon:frame">{escape(frame)}</metadata>'
        f'<metadata name="medrecon:units">mm</metadata>'
        f"<resources>{objects}</resources><build>{items}</build></model>"
    )


def write_3mf(meshes: Mapping[str, TriangleMesh], path: str | os.PathLike, *, frame: str) -> None:
    """Write ``meshes`` (name -> mesh, coordinates in mm in ``frame``) as one 3MF file, atomically."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        z.writestr("[Content_Types].xml", _CONTENT_TYPES)
        z.writestr("_rels/.rels", _RELS)
        z.writestr("3D/3dmodel.model", model_xml(meshes, frame=frame))
    write_bytes(path, buf.getvalue())
