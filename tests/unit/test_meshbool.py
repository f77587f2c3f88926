"""Mesh import and manifold3d booleans against the lens formula and trimesh's own volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh

from twinstack.sim.cad import GeometryError
from twinstack.sim.meshbool import Mesh, mesh_boolean

PI = math.pi


def icosphere(center: tuple[float, float, float], subdivisions: int = 4) -> Mesh:
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0)
    return Mesh.from_arrays(s.vertices + np.asarray(center), s.faces)


def test_booleans_of_two_spheres_approach_the_lens():
    a, b = icosphere((0, 0, 0)), icosphere((1, 0, 0))
    lens = 5 * PI / 12  # unit spheres one apart
    ball = a.volume  # the polyhedron's own volume, just under 4/3 pi
    assert ball == pytest.approx(4 / 3 * PI, rel=5e-3)
    common = mesh_boolean("intersection", a, b)
    union = mesh_boolean("union", a, b)
    rest = mesh_boolean("difference", a, b)
    assert common.volume == pytest.approx(lens, rel=1e-2)
    assert union.volume == pytest.approx(2 * 4 / 3 * PI - lens, rel=1e-2)
    assert rest.volume == pytest.approx(4 / 3 * PI - lens, rel=1e-2)
    # inclusion-exclusion holds on the polyhedra themselves, to float32 rounding
    assert union.volume + common.volume == pytest.approx(2 * ball, rel=1e-5)
    assert rest.volume + common.volume == pytest.approx(ball, rel=1e-5)
    for m in (common, union, rest):
        m.check_closed()
        t = trimesh.Trimesh(m.vertices, m.faces, process=False)
        assert t.is_watertight
        assert m.volume == pytest.approx(float(t.volume), rel=1e-12)
        assert m.area == pytest.approx(float(t.area), rel=1e-12)


def test_stl_and_obj_round_trips():
    a = icosphere((0.5, 0, 0), subdivisions=3)
    back = Mesh.from_stl(a.to_stl())
    assert len(back.faces) == len(a.faces)
    assert back.volume == pytest.approx(a.volume, rel=1e-6)  # STL stores float32
    obj = trimesh.Trimesh(a.vertices, a.faces).export(file_type="obj").encode()
    assert Mesh.from_obj(obj).volume == pytest.approx(a.volume, rel=1e-7)  # 8 digits in OBJ


def open_box() -> Mesh:
    box = trimesh.creation.box(extents=(1, 1, 1))
    return Mesh.from_arrays(box.vertices, box.faces[:-2])  # one side left open


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mesh_boolean("union", open_box(), icosphere((0, 0, 0))),
         "the mesh is not closed: 4 boundary edges"),
        (lambda: Mesh.from_stl(open_box().to_stl()).check_closed(), "not closed"),
        (lambda: mesh_boolean("intersection", icosphere((0, 0, 0)), icosphere((5, 0, 0))),
         "the intersection of these meshes is empty"),
        (lambda: mesh_boolean("xor", icosphere((0, 0, 0)), icosphere((1, 0, 0))),
         "unknown mesh boolean"),
        (lambda: Mesh.from_stl(b""), "the STL data could not be read"),
        (lambda: Mesh.from_stl(icosphere((0, 0, 0), 2).to_stl(), max_faces=100),
         "more than the limit 100"),
    ],
)
def test_errors(call, message: str):
    with pytest.raises(GeometryError) as err:
        call()
    assert message in str(err.value)


def test_non_manifold_edge_is_refused():
    # two tetrahedra sharing one edge: that edge belongs to four triangles
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, -1, 0], [0, 0, -1]], float)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3],
                  [0, 1, 4], [0, 5, 1], [0, 4, 5], [1, 5, 4]])
    with pytest.raises(GeometryError, match="not manifold: 1 edges"):
        Mesh.from_arrays(v, f).check_closed()
