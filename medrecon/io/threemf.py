"""3MF writer: a zip package of one XML model, in millimetres, with metadata.

3MF (3D Manufacturing Format, core specification 1.x) carries its unit, so a
slicer cannot mistake millimetres for inches. Each mesh becomes one object; the
world frame of the coordinates is written as model metadata. Colours, when
given, are core-specification base materials (one named ``<base>`` per object,
its ``displaycolor`` in sRGB, the object's ``pid``/``pindex`` pointing at it); a
slicer that ignores materials (PrusaSlicer 2.5) still loads one named object per
mesh.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping, Sequence
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


#: Resource id of the base-material group (objects are numbered after it).
_MATERIALS_ID = 1


def hex_colour(rgb: Sequence[float]) -> str:
    """``"#RRGGBB"`` of an RGB colour with components in [0, 1] (3MF's sRGB ``displaycolor``)."""
    values = np.asarray(rgb, dtype=np.float64)
    if values.shape != (3,) or not np.all((values >= 0.0) & (values <= 1.0)):
        raise ValueError(f"a colour is three numbers in [0, 1], got {rgb!r}")
    r, g, b = (int(round(255.0 * v)) for v in values)
    return f"#{r:02X}{g:02X}{b:02X}"


def _object_xml(object_id: int, name: str, mesh: TriangleMesh, material: str = "") -> str:
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    vertices = "".join(f'<vertex x="{x:.9g}" y="{y:.9g}" z="{z:.9g}"/>' for x, y, z in v.tolist())
    triangles = "".join(f'<triangle v1="{a}" v2="{b}" v3="{c}"/>' for a, b, c in f.tolist())
    return (
        f'<object id="{object_id}" type="model" name={quoteattr(name)}{material}><mesh>'
        f"<vertices>{vertices}</vertices><triangles>{triangles}</triangles>"
        "</mesh></object>"
    )


def model_xml(
    meshes: Mapping[str, TriangleMesh],
    *,
    frame: str,
    colours: Mapping[str, Sequence[float]] | None = None,
) -> str:
    """Return the ``3D/3dmodel.model`` document for ``meshes`` (name -> mesh in mm).

    ``colours`` (name -> RGB in [0, 1], one for every mesh) adds a base-material
    group with one named, coloured material per object.
    """
    names = list(meshes)
    first = 1
    materials = ""
    if colours is not None:
        missing = [name for name in names if name not in colours]
        if missing:
            raise ValueError(f"no colour given for {', '.join(map(repr, missing))}")
        bases = "".join(f"<base name={quoteattr(name)} displaycolor=\"{hex_colour(colours[name])}\"/>"
                        for name in names)
        materials = f'<basematerials id="{_MATERIALS_ID}">{bases}</basematerials>'
        first = _MATERIALS_ID + 1
    objects = "".join(
        _object_xml(first + n, name, meshes[name],
                    "" if colours is None else f' pid="{_MATERIALS_ID}" pindex="{n}"')
        for n, name in enumerate(names)
    )
    items = "".join(f'<item objectid="{first + n}"/>' for n in range(len(names)))
    description = f"Organ meshes in {frame} patient coordinates, millimetres (medrecon)"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<model unit="millimeter" xml:lang="en-US" xmlns="{CORE_NS}" xmlns:medrecon="{MEDRECON_NS}">'
        f'<metadata name="Application">medrecon</metadata>'
        f'<metadata name="Description">{escape(description)}</metadata>'
        f'<metadata name="medrecon:frame">{escape(frame)}</metadata>'
        f'<metadata name="medrecon:units">mm</metadata>'
        f"<resources>{materials}{objects}</resources><build>{items}</build></model>"
    )


def write_3mf(
    meshes: Mapping[str, TriangleMesh],
    path: str | os.PathLike,
    *,
    frame: str,
    colours: Mapping[str, Sequence[float]] | None = None,
) -> None:
    """Write ``meshes`` (name -> mesh, coordinates in mm in ``frame``) as one 3MF file, atomically.

    ``colours``: name -> RGB in [0, 1] for every mesh (see :func:`model_xml`).
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        z.writestr("[Content_Types].xml", _CONTENT_TYPES)
        z.writestr("_rels/.rels", _RELS)
        z.writestr("3D/3dmodel.model", model_xml(meshes, frame=frame, colours=colours))
    write_bytes(path, buf.getvalue())
