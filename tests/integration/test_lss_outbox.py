"""The LSS against a gss that cannot take its events, and compute services without their LSS.

The fault is real: the test holds the write lock of gss's SQLite database, so gss answers
session_event with 503 (database unavailable) once its busy timeout runs out.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.platform_fixtures import (
    Platform,
    lss_workers,
    session_processes,
    start_platform,
    stop_platform,
    wait_until,
)

ENV = {"TWINSTACK_LSS_TIMEOUT_SECONDS": "60"}  # the locked database must not lose the LSS


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, object]]:
    """A platform without a local LSS, and a way to add LSS processes to it."""
    platform = start_platform(tmp_path_factory.mktemp("outbox"), "--lss-count", "0", env=ENV)
    try:
        platform.add_user("ada")
        with lss_workers(platform) as add:
            yield platform, add
    finally:
        stop_platform(platform)


def open_on_new_lss(platform: Platform, project: str, lss: str):
    """Open the project's session once the LSS just added (the only one) has attached."""
    tw = platform.client("ada")
    session = tw.open_session(project)  # queued until the LSS has attached
    assert [s["lss"] for s in tw.sessions() if s["id"] == session.id] == [lss]
    return session


def restart_events(session, count: int) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    for event in session.events(timeout=60):
        if event["type"] in ("restarting", "restarted"):
            seen.append((event["type"], event["restart"]))
            if len(seen) == count:
                break
    return seen


def restarted(platform: Platform, lss: str, session: str, old: int) -> int:
    """The pid of the service once it is ready again after `old` was killed."""
    ready = platform.data / lss / "sessions" / session / "kriging" / "kriging.ready"

    def pid() -> int | None:
        try:
            return json.loads(ready.read_text())["pid"]
        except (OSError, ValueError):
            return None
    wait_until(lambda: pid() not in (None, old), what="the service to be ready again")
    found = pid()
    assert found is not None
    return found


def test_events_wait_out_a_gss_answering_503_and_arrive_in_order(workers):
    platform, add = workers
    lss = add("w-events")
    tw = platform.client("ada")
    session = open_on_new_lss(platform, tw.create_project("events", "data analysis")["id"],
                              "w-events")
    [pid] = session_processes(session.id)
    log = platform.data / "w-events.out"

    db = sqlite3.connect(platform.data / "twinstack.db", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")  # every gss transaction now waits, then answers 503
    try:
        for _ in range(2):  # each crash: `restarting` and `restarted`, queued in the outbox
            os.kill(pid, signal.SIGKILL)
            pid = restarted(platform, "w-events", session.id, pid)
        wait_until(lambda: "GSS answered 503" in log.read_text(errors="replace"),
                   what="gss to refuse an event")
    finally:
        db.execute("ROLLBACK")
        db.close()
    assert restart_events(session, 4) == [("restarting", 1), ("restarted", 1),
                                          ("restarting", 2), ("restarted", 2)]
    assert session.call("kriging", "info")["session"] == session.id
    lss.terminate()  # a clean stop ends its session: the next test has its own LSS alone
    lss.wait(timeout=30)
    assert not session_processes(session.id)


def test_compute_services_stop_when_their_lss_never_returns(workers):
    platform, add = workers
    lss = add("w-lease", "--lease-seconds", "2")
    tw = platform.client("ada")
    session = open_on_new_lss(platform, tw.create_project("lease", "data analysis")["id"],
                              "w-lease")
    lss.kill()
    lss.wait()
    wait_until(lambda: not session_processes(session.id), timeout=30,
               what="the compute service to give up its lease")
    output: Path = platform.data / "w-lease" / "sessions" / session.id / "kriging" / \
        "kriging.out"
    assert "not renewed" in output.read_text(errors="replace")
