"""The client across faults: a relay killed, a compute service killed or away, a call too slow.

One real platform (`twinstack up`, separate processes) for the module and one session on it,
used by every test in turn through the same `Session` object, as a user's script would: the
tests prove that it goes on working without being reopened. Faults are real signals to the
platform's processes (SIGKILL; SIGSTOP/SIGCONT to hold a process still at a chosen moment).
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from tests.integration.test_sessions import KRIGING, VARIOGRAM
from tests.platform_fixtures import (
    Platform,
    lss_workers,
    running_platform,
    session_processes,
    start_platform,
    stop_platform,
    wait_until,
)
from twinstack.client import ActionError, CallTimeout, ConnectionDropped, Session

LONG = 60.0  # a hang guard, never the thing tested
ADDRESS = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b|localhost:\d+|:\d{4,5}\b")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    # The LSS is held still (SIGSTOP) for a moment in one test: gss must not call it lost.
    with running_platform(tmp_path_factory.mktemp("reconnect"), "ada",
                          env={"TWINSTACK_LSS_TIMEOUT_SECONDS": "60"}) as running:
        yield running


@pytest.fixture(scope="module")
def session(platform: Platform) -> Session:
    tw = platform.client("ada")
    project = tw.create_project("survey", "data analysis")
    return tw.open_session(project["id"])


def interpolate(session: Session, **options: Any) -> dict[str, Any]:
    return session.call("kriging", "interpolate", **options, **KRIGING)


def kriging_pid(session: Session) -> int:
    [pid] = session_processes(session.id)
    return pid


@contextmanager
def held(pid: int) -> Iterator[None]:
    """The process stopped (SIGSTOP) for the block: it reads and answers nothing."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_killed_relay_is_rejoined_by_the_same_session(platform, session):
    """Calls in flight when the relay dies: the idempotent one is sent again on the new
    connection, the other fails saying it may have run; the session re-attaches by itself."""
    with ThreadPoolExecutor(2) as pool, held(kriging_pid(session)):  # no reply can come
        once = pool.submit(interpolate, session)
        again = pool.submit(interpolate, session, idempotent=True)
        wait_until(lambda: session.in_flight == 2, LONG, what="both calls to be sent")
        os.kill(platform.pid("relay"), signal.SIGKILL)  # `twinstack up` restarts it

        dropped = session.wait_for_event(lambda e: e["type"] == "reconnecting", LONG)
        assert dropped["session"] == session.id
        with pytest.raises(ConnectionDropped, match="may or may not have run") as failed:
            once.result(LONG)
        assert failed.value.status == 503 and failed.value.code == "connection_dropped"
        back = session.wait_for_event(lambda e: e["type"] == "reconnected", LONG)
        assert back["attempts"] >= 1
        assert session.state == "ready"
    assert again.result(LONG)["shape"] == [6, 11]
    assert interpolate(session)["shape"] == [6, 11]  # the next call, not retried: it just works


def test_a_call_made_while_away_waits_for_the_connection(platform, session):
    """...and the session's events flow again: the new relay follows its logs."""
    os.kill(platform.pid("relay"), signal.SIGKILL)
    session.wait_for_event(lambda e: e["type"] == "reconnecting", LONG)
    assert interpolate(session)["shape"] == [6, 11]  # sent once the session is back
    session.wait_for_event(lambda e: e["type"] == "reconnected", LONG)
    assert session.state == "ready"
    logged = session.wait_for_event(lambda e: e["type"] == "log" and "kriged" in e["msg"], LONG)
    assert logged["session"] == session.id


def test_idempotent_calls_go_on_through_a_compute_restart(session):
    """SIGKILL of the compute service during a loop of idempotent calls: none fails."""
    done: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                done.append(interpolate(session, idempotent=True, timeout=LONG))
            except BaseException as exc:  # every failure is the finding
                errors.append(exc)
                return

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        wait_until(lambda: len(done) >= 3 or errors, LONG, what="calls before the kill")
        old = kriging_pid(session)
        os.kill(old, signal.SIGKILL)
        session.wait_for_event(lambda e: e["type"] == "restarted", LONG)
        after = len(done)
        wait_until(lambda: len(done) >= after + 3 or errors, LONG, what="calls after it")
    finally:
        stop.set()
        worker.join(LONG)
    assert not errors, errors
    assert kriging_pid(session) != old
    assert all(result["shape"] == [6, 11] for result in done)


def test_a_service_away_refuses_other_calls_plainly_and_idempotent_ones_wait(platform,
                                                                            session):
    """With the LSS held still, a killed compute service stays down until it is let go."""
    lss = platform.pid("local")
    with ThreadPoolExecutor(1) as pool:
        with held(lss):
            os.kill(kriging_pid(session), signal.SIGKILL)
            wait_until(lambda: not session_processes(session.id), LONG, what="it to exit")
            refused = []
            for _ in range(2):  # the first may meet the relay's old link, the next a new one
                with pytest.raises(ActionError) as failed:
                    interpolate(session)
                refused.append(failed.value)
            waiting = pool.submit(interpolate, session, idempotent=True)
        restarted = session.wait_for_event(lambda e: e["type"] == "restarted", LONG)
        assert restarted["service"] == "kriging"
        assert waiting.result(LONG)["shape"] == [6, 11]
    for err in refused:
        assert err.status == 503 and "kriging" in err.message, err
        assert not ADDRESS.search(err.message), err.message  # where services run is internal


def test_a_call_that_times_out_is_cancelled_on_the_server(session):
    """The kriging service computes one call at a time. Held still, it is sent a call and a
    second one, which times out: before giving up, the client has the relay pass the cancel
    on. Let go, the service reads all three, drops the second call (its log says so) and
    answers the first, then the call after it; the cancelled one is never computed."""
    first = {**KRIGING, "grid": {"x": [0, 10, 11], "y": [0, 10, 7]}}
    second = {**KRIGING, "grid": {"x": [0, 10, 11], "y": [0, 10, 5]}}
    with ThreadPoolExecutor(1) as pool:
        with held(kriging_pid(session)):
            running = pool.submit(session.call, "kriging", "interpolate", **first)
            wait_until(lambda: session.in_flight == 1, LONG, what="the first call to be sent")
            with pytest.raises(CallTimeout) as timed_out:
                session.call("kriging", "interpolate", timeout=0.2, **second)
        assert isinstance(timed_out.value, TimeoutError) and timed_out.value.status == 504
        assert timed_out.value.message == ("kriging.interpolate gave no answer in 0.2 s; it "
                                           "was cancelled")
        assert timed_out.value.cancelled  # the relay has sent the cancel on
        cancelled = session.wait_for_event(
            lambda e: e["type"] == "log" and "interpolate cancelled" in e["msg"], LONG)
        assert cancelled["service"] == "kriging"
        assert running.result(LONG)["shape"] == [7, 11]
    assert interpolate(session)["shape"] == [6, 11]
    kriged: list[str] = []
    session.wait_for_event(lambda e: _kriged(e, kriged) and "onto 6x11 targets" in kriged[-1],
                           LONG)
    assert any("onto 7x11 targets" in line for line in kriged), kriged
    assert not any("onto 5x11 targets" in line for line in kriged), kriged


def test_a_computation_whose_caller_gave_up_stops(session):
    """A call already computing when it times out is not finished for nobody: the service's
    numerics stop at their next block of targets and the service is free for the next call."""
    assert_stops_when_its_caller_gives_up(session)


def test_a_tunnelled_computation_whose_caller_gave_up_stops(tmp_path):
    """The same through an LSS that carries the relay's calls (--tunnel): gss passes the
    cancel to the LSS, which cancels its call on its link to the service."""
    platform = start_platform(tmp_path, "--lss-count", "0")
    try:
        with lss_workers(platform) as add:
            add("w-tunnel", "--tunnel")
            platform.add_user("ada")
            tw = platform.client("ada")
            project = tw.create_project("far", "data analysis")
            assert_stops_when_its_caller_gives_up(tw.open_session(project["id"]))
    finally:
        stop_platform(platform)


def assert_stops_when_its_caller_gives_up(session: Session) -> None:
    """250,000 targets with 64 neighbours each (tens of seconds of work) with a 1-s timeout:
    the service logs that it stopped part-way, then answers the next call."""
    rng = np.random.default_rng(3)
    points = rng.uniform(0, 10, (2000, 2))
    big = {"points": points.tolist(), "values": np.sin(points[:, 0]).tolist(),
           "grid": {"x": [0, 10, 500], "y": [0, 10, 500]}, "neighbours": 64,
           "variogram": VARIOGRAM}
    with pytest.raises(CallTimeout) as timed_out:
        session.call("kriging", "interpolate", timeout=1.0, **big)
    assert timed_out.value.cancelled
    stopped = session.wait_for_event(
        lambda e: e["type"] == "log" and e["msg"].startswith("interpolate stopped after"), LONG)
    done, total = map(int, re.findall(r"\d+", stopped["msg"])[:2])
    assert 0 < total == 250_000 and done < total
    assert interpolate(session)["shape"] == [6, 11]


def _kriged(event: dict[str, Any], seen: list[str]) -> bool:
    if event["type"] == "log" and event["msg"].startswith("kriged "):
        seen.append(event["msg"])
        return True
    return False


def test_calls_fail_fast_once_detached(platform: Platform):
    """Detaching ends the connection for good: no re-attach, calls fail at once."""
    tw = platform.client("ada")
    project = tw.projects()[0]
    session = tw.open_session(project["id"])
    session.detach()
    with pytest.raises(ActionError, match="detached"):
        interpolate(session, idempotent=True, timeout=LONG)
    assert not [e for e in session.events() if e["type"] == "reconnecting"]

