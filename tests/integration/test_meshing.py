"""Meshing and pictures end to end through the Python client against `twinstack up`: a "3D
simulation" session meshes a box with a spherical hole (and a PEC ball in the hole) on a
Cartesian grid and into tetrahedra, draws the solids and the meshes as GLB that three.js
loads, cuts a slice PNG with a colour bar, plots the mesh quality; outputs are cached by
their inputs; bad requests are refused before any work with what they would need."""

from __future__ import annotations

import io
import math
import struct

import meshio
import numpy as np
import pytest

from tests.js_harness import load_glb
from tests.model_checks import refused, shared_project
from tests.platform_fixtures import running_platform
from twinstack.store.blobs import BlobStore

HOLE = 0.5
BOX = 8.0  # 2 x 2 x 2


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_mesh_both_ways_and_draw(tmp_path):
    with running_platform(tmp_path, "ada", "bob", "cy") as platform:
        ada, _, cy, project = shared_project(platform, "cavity")
        session = ada.open_session(project)
        assert set(session.services) == {"model", "modeling", "cartesian-mesh", "tet-mesh",
                                         "visualization", "fit-td"}
        cad, mesh, viz, m = (session.modeling, session.meshing, session.visualization,
                             session.model)
        box = cad.create("box", size=[2, 2, 2], name="block")
        hole = cad.create("sphere", radius=HOLE, center=[1, 1, 1], name="hole")
        holed = cad.create("difference", box, hole, name="holed block")
        ball = cad.create("sphere", radius=HOLE, center=[1, 1, 1], name="ball")
        cad.assign_material("FR-4", holed)
        cad.assign_material("PEC", ball)
        ball_volume = 4 / 3 * math.pi * HOLE**3

        # Cartesian: fill fractions give the volumes, the PEC ball marks edges
        grid = mesh.cartesian(0.05, holed, ball, padding=0.2)
        assert grid["shape"] == [48, 48, 48]
        assert grid["volume"] == pytest.approx(BOX, rel=1e-3)
        staircase = grid["material_volumes"]
        assert staircase["1"] == pytest.approx(BOX - ball_volume, rel=2e-2)
        assert staircase["2"] == pytest.approx(ball_volume, rel=5e-2)
        assert grid["pec_edges"] > 0
        entity = m.get(grid["id"])
        assert entity["kind"] == "mesh" and entity["properties"]["solids"] == [holed, ball]
        arrays = np.load(io.BytesIO(session.blob(entity["blobs"]["grid"])))
        assert arrays["material"].shape == (48, 48, 48)

        # Tetrahedral: the holed block alone, then with the ball as a second region
        tets = mesh.tetrahedral(0.3, holed, curvature_safety=6, name="holed")
        assert tets["volume"] == pytest.approx(BOX - ball_volume, rel=5e-3)
        assert tets["quality"]["min_dihedral_deg"] > 5
        both = mesh.tetrahedral(0.3, holed, ball, curvature_safety=6)
        volumes = {r["name"]: r["volume"] for r in both["regions"]}
        assert volumes["ball"] == pytest.approx(ball_volume, rel=2e-2)
        assert volumes["holed block"] + volumes["ball"] == pytest.approx(BOX, rel=1e-9)
        vtu = mesh.export(both["id"], "vtu")
        path = tmp_path / "mesh.vtu"
        path.write_bytes(vtu)
        back = meshio.read(path)
        assert len(back.cells_dict["tetra"]) == both["tets"]

        # GLB for three.js: a node per solid; a clipped tet mesh view
        solids = load_glb(viz.scene())
        names = {mesh_["name"] for mesh_ in solids["meshes"]}
        assert {"block", "hole", "ball", "holed_block"} <= names
        view = load_glb(viz.mesh_view(both["id"], clip={"origin": [1, 1, 1],
                                                        "normal": [0, 1, 0]}))
        assert {mesh_["name"] for mesh_ in view["meshes"]} == {"holed_block", "ball"}
        voxels = load_glb(viz.mesh_view(grid["id"]))
        assert len(voxels["meshes"]) == 2

        # a slice with a colour bar, a quality plot; asked again, they come from the cache
        first = session.call("visualization", "slice", id=grid["id"], field="material",
                             axis="z", position=1.0, size=[640, 480])
        assert first["computed"]
        picture = session.blob(first["blob"])
        assert png_size(picture) == (640, 480)
        again = session.call("visualization", "slice", id=grid["id"], field="material",
                             axis="z", position=1.0, size=[640, 480])
        assert again == {**first, "computed": False}
        data = session.call("visualization", "slice", id=both["id"], field="region",
                            plane={"origin": [1, 1, 1], "normal": [0, 0, 1]}, format="data",
                            resolution=50)
        values = np.frombuffer(session.blob(data["blob"]), "<f4").reshape(data["shape"])
        assert set(np.unique(values[np.isfinite(values)])) == {0.0, 1.0}
        plot = session.call("visualization", "plot", id=both["id"])
        assert png_size(session.blob(plot["blob"])) == (800, 500)
        assert sum(plot["data"]["counts"]) == both["tets"]
        assert viz.plot(both["id"], "svg").lstrip().startswith(b"<?xml")

        # a viewer looks but does not mesh
        with cy.open_session(project) as viewer:
            assert png_size(viewer.visualization.slice(grid["id"], axis="x", position=1.0))
            assert "viewer" in refused(viewer, 403, viewer.meshing.cartesian, 0.1)
        session.close()


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def test_results_on_a_mesh_are_sliced_and_plotted(tmp_path):
    """A solver's output (written here as a solver writes it: blobs first, then a result
    entity naming them) is cut and plotted like the meshes' own fields."""
    with running_platform(tmp_path, "ada") as platform:
        tw = platform.client("ada")
        with tw.open_session(tw.create_project("field", "3D simulation")["id"]) as session:
            box = session.modeling.create("box", size=[1, 2, 3])
            grid = session.meshing.cartesian(0.25, box)
            arrays = np.load(io.BytesIO(session.blob(session.model.get(grid["id"])["blobs"]
                                                     ["grid"])))
            x, y, z = np.meshgrid(arrays["x"], arrays["y"], arrays["z"], indexing="ij")
            field = np.stack([x + 2 * y, 3 * z, np.zeros_like(x)], axis=-1)  # nodal, linear
            store = BlobStore(platform.data / "blobs")
            result = session.model.create(
                "result", "E", properties={"mesh": grid["id"], "field": "E", "unit": "V/m"},
                blobs={"values": store.put(npy(field))})
            cut = session.call("visualization", "slice", id=result, axis="z", position=1.3,
                               format="data")
            assert cut["label"] == "E (V/m)" and cut["shape"] == [9, 5]
            values = np.frombuffer(session.blob(cut["blob"]), "<f4").reshape(cut["shape"])
            u, v = np.meshgrid(cut["u"], cut["v"])
            assert values == pytest.approx(np.hypot(u + 2 * v, 3 * 1.3), rel=1e-6)
            assert png_size(session.visualization.slice(result, axis="y", position=0.5)) == \
                (800, 600)

            t = np.linspace(0, 1, 50)
            series = store.put(npz(x0=t, y0=np.sin(2 * math.pi * t), x1=t, y1=t**2))
            signal = session.model.create("result", "probe", properties={
                "labels": ["sin", "square"], "x_label": "t (ns)", "y_label": "V"},
                blobs={"series": series})
            plotted = session.call("visualization", "plot", id=signal, format="svg")
            assert [s["label"] for s in plotted["data"]["series"]] == ["sin", "square"]
            assert plotted["data"]["series"][1]["y"][-1] == pytest.approx(1.0)
            assert session.blob(plotted["blob"]).lstrip().startswith(b"<?xml")


def npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def test_bad_requests_are_refused_before_any_work(tmp_path):
    with running_platform(tmp_path, "ada") as platform:
        tw = platform.client("ada")
        with tw.open_session(tw.create_project("empty", "3D simulation")["id"]) as session:
            mesh, viz = session.meshing, session.visualization
            assert "no solids" in refused(session, 422, mesh.cartesian, 0.1)
            assert "no solids" in refused(session, 422, mesh.tetrahedral, 0.1)
            box = session.modeling.create("box", size=[1, 1, 1])
            assert "positive" in refused(session, 422, mesh.cartesian, 0.0)
            huge = refused(session, 422, mesh.cartesian, 1e-3)  # 10^9 cells
            assert "1,000,000,000 cells" in huge and "MiB" in huge
            estimate = mesh.cartesian_estimate(1e-3)
            assert estimate["cells"] == 10**9 and estimate["bytes"] > estimate["budget_bytes"]
            too_fine = refused(session, 422, mesh.tetrahedral, 1e-3)
            assert "tetrahedra" in too_fine and "MiB" in too_fine
            refused(session, 422, mesh.tetrahedral, -1.0)
            refused(session, 404, mesh.cartesian, 0.1, "f" * 32)
            grid = mesh.cartesian(0.25, box)
            outside = refused(session, 422, viz.slice, grid["id"], axis="z", position=5.0)
            assert "outside" in outside and "[0, 1]" in outside
            refused(session, 422, viz.slice, grid["id"], field="temperature", axis="z",
                    position=0.5)
            refused(session, 422, viz.mesh_view, grid["id"],
                    clip={"origin": [0, 0, 0], "normal": [0, 0, 0]})
            refused(session, 422, viz.plot, grid["id"])  # a Cartesian mesh has no quality
            assert len(session.model.entities(kinds=["mesh"])) == 1  # nothing else was made
