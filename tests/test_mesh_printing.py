"""Drain holes, scaling and fitting to a printer's bed, checked by independent tools and analytic geometry."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import trimesh
from _builders import CENTRE, oblique_grid, world_points

from medrecon.errors import MedreconError
from medrecon.mesh.printing import drain_holes
from medrecon.mesh.repair import check
from medrecon.mesh.smooth import smooth
from medrecon.surface.extract import mask_surface
from medrecon.triangles import TriangleMesh

OUTER, INNER = 10.0, 8.0  # radii of the hollow sphere, mm (a 2 mm wall)


def winding_number(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Winding number of each point by solid angles (van Oosterom and Strackee): 1 inside, 0 outside."""
    tri = vertices[faces]
    out = []
    for p in points:
        a, b, c = (tri[:, k] - p for k in range(3))
        la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
        num = np.einsum("ij,ij->i", a, np.cross(b, c))
        den = (la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", a, c) * lb
               + np.einsum("ij,ij->i", b, c) * la)
        out.append(np.sum(2.0 * np.arctan2(num, den)) / (4.0 * np.pi))
    return np.asarray(out)


def admesh_errors(mesh, tmp_path) -> dict[str, int]:
    """The defect counts admesh reports for ``mesh`` written as a binary STL.

    The facet normals are computed from the float32 corners the file holds, as
    admesh recomputes them: a Boolean's sliver triangles would otherwise read
    as "normals fixed" from float64 normals.
    """
    path = tmp_path / "part.stl"
    tri = np.asarray(mesh.vertices)[np.asarray(mesh.faces)].astype(np.float32).astype(np.float64)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    records = np.zeros(len(tri), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    records["n"] = normal / np.linalg.norm(normal, axis=1)[:, None]
    records["v"] = tri
    path.write_bytes(b" " * 80 + np.uint32(len(tri)).tobytes() + records.tobytes())
    text = subprocess.run(["admesh", str(path)], capture_output=True, text=True, check=True).stdout
    keys = ("Degenerate facets", "Edges fixed", "Facets removed", "Facets added", "Facets reversed",
            "Backwards edges", "Normals fixed", "Total disconnected facets")
    counts = {}
    for line in text.splitlines():
        for key in keys:
            if line.startswith(key):
                counts[key] = int(line.split(":")[1].split()[0])
    assert set(counts) == set(keys), text
    return counts


@pytest.fixture(scope="module")
def hollow_sphere():
    """A smoothed spherical shell (outer + inward-facing inner surface) from an oblique, reflected grid."""
    affine, shape = oblique_grid((0.5, 0.5, 0.5), 11.0)
    r = np.linalg.norm(world_points(affine, shape) - CENTRE, axis=1).reshape(shape)
    return smooth(mask_surface((r <= OUTER) & (r > INNER), affine), 0.5)


def test_drain_holes_open_the_cavity_at_its_lowest_points(hollow_sphere, tmp_path):
    assert check(hollow_sphere).printable and check(hollow_sphere).shells == 2
    drilled, holes = drain_holes(hollow_sphere, 2, 3.0)
    # still a closed, consistently wound, outward 2-manifold, now one shell (the cavity opens)
    state = check(drilled)
    assert state.printable and state.shells == 1
    tm = trimesh.Trimesh(drilled.vertices, drilled.faces, process=False)
    assert tm.is_watertight and tm.is_winding_consistent and tm.volume > 0
    # at the lowest points along +z: the first at the cavity's bottom, the second 6 mm or more away
    cavity_bottom = CENTRE[2] - INNER
    assert len(holes) == 2
    assert holes[0].start[2] == pytest.approx(cavity_bottom, abs=0.3)
    assert np.linalg.norm(holes[1].start - holes[0].start) >= 6.0
    for hole in holes:
        # straight down through the 2 mm wall
        np.testing.assert_allclose(hole.exit[:2], hole.start[:2])
        assert 1.5 <= hole.start[2] - hole.exit[2] <= 3.5
        # the middle of the wall on the hole's axis was solid and is now empty
        mid = 0.5 * (hole.start + hole.exit)
        before = winding_number(mid[None], hollow_sphere.vertices, hollow_sphere.faces)[0]
        after = winding_number(mid[None], drilled.vertices, drilled.faces)[0]
        assert abs(before - 1.0) < 1e-6 and abs(after) < 1e-6
    # the material removed: about two cylinders of 1.5 mm radius through a 2 mm wall
    removed = trimesh.Trimesh(hollow_sphere.vertices, hollow_sphere.faces).volume - tm.volume
    assert removed == pytest.approx(2 * np.pi * 1.5**2 * 2.0, rel=0.35)
    if shutil.which("admesh"):
        assert all(v == 0 for v in admesh_errors(drilled, tmp_path).values())


def test_drain_holes_follow_the_print_orientation(hollow_sphere):
    up = np.array([1.0, 1.0, 0.0]) / np.sqrt(2.0)
    drilled, (hole,) = drain_holes(hollow_sphere, 1, 2.0, up=up)
    assert check(drilled).printable
    # the cavity's lowest point along up, and the hole leaves along -up
    assert float((hole.start - CENTRE) @ up) == pytest.approx(-INNER, abs=0.3)
    direction = (hole.exit - hole.start) / np.linalg.norm(hole.exit - hole.start)
    np.testing.assert_allclose(direction, -up, atol=1e-9)


def test_solid_parts_need_no_drain_and_broken_ones_are_refused():
    sphere = trimesh.creation.icosphere(3, radius=5.0)
    same, holes = drain_holes(sphere, 3, 2.0)
    assert holes == [] and np.array_equal(same.faces, sphere.faces)
    outer = trimesh.creation.icosphere(3, radius=5.0)
    inner = trimesh.creation.icosphere(3, radius=4.0)
    inner.invert()
    hollow = trimesh.util.concatenate([outer, inner])
    opened = TriangleMesh(hollow.vertices, hollow.faces[:-1])  # a hole in the inner surface
    with pytest.raises(MedreconError, match="repair it first"):
        drain_holes(opened, 1, 1.0)
    with pytest.raises(ValueError, match="n must be"):
        drain_holes(hollow, 0, 1.0)
    with pytest.raises(ValueError, match="diameter_mm"):
        drain_holes(hollow, 1, 0.0)
    with pytest.raises(ValueError, match="up must be"):
        drain_holes(hollow, 1, 1.0, up=(0, 0, 0))
