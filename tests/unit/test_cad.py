"""The exact-CAD kernel layer against closed-form volumes and areas, and its error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from twinstack.sim.cad import FEATURES, GeometryError, Solid, build

PI = math.pi


def props(feature: str, **params: object) -> dict:
    return build(feature, dict(params), []).properties()


def lens(r: float, d: float) -> float:
    """Volume common to two spheres of radius r whose centres are d apart."""
    return PI * (4 * r + d) * (2 * r - d) ** 2 / 12


@pytest.mark.parametrize(
    ("feature", "params", "volume", "area"),
    [
        ("box", {"size": [1, 2, 3], "corner": [-1, 5, 2]}, 6.0, 22.0),
        ("sphere", {"radius": 1.5, "center": [1, 2, 3]}, 4 / 3 * PI * 1.5**3, 4 * PI * 1.5**2),
        ("cylinder", {"radius": 0.5, "height": 2, "axis": [1, 1, 0]}, PI * 0.25 * 2,
         2 * PI * 0.5 * (0.5 + 2)),
        ("cone", {"radius1": 2, "radius2": 1, "height": 3}, PI * 3 / 3 * (4 + 2 + 1),
         PI * (4 + 1) + PI * 3 * math.hypot(1, 3)),
        ("cone", {"radius1": 0, "radius2": 2, "height": 3, "base": [1, 1, 1]}, PI * 4,
         PI * 4 + PI * 2 * math.hypot(2, 3)),
        ("torus", {"major_radius": 3, "minor_radius": 1, "axis": [0, 1, 0]},
         2 * PI**2 * 3 * 1, 4 * PI**2 * 3 * 1),
        # an L: 2x2 square less a 1x1 corner; perimeter 8
        ("prism", {"polygon": [[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2]], "height": 0.5},
         3 * 0.5, 2 * 3 + 8 * 0.5),
    ],
)
def test_primitives_match_closed_forms(feature: str, params: dict, volume: float, area: float):
    p = props(feature, **params)
    assert p["volume"] == pytest.approx(volume, rel=1e-9)
    assert p["area"] == pytest.approx(area, rel=1e-9)
    assert p["solids"] == 1


def test_box_properties():
    p = props("box", size=[1, 2, 3], corner=[1, 1, 1])
    assert np.asarray(p["bbox"]) == pytest.approx(np.array([[1, 1, 1], [2, 3, 4]]), abs=1e-9)
    assert p["center_of_mass"] == pytest.approx([1.5, 2, 2.5], abs=1e-12)
    assert (p["faces"], p["edges"]) == (6, 12)


def spheres(d: float) -> tuple[Solid, Solid]:
    return (build("sphere", {"radius": 1}, []),
            build("sphere", {"radius": 1, "center": [d, 0, 0]}, []))


@pytest.mark.parametrize("d", [1.0, 1.2])
def test_sphere_booleans_match_the_lens_formula(d: float):
    a, b = spheres(d)
    ball = 4 / 3 * PI
    common = build("intersection", {}, [a, b]).properties()
    assert common["volume"] == pytest.approx(lens(1, d), rel=1e-8)
    assert common["center_of_mass"] == pytest.approx([d / 2, 0, 0], abs=1e-7)
    assert build("union", {}, [a, b]).properties()["volume"] == pytest.approx(
        2 * ball - lens(1, d), rel=1e-8)
    assert build("difference", {}, [a, b]).properties()["volume"] == pytest.approx(
        ball - lens(1, d), rel=1e-8)


def test_unit_spheres_one_apart():
    a, b = spheres(1.0)
    assert build("intersection", {}, [a, b]).properties()["volume"] == pytest.approx(
        5 * PI / 12, rel=1e-8)
    assert build("union", {}, [a, b]).properties()["volume"] == pytest.approx(
        2 * 4 / 3 * PI - 5 * PI / 12, rel=1e-8)


def test_box_minus_sphere():
    box = build("box", {"size": [2, 2, 2], "corner": [-1, -1, -1]}, [])
    ball = build("sphere", {"radius": 0.5}, [])
    p = build("difference", {}, [box, ball]).properties()
    assert p["volume"] == pytest.approx(8 - 4 / 3 * PI * 0.125, rel=1e-9)
    assert p["area"] == pytest.approx(24 + 4 * PI * 0.25, rel=1e-9)


def test_transforms():
    box = build("box", {"size": [1, 1, 1], "corner": [1, 2, 3]}, [])
    v = box.properties()["volume"]
    moved = build("translate", {"vector": [1, -1, 2]}, [box]).properties()
    assert moved["volume"] == pytest.approx(v, rel=1e-12)
    assert moved["center_of_mass"] == pytest.approx([2.5, 1.5, 5.5], abs=1e-12)
    turned = build("rotate", {"angle_degrees": 90}, [box]).properties()
    assert turned["volume"] == pytest.approx(v, rel=1e-12)
    assert turned["center_of_mass"] == pytest.approx([-2.5, 1.5, 3.5], abs=1e-12)
    tilted = build("rotate", {"axis_point": [1, 1, 1], "axis_direction": [1, 1, 1],
                              "angle_degrees": 120}, [box]).properties()
    assert tilted["center_of_mass"] == pytest.approx([3.5, 1.5, 2.5], abs=1e-12)  # x→y→z→x
    flipped = build("mirror", {"plane_point": [0, 0, 0], "plane_normal": [1, 0, 0]}, [box])
    assert flipped.properties()["volume"] == pytest.approx(v, rel=1e-12)
    assert flipped.properties()["center_of_mass"] == pytest.approx([-1.5, 2.5, 3.5], abs=1e-12)
    bigger = build("scale", {"factor": 3, "center": [1, 2, 3]}, [box]).properties()
    assert bigger["volume"] == pytest.approx(27 * v, rel=1e-12)
    assert bigger["center_of_mass"] == pytest.approx([2.5, 3.5, 4.5], abs=1e-12)
    sphere = build("sphere", {"radius": 1}, [])
    assert build("scale", {"factor": 0.5}, [sphere]).properties()["volume"] == pytest.approx(
        4 / 3 * PI / 8, rel=1e-9)


def long_edge(solid: Solid) -> dict:
    return max(solid.edges(), key=lambda e: e["length"])


def test_fillet_and_chamfer_remove_the_exact_volume():
    box = build("box", {"size": [1, 2, 3]}, [])
    edges = box.edges()
    assert len(edges) == 12 and sorted(e["length"] for e in edges) == [1] * 4 + [2] * 4 + [3] * 4
    edge = long_edge(box)
    assert edge["midpoint"][2] == pytest.approx(1.5)
    r = 0.2
    filleted = build("fillet", {"radius": r, "edges": [edge["index"]]}, [box]).properties()
    assert 6 - filleted["volume"] == pytest.approx((1 - PI / 4) * r * r * 3, rel=1e-6)
    assert filleted["faces"] == 7
    chamfered = build("chamfer", {"distance": r, "edges": [edge["index"]]}, [box]).properties()
    assert 6 - chamfered["volume"] == pytest.approx(0.5 * r * r * 3, rel=1e-9)
    rounded = build("fillet", {"radius": 0.1, "edges": "all"}, [box]).properties()
    assert 6 - 0.3 < rounded["volume"] < 6


def test_step_and_brep_round_trips_keep_the_volume():
    a, b = spheres(1.0)
    lens_solid = build("intersection", {}, [a, b])
    box = build("box", {"size": [1, 2, 3]}, [])
    hole = build("cylinder", {"radius": 0.3, "height": 3}, [])
    holed = build("difference", {}, [box, build("translate", {"vector": [0.5, 1, 0]}, [hole])])
    shape = build("fillet", {"radius": 0.2, "edges": [long_edge(holed)["index"]]}, [holed])
    for solid in (lens_solid, shape):
        v = solid.properties()["volume"]
        assert Solid.from_brep(solid.to_brep()).properties()["volume"] == pytest.approx(v, rel=1e-9)
        step = solid.to_step()
        assert step.startswith(b"ISO-10303-21")
        back = Solid.from_step(step).properties()
        assert back["volume"] == pytest.approx(v, rel=1e-9)
        assert back["faces"] == solid.properties()["faces"]
    # deterministic bytes: no time stamp in the STEP header
    assert lens_solid.to_brep() == lens_solid.to_brep()
    assert b"1970-01-01T00:00:00" in lens_solid.to_step()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: build("sphere", {"radius": -1}, []), "radius must be > 0, got -1"),
        (lambda: build("box", {"size": [1, 0, 1]}, []), "size[1] must be > 0"),
        (lambda: build("sphere", {"radius": "x"}, []), "radius must be a finite number"),
        (lambda: build("cylinder", {"radius": 1, "height": 1, "axis": [0, 0, 0]}, []),
         "axis must be a non-zero vector"),
        (lambda: build("torus", {"major_radius": 1, "minor_radius": 1}, []),
         "minor_radius must be < major_radius"),
        (lambda: build("cone", {"radius1": 0, "radius2": 0, "height": 1}, []), "not both 0"),
        (lambda: build("prism", {"polygon": [[0, 0], [1, 0]], "height": 1}, []), ">= 3"),
        (lambda: build("prism", {"polygon": [[0, 0], [2, 2], [2, 0], [0, 1]], "height": 1}, []),
         "polygon must be simple"),
        (lambda: build("prism", {"polygon": [[0, 0], [1, 1], [2, 2]], "height": 1}, []),
         "non-zero area"),
        (lambda: build("sphere", {"radius": 1, "colour": 2}, []), "sphere has no parameter colour"),
        (lambda: build("sphere", {}, []), "sphere needs radius"),
        (lambda: build("blob", {}, []), "unknown feature 'blob'"),
        (lambda: build("union", {}, [spheres(1)[0]]), "union takes 2 input solid(s), got 1"),
        (lambda: build("sphere", {"radius": 1}, [spheres(1)[0]]), "takes 0 input"),
        (lambda: build("intersection", {}, list(spheres(3.0))),
         "the intersection of these solids is empty"),
        (lambda: build("fillet", {"radius": 5, "edges": "all"},
                       [build("box", {"size": [1, 2, 3]}, [])]), "too large"),
        (lambda: build("fillet", {"radius": 0.1, "edges": [12]},
                       [build("box", {"size": [1, 2, 3]}, [])]), "edge indices in 0..11"),
        (lambda: build("scale", {"factor": 0}, [spheres(1)[0]]), "factor must be > 0"),
        (lambda: Solid.from_step(b"ISO-10303-21;\nthis is not STEP"),
         "the STEP data could not be read"),
        (lambda: Solid.from_step(b""), "the STEP data could not be read"),
        (lambda: Solid.from_brep(b"garbage"), "the BREP data could not be read"),
        (lambda: spheres(1)[0].triangles(1e-9), "tolerance must be >="),
        (lambda: spheres(1)[0].triangles(-1), "tolerance must be > 0, got -1"),
        (lambda: spheres(1)[0].to_glb(0.01, "x", (2, 0, 0)), "color must be three numbers"),
        (lambda: spheres(1)[0].triangles(0.001, max_triangles=100), "exceeds 100 triangles"),
    ],
)
def test_errors_say_what_is_wrong(call, message: str):
    with pytest.raises(GeometryError) as err:
        call()
    assert message in str(err.value)


def test_a_shell_is_not_a_solid():
    from OCP.BRepBuilderAPI import BRepBuilderAPI_MakeFace, BRepBuilderAPI_MakePolygon
    from OCP.gp import gp_Pnt

    poly = BRepBuilderAPI_MakePolygon(gp_Pnt(0, 0, 0), gp_Pnt(1, 0, 0), gp_Pnt(0, 1, 0), True)
    face = BRepBuilderAPI_MakeFace(poly.Wire()).Face()
    with pytest.raises(GeometryError, match="entity is not a solid"):
        Solid(face)


def mesh_volume(v: np.ndarray, f: np.ndarray) -> float:
    t = v[f]
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6)


def test_tessellation_converges_to_the_exact_volume():
    sphere = build("sphere", {"radius": 1}, [])
    exact = sphere.properties()["volume"]
    errors = []
    for tol in (0.01, 0.001):
        v, f = sphere.triangles(tol)
        # watertight and outward: every edge in two triangles, once each way
        e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        assert len(np.unique(e, axis=0)) == len(e)
        assert np.all(np.linalg.norm(v, axis=1) <= 1 + 1e-9)
        assert np.all(np.linalg.norm(v[f].mean(axis=1), axis=1) >= 1 - 2 * tol)  # chord error
        errors.append((exact - mesh_volume(v, f)) / exact)
    assert 0 < errors[1] < errors[0] < 0.02
    box = build("box", {"size": [1, 2, 3]}, [])
    v, f = box.triangles(0.01)
    assert mesh_volume(v, f) == pytest.approx(6, rel=1e-12)


def test_stl_and_glb():
    a, b = spheres(1.0)
    solid = build("union", {}, [a, b])
    stl = solid.to_stl(0.002)
    n = int.from_bytes(stl[80:84], "little")
    assert len(stl) == 84 + 50 * n
    rec = np.frombuffer(stl[84:], dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)),
                                                   ("a", "<u2")]))
    t = rec["v"].astype(np.float64)
    vol = np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6
    assert vol == pytest.approx(solid.properties()["volume"], rel=5e-3)
    glb = solid.to_glb(0.01, "lens", (0.2, 0.4, 0.8))
    assert glb[:4] == b"glTF"
    assert glb == solid.to_glb(0.01, "lens", (0.2, 0.4, 0.8))


def test_feature_table_describes_itself():
    assert set(FEATURES) == {"box", "sphere", "cylinder", "cone", "torus", "prism", "translate",
                             "rotate", "scale", "mirror", "union", "difference", "intersection",
                             "fillet", "chamfer"}
    assert FEATURES["union"].inputs == 2 and FEATURES["sphere"].inputs == 0
    assert FEATURES["sphere"].describe({"radius": 2}) == "sphere r=2 at [0.0, 0.0, 0.0]"
    assert FEATURES["union"].describe({}, ["part", "tool"]) == "union of part and tool"
