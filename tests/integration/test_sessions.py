"""Sessions end to end: the Python client against a real `twinstack up`, on SQLite and PostgreSQL.

Each test runs the whole platform as separate processes (logger, auth, gss, relay, LSS) and
drives it only through the client users use; failures are real signals to real processes.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from tests.platform_fixtures import (
    Platform,
    lss_workers,
    session_processes,
    start_platform,
    stop_platform,
    wait_until,
)
from twinstack.client import ActionError, SessionFailed
from twinstack.sessiontypes import SESSION_TYPE_NEEDS
from twinstack.sim.kriging import Variogram, ordinary_kriging
from twinstack.store import sqlite_url

RNG = np.random.default_rng(5)
POINTS = RNG.uniform(0, 10, (40, 2))
VALUES = np.sin(POINTS[:, 0]) + 0.5 * POINTS[:, 1]
VARIOGRAM = {"model": "exponential", "psill": 2.0, "range": 6.0, "nugget": 0.01}
KRIGING = {"points": POINTS.tolist(), "values": VALUES.tolist(),
           "grid": {"x": [0, 10, 11], "y": [0, 10, 6]}, "variogram": VARIOGRAM}


def interpolate(session) -> dict:
    return session.call("kriging", "interpolate", **KRIGING)


def test_login_project_session_kriging_close(tmp_path, database_url):
    platform = start_platform(tmp_path, "--database-url", database_url)
    try:  # not the `platform` fixture: this one runs on each database
        platform.add_user("ada")
        tw = platform.client("ada")
        project = tw.create_project("survey", "data analysis")
        assert [p["name"] for p in tw.projects()] == ["survey"]

        session = tw.open_session(project["id"])
        assert session.state == "ready" and set(session.services) == {"kriging"}
        result = interpolate(session)
        expected = ordinary_kriging(POINTS, VALUES, _grid(), Variogram(
            "exponential", (2.0, 6.0, 0.01)))
        np.testing.assert_allclose(np.ravel(result["estimates"]), expected.estimates,
                                   rtol=1e-12)
        assert result["shape"] == [6, 11]
        logged = session.wait_for_event(lambda e: e["type"] == "log" and "kriged" in e["msg"])
        assert logged["service"] == "kriging" and logged["session"] == session.id
        pids = session_processes(session.id)
        assert len(pids) == 1

        session.close()
        wait_until(lambda: not session_processes(session.id), what="session processes to end")
        wait_until(lambda: tw.sessions()[0]["state"] == "closed", what="state closed")
    finally:
        stop_platform(platform)


def _grid() -> np.ndarray:
    xs, ys = np.meshgrid(np.linspace(0, 10, 11), np.linspace(0, 10, 6))
    return np.column_stack([xs.ravel(), ys.ravel()])


@pytest.fixture
def ada(platform: Platform):
    platform.add_user("ada")
    tw = platform.client("ada")
    project = tw.create_project("survey", "data analysis")
    session = tw.open_session(project["id"])
    return tw, project, session


def test_a_second_client_joins_the_live_session(platform, ada):
    tw, project, session = ada
    platform.add_user("bob")
    tw.share(project["id"], user="bob", role="editor")
    bob = platform.client("bob")
    joined = bob.open_session(project["id"])
    assert joined.id == session.id
    assert interpolate(joined)["shape"] == [6, 11]
    assert len(session_processes(session.id)) == 1  # nothing started twice


def test_killed_compute_service_is_restarted_and_the_client_is_told(platform, ada):
    _, _, session = ada
    [pid] = session_processes(session.id)
    os.kill(pid, signal.SIGKILL)
    restarting = session.wait_for_event(lambda e: e["type"] == "restarting", timeout=60)
    assert restarting["service"] == "kriging" and restarting["exit_code"] == -signal.SIGKILL
    session.wait_for_event(lambda e: e["type"] == "restarted", timeout=60)
    assert interpolate(session)["shape"] == [6, 11]
    [new_pid] = session_processes(session.id)
    assert new_pid != pid


def test_a_service_that_keeps_crashing_fails_the_session(platform, ada):
    """A broken certificate (as from a bad mount) makes every restart exit with code 11."""
    _, _, session = ada
    workdir = platform.data / "local" / "sessions" / session.id / "kriging"
    (workdir / "identity-key.pem").write_text("not a key\n")
    [pid] = session_processes(session.id)
    os.kill(pid, signal.SIGKILL)
    failed = session.wait_for_event(lambda e: e.get("state") == "failed", timeout=60)
    assert failed["exit_code"] == 11
    assert "restarts" in failed["reason"]
    assert any("cannot load certificate" in line for line in failed["output"])
    with pytest.raises(ActionError) as refused:
        interpolate(session)
    assert refused.value.status == 409  # the relay says the session is not ready
    assert not session_processes(session.id)


@pytest.fixture
def workers(tmp_path):
    """A platform without a local LSS, and a way to add worker LSS processes to it."""
    platform = start_platform(tmp_path, "--lss-count", "0")
    try:
        with lss_workers(platform) as add:
            yield platform, add
    finally:
        stop_platform(platform)


def test_lss_killed_is_marked_lost_for_its_missing_heartbeats(workers):
    """The sweep, not a closed connection, decides: the reason names the silence."""
    platform, add = workers
    lss = add("w1")
    platform.add_user("ada")
    tw = platform.client("ada")
    project = tw.create_project("survey", "data analysis")
    session = tw.open_session(project["id"])  # queued until the LSS has attached
    assert session_processes(session.id)
    lss.kill()
    # 60 s: a hang guard only (FAST sets a 3 s heartbeat timeout); how soon is not tested
    lost = session.wait_for_event(lambda e: e.get("state") == "lost", timeout=60)
    assert lost["reason"] == "LSS w1 stopped sending heartbeats"
    wait_until(lambda: not session_processes(session.id), what="orphans to stop")
    assert [s["state"] for s in tw.sessions()] == ["lost"]


def _wait_for_nodes(platform: Platform, *names: str) -> None:
    """Until gss lists every named LSS as connected (asked as an administrator)."""
    platform.add_user("operator", admin=True)
    operator = platform.client("operator")
    wait_until(lambda: {n["name"] for n in operator.gss("list_nodes")["nodes"]
                        if n["state"] == "connected"} >= set(names),
               timeout=60, what=f"LSS {', '.join(names)} to attach")


def test_two_lss_share_sessions_by_load_not_round_robin(workers):
    """A half-full small node and an empty large one: every new session goes to the large one.

    `first` (capacity 2) runs one session before `second` (capacity 16) attaches, so its
    session share is 1/2 against 0/16 .. 3/16 for `second` over the next four placements: the
    smallest margin (0.5 * (1/2 - 3/16) = 0.16 of the load score) is larger than what the
    machine's CPU load, which both nodes report from the same host, can differ by between
    two heartbeats. Round robin would give `first` one of the four, and so would first-fit
    (`first` is first by name and by age) at once; a random placer passes with p = 1/16.
    """
    platform, add = workers
    add("first", "--capacity", "2")
    platform.add_user("ada")
    tw = platform.client("ada")
    projects = [tw.create_project(f"p{i}", "data analysis") for i in range(5)]
    tw.open_session(projects[0]["id"])  # on `first`, the only node yet
    add("second", "--capacity", "16")
    _wait_for_nodes(platform, "first", "second")
    for project in projects[1:]:
        tw.open_session(project["id"])
    placed = {s["project"]: s["lss"] for s in tw.sessions()}
    assert [placed[p["id"]] for p in projects] == ["first"] + ["second"] * 4


def test_a_session_waits_while_the_memory_it_needs_is_reserved_on_a_node_with_places(workers):
    """A node of 8 places whose sessions may take 2000 MB: a "data analysis" session reserves
    its declared 637 MB, so a "3D simulation" (1602 MB) waits in the queue though 7 places are
    free, and starts there once the first one has closed."""
    platform, add = workers
    add("small", "--capacity", "8", "--session-memory-mb", "2000",  # and the platform's
        "--database-url", sqlite_url(platform.data), "--blob-dir", str(platform.data / "blobs"))
    _wait_for_nodes(platform, "small")
    platform.add_user("ada")
    tw = platform.client("ada")
    analysis = tw.open_session(tw.create_project("survey", "data analysis")["id"])
    simulation = tw.create_project("antenna", "3D simulation")["id"]
    waiting = tw.gss("open_session", project=simulation)
    assert (waiting["state"], waiting["lss"]) == ("queued", None)
    [node] = platform.client("operator").gss("list_nodes")["nodes"]
    assert (node["live_sessions"], node["capacity"]) == (1, 8)
    assert (node["reserved_mb"], node["memory_mb"]) == (
        SESSION_TYPE_NEEDS["data analysis"].memory_mb, 2000)

    analysis.close()
    started = tw.open_session(simulation)  # the queued one, once it has started
    assert started.id == waiting["id"] and started.state == "ready"
    assert {s["id"]: s["lss"] for s in tw.sessions()}[started.id] == "small"
    started.close()


def test_gss_restart_keeps_the_running_session(platform, ada):
    tw, project, session = ada
    [pid] = session_processes(session.id)
    os.kill(platform.pid("gss"), signal.SIGKILL)  # `twinstack up` restarts it
    wait_until(lambda: _answers(tw), timeout=60, what="gss to come back")
    assert tw.sessions()[0]["state"] == "ready"
    assert interpolate(session)["shape"] == [6, 11]
    assert tw.open_session(project["id"]).id == session.id  # still the live one
    assert session_processes(session.id) == [pid]  # the compute service never stopped


def _answers(tw) -> bool:
    try:
        tw.sessions()
        return True
    except ActionError:
        return False


def test_reopening_after_close_starts_a_new_session(platform, ada):
    tw, project, session = ada
    session.close()
    wait_until(lambda: not session_processes(session.id), what="processes to stop")
    again = tw.open_session(project["id"])
    assert again.id != session.id and again.state == "ready"


def test_a_service_that_cannot_start_fails_the_session_with_its_reason(workers):
    """An LSS told to bind compute services to an address this host lacks (nothing is sent)."""
    platform, add = workers
    add("misconfigured", "--spawn-host", "192.0.2.1")
    platform.add_user("ada")
    tw = platform.client("ada")
    project = tw.create_project("survey", "data analysis")
    with pytest.raises(SessionFailed) as failed:
        tw.open_session(project["id"])
    # The LSS binds the service's listener before it starts it: no process ran. The user
    # reads why; the address itself is internal, so the relay masks it.
    assert failed.value.exit_code is None
    reason = str(failed.value)
    assert "cannot bind <internal address> for kriging: Cannot assign requested address" \
        in reason
    assert "192.0.2.1" not in reason
