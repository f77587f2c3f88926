"""The fit-td service end to end through the Python client against `twinstack up`: a parallel-
plate line drawn as a box, meshed, set up with a lumped port, probes and a field plane, run as
a job with progress events; its S11 (matched: below -30 dB), probe signals and |E| plane are
versioned result entities the visualization service draws. Killed mid-run (SIGKILL) the service
resumes from its last checkpoint and ends with the same numbers as an uninterrupted run; a run
can be cancelled; bad setups are refused before any compute."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.test_meshing import png_size
from tests.model_checks import refused, shared_project
from tests.platform_fixtures import running_platform, session_processes
from twinstack.client import Session
from twinstack.sim.fit_td import gpu

LONG = 120.0  # a hang guard, never the thing tested
ETA0 = 376.730313
LINE = {"size": [0.01, 0.01, 0.2]}  # 1 cm x 1 cm, 20 cm long: 5 x 5 x 100 cells of 2 mm
MATCHED = ETA0 / 2  # the port at the middle sees the line both ways: eta0 h / w / 2


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    tmp = tmp_path_factory.mktemp("fit_td")
    with running_platform(tmp, "ada", "bob", "cy") as platform:
        ada, _, _, project = shared_project(platform, "line")
        with ada.open_session(project) as opened:
            yield opened


@pytest.fixture(scope="module")
def mesh(session: Session) -> str:
    box = session.modeling.create("box", name="line", **LINE)
    return str(session.meshing.cartesian(0.002, box)["id"])


def line_setup(session: Session, mesh: str, **options: Any) -> dict[str, Any]:
    """PEC plates at y, PMC walls at x, a CPML at both ends, the port across the middle."""
    settings: dict[str, Any] = {
        "ports": [{"name": "feed", "lo": [0, 0, 0.1], "hi": [0.01, 0.01, 0.1],
                   "direction": "y", "resistance": MATCHED}],
        "probes": [{"name": "ahead", "point": [0.004, 0.006, 0.15], "component": "ey"}],
        "planes": [{"name": "side", "axis": "x", "position": 0.004}],
        "boundaries": {"x-": "pmc", "x+": "pmc", "y-": "pec", "y+": "pec"},
        "pml_cells": 10, "duration": 6e-9, **options}
    return session.solver.setup(mesh, 1.5e9, 4.5e9, **settings)


def results(session: Session, job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in (session.model.get(i) for i in job["results"])}


def series(session: Session, entity: dict[str, Any]) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(session.blob(entity["blobs"]["series"]))) as arrays:
        return {k: arrays[k] for k in arrays.files}


def fit_td_pid(session: Session) -> int:
    [pid] = [p for p in session_processes(session.id)
             if b"fit-td" in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")]
    return pid


def test_a_run_reports_progress_and_makes_pictured_results(session, mesh):
    setup = line_setup(session, mesh, name="matched line")
    assert setup["cells"] == 2500 and setup["steps"] > 1000
    children = [e for e in session.model.entities() if e.get("parent") == setup["id"]]
    assert sorted((e["kind"], e["name"]) for e in children) == [
        ("data", "ahead"), ("data", "side"), ("source", "feed")]
    assert session.model.get(setup["id"])["kind"] == "solver"
    started = session.solver.run(setup["id"])
    seen: list[dict[str, Any]] = []
    end = session.solver.wait(started["job"], LONG, seen.append)
    assert end["status"] == "done", end.get("reason")
    assert seen and all(e["step"] <= e["steps"] == started["steps"] for e in seen)
    assert seen[-1]["cell_updates_per_s"] > 0 and seen[-1]["eta_s"] >= 0
    assert {event["device"] for event in seen} == {"gpu" if gpu.available() else "cpu"}
    # its end was told already (as if that news was lost): the waiter asks the status
    told = session.solver.wait(started["job"], LONG)
    assert told["status"] == "done" and told["results"] == end["results"]
    assert seen[-1]["simulated_s"] == pytest.approx(seen[-1]["step"] * 6e-9 / started["steps"],
                                                    rel=0.01)
    made = results(session, end)
    assert set(made) == {"probe signals", "S-parameters", "|E| on side at 3 GHz"}
    assert all(e["parent"] == setup["id"] and e["kind"] == "result" for e in made.values())

    s11 = series(session, made["S-parameters"])
    band = s11["x0"]
    assert band[0] == pytest.approx(1.5) and band[-1] == pytest.approx(4.5)
    assert s11["y0"].max() < -30  # dB: the matched port
    plot = session.visualization.plot(made["S-parameters"]["id"])
    assert png_size(plot) == (800, 500)
    picture = session.visualization.slice(made["|E| on side at 3 GHz"]["id"])
    assert png_size(picture) == (800, 600)
    signals = series(session, made["probe signals"])
    assert np.abs(signals["y0"]).max() > 0 and signals["x0"].size == started["steps"]


def test_a_killed_service_resumes_from_its_last_checkpoint_with_the_same_result(session,
                                                                                 mesh):
    """SIGKILL after the second checkpoint: the restarted service carries on from a
    checkpoint (not from step 0) and its results equal an uninterrupted run's bit for bit."""
    setup = line_setup(session, mesh, name="long line", duration=80e-9, checkpoint_every=500,
                       planes=[])
    job = session.solver.run(setup["id"])["job"]
    session.wait_for_event(lambda e: e.get("type") == "job" and e["job"] == job
                           and e["step"] >= 1000, LONG)
    old = fit_td_pid(session)
    os.kill(old, signal.SIGKILL)
    restarted = session.wait_for_event(lambda e: e.get("type") == "restarted", LONG)
    assert restarted["service"] == "fit-td"
    end = session.solver.wait(job, LONG)
    assert end["status"] == "done", end.get("reason")
    assert end["resumed_from"] >= 1000 and end["resumed_from"] % 500 == 0
    assert fit_td_pid(session) != old

    again = session.solver.wait(session.solver.run(setup["id"])["job"], LONG)
    assert again["status"] == "done" and again["resumed_from"] == 0
    first, second = results(session, end), results(session, again)
    for name in ("probe signals", "S-parameters"):
        a, b = series(session, first[name]), series(session, second[name])
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(a[key], b[key]), (name, key)


def test_a_plane_wave_fills_its_box_through_the_service(session, mesh):
    """The line's grid lit by a plane wave (TF/SF) instead of its port: inside the box the
    probe sees the wave at its amplitude, beyond the box's top face nothing (-80 dB)."""
    setup = session.solver.setup(
        mesh, 1.5e9, 4.5e9, name="lit line", duration=2e-9,
        boundaries={"x-": "pmc", "x+": "pmc", "y-": "pmc", "y+": "pmc"},
        plane_wave={"lo": [0.002, 0.002, 0.04], "hi": [0.008, 0.008, 0.12], "amplitude": 5},
        probes=[{"name": "inside", "point": [0.005, 0.004, 0.08], "component": "ex"},
                {"name": "beyond", "point": [0.005, 0.004, 0.16], "component": "ex"}])
    parts = [e for e in session.model.entities() if e.get("parent") == setup["id"]]
    assert ("source", "plane wave") in {(e["kind"], e["properties"].get("source"))
                                        for e in parts}
    end = session.solver.wait(session.solver.run(setup["id"])["job"], LONG)
    assert end["status"] == "done", end.get("reason")
    made = results(session, end)["probe signals"]
    signals = series(session, made)
    peak = {label: np.abs(signals[f"y{n}"]).max()
            for n, label in enumerate(made["properties"]["labels"])}
    inside, beyond = peak["inside"], peak["beyond"]
    assert inside == pytest.approx(5, rel=0.02)
    assert beyond < 1e-4 * inside
    assert "S-parameters" not in results(session, end)  # no port, no S-parameters


def test_a_run_stops_once_the_field_has_rung_down(session, mesh):
    """Up to 80 ns, but the matched line lets the pulse out in about 2 ns: with
    end_energy_db -40 the job ends early, says why, and still makes its results."""
    setup = line_setup(session, mesh, name="short line", duration=80e-9, end_energy_db=-40,
                       planes=[])
    end = session.solver.wait(session.solver.run(setup["id"])["job"], LONG)
    assert end["status"] == "done" and end["step"] < end["steps"] / 4
    assert "fell 40 dB below its peak at step" in end["reason"]
    s11 = series(session, results(session, end)["S-parameters"])
    assert s11["y0"].max() < -30


def test_a_run_can_be_cancelled_and_runs_one_at_a_time(session, mesh):
    setup = line_setup(session, mesh, name="cancelled line", duration=400e-9, planes=[])
    job = session.solver.run(setup["id"])["job"]
    session.wait_for_event(lambda e: e.get("type") == "job" and e["job"] == job, LONG)
    busy = refused(session, 409, session.solver.run, setup["id"])  # one job at a time
    assert f"job {job} is running" in busy
    assert session.solver.cancel(job)["status"] == "cancelling"
    end = session.solver.wait(job, LONG)
    assert end["status"] == "cancelled" and end["results"] == []
    assert end["step"] < end["steps"]
    assert session.solver.status(job)["status"] == "cancelled"


def test_bad_setups_are_refused_before_any_compute(session, mesh):
    solver = session.solver
    no_source = refused(session, 422, line_setup, session, mesh,
                        ports=[{"name": "feed", "lo": [0, 0, 0.1], "hi": [0.01, 0.01, 0.1],
                                "direction": "y", "excited": False}])
    assert "no excited port and no plane wave" in no_source
    outside = refused(session, 422, line_setup, session, mesh,
                      ports=[{"name": "feed", "lo": [0, 0, 0.5], "hi": [0.01, 0.01, 0.5],
                              "direction": "y"}])
    assert "port feed lies outside the grid" in outside
    unstable = refused(session, 422, line_setup, session, mesh, courant=1.5)
    assert "courant" in unstable
    missing = refused(session, 404, solver.setup, "0" * 32, 1e9, 2e9)
    assert "no mesh" in missing
    band = refused(session, 422, solver.setup, mesh, 2e9, 1e9)
    assert "f_max (1e+09 Hz) must be above f_min" in band
    box = session.modeling.create("box", name="big", size=[0.3, 0.3, 0.3])
    big = session.meshing.cartesian(0.002, box)["id"]  # 150^3 cells: fine to mesh, not to run
    too_large = refused(session, 422, solver.setup, big, 1e9, 2e9, ports=[
        {"name": "p", "lo": [0.15, 0.15, 0.15], "hi": [0.15, 0.15, 0.16], "direction": "z"}])
    assert "for 3,375,000 cells, over this service's 512 MiB (compute_memory_mb)" in too_large

    setup = line_setup(session, mesh, name="orphan")  # its mesh deleted afterwards
    session.model.delete(mesh_of(session, setup["id"]))
    gone = refused(session, 404, solver.run, setup["id"])
    assert "which the model no longer has" in gone
    session.model.undo()


def mesh_of(session: Session, simulation: str) -> str:
    return str(session.model.get(simulation)["properties"]["mesh"])
