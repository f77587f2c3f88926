"""CAD end to end through the Python client against `twinstack up`: a "3D simulation" session
builds exact solids with every boolean and a fillet, walks its history (undo, redo, a branch,
checkout), rebuilds dependants when a radius changes, round-trips STEP, imports and combines a
triangle mesh, assigns materials; a second participant sees every change; bad input is refused
with the model left where it was; the history survives closing the session."""

from __future__ import annotations

import math

import pytest

from tests.model_checks import head_id, refused, shared_project
from tests.platform_fixtures import running_platform, session_processes, wait_until
from twinstack.client import ActionError

BOX = 8.0  # a 2 x 2 x 2 box at the origin


def sphere_volume(r: float) -> float:
    return 4 / 3 * math.pi * r**3


def cube_sphere_intersection(r: float, half: float = 1.0) -> float:
    """A sphere of radius r (half < r < half * sqrt 2) centred in a cube: the sphere less six
    caps of height r - half."""
    h = r - half
    return sphere_volume(r) - 6 * math.pi * h * h * (3 * r - h) / 3


def volume(session, entity_id: str) -> float:
    return session.model.get(entity_id)["properties"]["volume"]


def test_build_edit_branch_rebuild_export_and_reopen(tmp_path):
    with running_platform(tmp_path, "ada", "bob", "cy") as platform:
        ada, bob, cy, project = shared_project(platform, "bracket")
        session = ada.open_session(project)
        assert {"model", "modeling"} <= set(session.services)
        other = bob.open_session(project)
        for s in (session, other):
            s.wait_for_event(lambda e: e.get("type") == "model_head")
        cad, m = session.modeling, session.model

        box = cad.create("box", size=[2, 2, 2], name="box")
        sphere = cad.create("sphere", radius=1.2, center=[1, 1, 1])
        drill = cad.create("cylinder", radius=0.5, height=4, base=[1, 1, -1])
        union = cad.create("union", box, sphere)
        cut = cad.create("difference", union, drill)
        common = cad.create("intersection", box, sphere)
        rounded = cad.create("fillet", box, radius=0.3, edges=[0])
        assert m.get(sphere)["name"] == "sphere1"
        assert volume(session, sphere) == pytest.approx(sphere_volume(1.2), rel=1e-9)
        assert volume(session, common) == pytest.approx(cube_sphere_intersection(1.2),
                                                        rel=1e-7)
        assert volume(session, union) + volume(session, common) == pytest.approx(
            BOX + sphere_volume(1.2), rel=1e-9)
        assert volume(session, cut) < volume(session, union)
        # a fillet of one 2-long edge removes (1 - pi/4) r^2 L
        assert volume(session, rounded) == pytest.approx(BOX - (1 - math.pi / 4) * 0.09 * 2,
                                                         rel=1e-7)
        assert m.get(common)["properties"]["inputs"] == [box, sphere]
        assert "box and sphere1" in m.history()["states"][-2]["description"]

        # history: undo two, redo one, an edit branches, the first branch comes back
        filleted_state = head_id(session)
        m.undo()
        m.undo()
        assert {e["id"] for e in m.entities()} == {box, sphere, drill, union, cut}
        m.redo()
        chamfered = cad.create("chamfer", box, distance=0.2, edges=[0])
        assert volume(session, chamfered) == pytest.approx(BOX - 0.5 * 0.04 * 2, rel=1e-7)
        assert len(m.history()["states"]) == 9  # root + 7 + the branch; none dropped
        m.checkout(filleted_state)
        assert rounded in {e["id"] for e in m.entities()}
        assert chamfered not in {e["id"] for e in m.entities()}

        # a parameter change rebuilds what was made from it, as one state
        states = len(m.history()["states"])
        rebuilt = cad.set_parameters(sphere, radius=1.1)
        assert set(rebuilt) == {sphere, union, cut, common}  # not the box, not the fillet
        assert len(m.history()["states"]) == states + 1
        assert volume(session, common) == pytest.approx(cube_sphere_intersection(1.1),
                                                        rel=1e-7)
        assert volume(session, union) + volume(session, common) == pytest.approx(
            BOX + sphere_volume(1.1), rel=1e-9)
        assert m.get(sphere)["properties"]["parameters"]["radius"] == 1.1

        # STEP out and in again: the same solid
        step = cad.export(cut, "step")
        assert step.startswith(b"ISO-10303-21")
        imported = cad.import_file("bracket.step", step, "step")
        assert volume(session, imported) == pytest.approx(volume(session, cut), rel=1e-9)
        assert cad.export(cut, "glb").startswith(b"glTF")

        # a triangle mesh (scanned or foreign geometry) joins the model; booleans with it are
        # mesh booleans
        stl = cad.export(sphere, "stl", tolerance=1e-3)
        scanned = cad.import_file("scan.stl", stl, "stl")
        assert volume(session, scanned) == pytest.approx(sphere_volume(1.1), rel=2e-3)
        merged = cad.create("union", scanned, box)
        assert m.get(merged)["properties"]["representation"] == "mesh"
        assert volume(session, merged) == pytest.approx(
            BOX + sphere_volume(1.1) - cube_sphere_intersection(1.1), rel=5e-3)

        # a viewer looks but may not build (refused before any work)
        with cy.open_session(project) as viewer:
            assert viewer.modeling.properties(cut)["volume"] == volume(session, cut)
            assert "viewer" in refused(viewer, 403, viewer.modeling.create, "sphere",
                                       radius=1)
            refused(viewer, 403, viewer.modeling.set_parameters, sphere, radius=2)

        # materials: a library one is added to the model on first use
        copper = cad.assign_material("copper", box, rounded)
        assert m.get(copper)["properties"]["sigma"] == pytest.approx(5.96e7)
        assert m.get(box)["properties"]["material"] == copper

        # the other participant saw each change, in order, as it happened
        last = head_id(session)
        seen = []
        while not seen or seen[-1]["head"]["state"]["id"] != last:
            seen.append(other.wait_for_event(lambda e: e.get("type") == "model_changed"))
        assert [e["operation"] for e in seen].count("commit") == 13
        assert [e["operation"] for e in seen][7:11] == ["undo", "undo", "redo", "commit"]

        before = m.history()
        other.detach()
        session.close()
        wait_until(lambda: not session_processes(session.id), what="the session to end")
        again = ada.open_session(project)
        assert again.model.history() == before
        assert volume(again, common) == pytest.approx(cube_sphere_intersection(1.1), rel=1e-7)
        again.close()


def test_bad_geometry_is_refused_and_leaves_the_model(tmp_path):
    with running_platform(tmp_path, "ada") as platform:
        tw = platform.client("ada")
        with tw.open_session(tw.create_project("bad", "3D simulation")["id"]) as session:
            cad, m = session.modeling, session.model
            with pytest.raises(ActionError) as nothing:
                m.undo()
            assert nothing.value.status == 409 and "no history yet" in nothing.value.message
            a = cad.create("box", size=[1, 1, 1])
            b = cad.create("box", size=[1, 1, 1], corner=[5, 0, 0])
            folder = m.create("folder", "parts")
            assert "radius" in refused(session, 422, cad.create, "sphere", radius=-1)
            assert "empty" in refused(session, 422, cad.create, "intersection", a, b)
            refused(session, 404, cad.create, "union", a, "f" * 32)
            assert "folder" in refused(session, 422, cad.create, "union", a, folder)
            refused(session, 422, cad.create, "union", a)
            refused(session, 422, cad.create, "teapot")
            refused(session, 422, cad.create, "fillet", a, radius=5, edges=[0])
            refused(session, 422, cad.import_file, "broken.step",
                    b"ISO-10303-21;\nHEADER;\nthis is not STEP\n", "step")
            open_box = _open_box_stl()
            assert "closed" in refused(session, 422, cad.import_file, "open.stl", open_box,
                                       "stl")
            refused(session, 422, cad.set_parameters, a, size=[1, -1, 1])
            m.checkout(m.history()["states"][0]["id"])
            assert "nothing to undo" in refused(session, 409, m.undo)


def _open_box_stl() -> bytes:
    """An ASCII STL of a unit cube with its top missing: not closed, so not a solid."""
    corners = [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0),
               (0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)]
    faces = [(0, 2, 1), (0, 3, 2), (0, 1, 5), (0, 5, 4), (1, 2, 6), (1, 6, 5),
             (2, 3, 7), (2, 7, 6), (3, 0, 4), (3, 4, 7)]  # no (4, 5, 6), (4, 6, 7)
    lines = ["solid open"]
    for face in faces:
        lines += ["facet normal 0 0 0", "outer loop",
                  *(f"vertex {' '.join(map(str, corners[i]))}" for i in face),
                  "endloop", "endfacet"]
    return ("\n".join([*lines, "endsolid open"]) + "\n").encode()
