"""Shell nesting (solids, cavities, islands) and the box tree under it, against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from medrecon.mesh import nesting
from medrecon.mesh.bvh import BoxTree, first_hits, ray_hits, triangle_tree
from medrecon.mesh.nesting import nesting_depth
from medrecon.mesh.repair import check, fix_orientation
from medrecon.mesh.shells import edge_table, face_shells


def solid_angle_depth(vertices, faces, shell_of_face, n):
    """Reference (the quadratic loop it replaced): shell b holds shell a when b's box holds a's
    box and the solid angle of b seen from a point of a is 4 pi (winding number 1)."""
    tri = vertices[faces]
    lo = np.array([tri[shell_of_face == b].min(axis=(0, 1)) for b in range(n)])
    hi = np.array([tri[shell_of_face == b].max(axis=(0, 1)) for b in range(n)])
    depth = np.zeros(n, dtype=int)
    first = np.unique(shell_of_face, return_index=True)[1]
    for a in range(n):
        p = tri[first[a]].mean(axis=0)
        for b in range(n):
            if a == b or np.any(lo[a] < lo[b]) or np.any(hi[a] > hi[b]):
                continue
            t = tri[shell_of_face == b] - p
            la, lb, lc = (np.linalg.norm(t[:, k], axis=1) for k in range(3))
            num = np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2]))
            den = (la * lb * lc + np.einsum("ij,ij->i", t[:, 0], t[:, 1]) * lc
                   + np.einsum("ij,ij->i", t[:, 0], t[:, 2]) * lb + np.einsum("ij,ij->i", t[:, 1], t[:, 2]) * la)
            if abs(np.sum(2.0 * np.arctan2(num, den))) > 2.0 * np.pi:
                depth[a] += 1
    return depth


def shells_of(mesh):
    faces = np.asarray(mesh.faces, dtype=np.int64)
    n, shell = face_shells(faces, edge_table(faces)[0])
    return np.asarray(mesh.vertices, dtype=np.float64), faces, shell, n


@pytest.mark.parametrize("few_pairs", [0, 10**6])  # by rays through a tree, by solid angles
@pytest.mark.parametrize("seed", range(4))
def test_nesting_depth_matches_solid_angles(seed, few_pairs, monkeypatch):
    monkeypatch.setattr(nesting, "FEW_PAIRS", few_pairs)
    rng = np.random.default_rng(seed)
    parts = []
    for k, radius in enumerate([10.0, 8.0, 6.0, 4.0]):  # solid, cavity, island, cavity in the island
        sphere = trimesh.creation.icosphere(2, radius=radius)
        if k % 2:
            sphere.invert()
        parts.append(sphere)
    for _ in range(int(rng.integers(10, 40))):  # boxes inside, across and outside the spheres
        box = trimesh.creation.box(extents=rng.uniform(0.2, 1.5, 3))
        box.apply_translation(rng.uniform(-13.0, 13.0, 3))
        parts.append(box)
    vertices, faces, shell, n = shells_of(trimesh.util.concatenate(parts))
    np.testing.assert_array_equal(nesting_depth(vertices, faces, shell, n),
                                  solid_angle_depth(vertices, faces, shell, n))


def test_many_pieces_in_a_cavity_are_solids_and_check_outward():
    # 400 small cubes inside the cavity of a hollow sphere: each nested twice (a solid)
    outer = trimesh.creation.icosphere(3, radius=30.0)
    inner = trimesh.creation.icosphere(3, radius=25.0)
    inner.invert()
    grid = np.stack(np.meshgrid(*[np.arange(-9.0, 11.0, 2.5)] * 3, indexing="ij"), -1).reshape(-1, 3)
    grid = grid[np.linalg.norm(grid, axis=1) < 20.0][:400]
    cubes = [trimesh.creation.box(extents=(1.0, 1.0, 1.0)) for _ in grid]
    for cube, centre in zip(cubes, grid, strict=True):
        cube.apply_translation(centre)
    mesh = trimesh.util.concatenate([outer, inner, *cubes])
    vertices, faces, shell, n = shells_of(mesh)
    depth = nesting_depth(vertices, faces, shell, n)
    sizes = np.bincount(shell)
    assert n == 2 + len(grid)
    # the two big shells are the largest: depth 0 and 1; every cube sits at depth 2
    big = np.argsort(sizes)[-2:]
    assert sorted(depth[big].tolist()) == [0, 1]
    assert np.all(np.delete(depth, big) == 2)
    assert check(mesh).outward
    # flipping every cube inside out is seen, and fix_orientation turns them back
    flipped = faces.copy()
    small = ~np.isin(shell, big)
    flipped[small] = flipped[small][:, ::-1]
    bad = trimesh.Trimesh(vertices, flipped, process=False)
    assert not check(bad).outward
    assert check(fix_orientation(bad)).outward


@pytest.mark.parametrize("leaf_size", [1, 3, 5])
def test_box_tree_pairs_match_brute_force(leaf_size):
    rng = np.random.default_rng(3)
    lo = rng.uniform(0, 50, (700, 3))
    hi = lo + rng.uniform(0, 4, (700, 3))
    found = set()
    # every pair of overlapping boxes, each once, and no other
    for i, j in BoxTree.build(lo, hi, leaf_size=leaf_size).overlapping_pairs():
        pairs = [(min(a, b), max(a, b)) for a, b in zip(i.tolist(), j.tolist(), strict=True)]
        assert len(set(pairs)) == len(pairs) and not found & set(pairs)
        found |= set(pairs)
    touch = np.all((lo[:, None] <= hi[None]) & (lo[None] <= hi[:, None]), axis=2)
    expected = {(a, b) for a, b in zip(*np.nonzero(np.triu(touch, 1)), strict=True)}
    assert found == {(int(a), int(b)) for a, b in expected}


def test_rays_match_brute_force():
    sphere = trimesh.creation.icosphere(3, radius=5.0)
    tri = np.asarray(sphere.triangles)
    rng = np.random.default_rng(0)
    origins = rng.uniform(-3, 3, (200, 3))
    directions = rng.normal(size=(200, 3))
    directions /= np.linalg.norm(directions, axis=1)[:, None]
    tt = triangle_tree(tri)
    t, face = first_hits(tt, origins, directions)
    # from inside a sphere every ray leaves through it once, at about the radius
    assert np.all(face >= 0)
    hit = origins + t[:, None] * directions
    assert np.allclose(np.linalg.norm(hit, axis=1), 5.0, atol=0.05)
    # the face hit is the one whose plane is crossed first among all faces (brute force)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert np.all(np.einsum("ij,ij->i", n[face], directions) > 0)
    ray, _, sign, degenerate = ray_hits(tt, origins, directions)
    assert not degenerate.any()
    np.testing.assert_array_equal(np.bincount(ray, minlength=200), 1)
    assert np.all(sign == 1)  # leaving along the outward normal
