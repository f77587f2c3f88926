"""GLB scenes as three.js loads them, and the surfaces of tet and voxel meshes counted by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import trimesh

from tests.js_harness import load_glb
from twinstack.sim.scene import (
    Part,
    feature_edges,
    glb,
    split_normals,
    tet_surface_parts,
    voxel_surface_parts,
)

# The unit cube as 6 tets around its diagonal 0 -> 7 (Kuhn): one per axis order (a, b, c),
# vertices 0, e_a, e_a + e_b, 1. Corner k has coordinates (k & 1, k >> 1 & 1, k >> 2 & 1).
CORNERS = np.array([[k & 1, k >> 1 & 1, k >> 2 & 1] for k in range(8)], dtype=float)
ORDERS = list(itertools.permutations(range(3)))
KUHN = np.array([[0, 1 << a, (1 << a) | (1 << b), 7] for a, b, _ in ORDERS])


def enclosed_volume(part: Part) -> float:
    """Divergence theorem: positive and equal to the solid's volume when closed and outward."""
    t = part.vertices[part.faces]
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6)


def test_feature_edges_and_crease_normals_of_a_box_and_a_cylinder():
    box = trimesh.creation.box(extents=(1, 2, 3))
    assert len(feature_edges(box.vertices, box.faces)) == 12  # not the face diagonals
    v, n, f = split_normals(box.vertices, box.faces)
    assert len(v) == 24  # each corner once per side
    face_normal = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    for k in range(3):  # flat: every corner of a face carries the face's own normal
        assert np.allclose(n[f[:, k]], face_normal / np.linalg.norm(face_normal, axis=1)[:, None])
    cyl = trimesh.creation.cylinder(radius=1.0, height=2.0, sections=32)
    assert len(feature_edges(cyl.vertices, cyl.faces)) == 64  # the two rims, not the 11.25 deg
    v, n, f = split_normals(cyl.vertices, cyl.faces)
    side = np.abs(n[:, 2]) < 0.5
    assert side.sum() == 64  # the rim vertices once for the side, once for their cap
    radial = v[side] * [1, 1, 0]
    assert np.allclose(n[side], radial / np.linalg.norm(radial, axis=1)[:, None], atol=1e-12)
    assert np.allclose(np.abs(n[~side, 2]), 1.0)
    one = np.array([[0, 1, 2]])  # an open triangle: its three sides are boundary
    assert len(feature_edges(CORNERS[:3], one)) == 3


def test_two_parts_with_edges_load_in_three_js():
    box = trimesh.creation.box(extents=(1, 1, 1))
    parts = tet_surface_parts(CORNERS + np.array([2, 0, 0]), KUHN, np.zeros(6, int), ["mesh.cube"])
    parts.append(
        Part("box", box.vertices, box.faces, (0.2, 0.4, 0.9, 0.5),
             feature_edges(box.vertices, box.faces))
    )
    parts.append(Part("axis", np.zeros((0, 3)), np.zeros((0, 3), int), (1, 0, 0, 1),
                      np.array([[[0, 0, 0], [0, 0, 2]]])))
    data = glb(parts)
    assert glb(parts) == data  # cacheable by content
    scene = load_glb(data)
    assert scene["gltf_nodes"] == ["mesh.cube", "mesh.cube edges", "box", "box edges", "axis"]
    # three.js sanitises node names: whitespace to "_", "." dropped
    assert scene["nodes"] == ["meshcube", "meshcube_edges", "box", "box_edges", "axis"]
    meshes = {m["name"]: m for m in scene["meshes"]}
    assert set(meshes) == {"meshcube", "box"}
    assert all(m["normals"] for m in meshes.values())
    assert meshes["box"]["vertices"] == 24 and meshes["box"]["triangles"] == 12
    assert meshes["box"]["transparent"] and meshes["box"]["opacity"] == 0.5
    assert meshes["box"]["color"] == pytest.approx([0.2, 0.4, 0.9], abs=1e-6)
    assert not meshes["meshcube"]["transparent"]
    assert meshes["meshcube"]["triangles"] == 12  # the cube's outside, 2 per side
    lines = {line["name"]: line for line in scene["lines"]}
    # the Kuhn cube's surface triangles have 18 sides: 12 cube edges and 6 face diagonals
    assert lines["meshcube_edges"]["segments"] == 18
    assert lines["box_edges"]["segments"] == 12
    assert lines["box_edges"]["color"] == pytest.approx([0.1, 0.1, 0.1], abs=1e-6)
    assert lines["axis"] == {"name": "axis", "segments": 1, "color": [1, 0, 0]}


def test_glb_refuses_clashing_names_and_bad_parts():
    box = trimesh.creation.box()
    with pytest.raises(ValueError, match="named 'a'"):
        glb([Part("a", box.vertices, box.faces), Part("a", box.vertices, box.faces)])
    with pytest.raises(ValueError, match="outside its 8 vertices"):
        glb([Part("a", box.vertices, box.faces + 1)])
    with pytest.raises(ValueError, match="RGBA"):
        glb([Part("a", box.vertices, box.faces, (1, 0, 0))])  # type: ignore[arg-type]


def test_tet_regions_surfaces_counted_by_hand():
    # region 0: the tets whose order starts with x (2 tets), region 1: the other 4
    region = np.array([0 if order[0] == 0 else 1 for order in ORDERS])
    a, b = tet_surface_parts(CORNERS, KUHN, region, ["a", "b"])
    # each tet has 2 faces on the cube and 2 inside; inside faces shared in one region go
    assert (a.name, len(a.faces)) == ("a", 4 + 2)  # 2 interface faces
    assert (b.name, len(b.faces)) == ("b", 8 + 2)
    assert enclosed_volume(a) == pytest.approx(1 / 3, abs=1e-15)  # closed, outward
    assert enclosed_volume(b) == pytest.approx(2 / 3, abs=1e-15)
    # the same with tets given in the other orientation (two vertices swapped)
    flipped = KUHN[:, [0, 2, 1, 3]]
    assert enclosed_volume(tet_surface_parts(CORNERS, flipped, region, ["a", "b"])[0]) == (
        pytest.approx(1 / 3, abs=1e-15)
    )
    # centroid x of tet (a, b, c) is 1 when a = x, 0.5 when b = x, 0.25 when c = x: a cut at
    # x = 0.3 keeps the two tets (y, z, x) and (z, y, x), both region 1, sharing one face
    (kept,) = tet_surface_parts(CORNERS, KUHN, region, ["a", "b"], clip=([0.3, 0, 0], [1, 0, 0]))
    assert (kept.name, len(kept.faces)) == ("b", 6)
    assert enclosed_volume(kept) == pytest.approx(1 / 3, abs=1e-15)
    assert np.all(kept.vertices[:, 0] <= kept.vertices[:, 1] + 1e-15)  # the half with x <= y
    # a plane before the cube keeps nothing
    assert tet_surface_parts(CORNERS, KUHN, region, ["a", "b"], clip=([-1, 0, 0], [1, 0, 0])) == []


def test_voxel_block_faces_counted_by_hand():
    x = np.array([0.0, 1.0, 3.0, 4.0, 7.0])  # uneven spacing
    y = z = np.arange(5.0)
    material = np.zeros((4, 4, 4), np.uint16)
    material[1:3, 1:3, 1:3] = 1
    (block,) = voxel_surface_parts(x, y, z, material, {1: "steel"})
    assert block.name == "steel"
    assert len(block.faces) == 48  # 6 sides x 2 x 2 quads x 2 triangles
    assert len(block.vertices) == 26  # 3^3 nodes less the centre
    assert block.edges is not None and len(block.edges) == 48  # Euler: E = V + F - 2
    assert enclosed_volume(block) == pytest.approx((x[3] - x[1]) * 2 * 2)
    # a second material on top: the interface belongs to both
    material[1:3, 1:3, 3] = 2
    steel, other = voxel_surface_parts(x, y, z, material, {1: "steel"})
    assert len(steel.faces) == 48
    assert other.name == "material 2"
    assert len(other.faces) == 2 * (2 * 4 + 4 * 2)  # a 2 x 2 x 1 block: 16 quads
    assert enclosed_volume(other) == pytest.approx((x[3] - x[1]) * 2 * 1)
    # cell centres at x = 0.5, 2, 3.5, 5.5: a cut at x = 2 keeps the block's first layer
    plane = ([2, 0, 0], [1, 0, 0])
    (half,) = voxel_surface_parts(x, y, z[:4], material[:, :, :3], {1: "steel"}, clip=plane)
    assert len(half.faces) == 2 * (2 * 4 + 2 * 2 + 2 * 2)  # a 1 x 2 x 2 block
    assert enclosed_volume(half) == pytest.approx((x[2] - x[1]) * 2 * 2)
    with pytest.raises(ValueError, match="material must be"):
        voxel_surface_parts(x, y, z, material[:3], {})


def test_voxel_surface_of_a_large_grid_is_vectorised():
    n = 60
    c = np.linspace(-1, 1, n + 1)
    centre = (c[1:] + c[:-1]) / 2
    r2 = centre[:, None, None] ** 2 + centre[None, :, None] ** 2 + centre[None, None, :] ** 2
    material = np.where(r2 < 0.8**2, 1, 0).astype(np.uint16)
    (ball,) = voxel_surface_parts(c, c, c, material, {1: "ball"})
    assert enclosed_volume(ball) == pytest.approx(material.sum() * (2 / n) ** 3)
    assert glb([ball])[:4] == b"glTF"
