"""Sessions survive their LSS: killed and restarted by the launcher, or with the whole platform.

The compute services outlive the LSS (they hold a lease, not a parent-death signal); the new
LSS re-adopts them from its checkpoints (pid and /proc start time), tells gss they still run,
and the users' Session objects keep working without reopening anything. Recovery times are
printed (run with -s) for the README's fault table.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.platform_fixtures import (
    Platform,
    session_processes,
    start_platform,
    stop_platform,
    wait_until,
)

# The gss must not give the LSS up while the launcher restarts it (FAST's 3 s is too close on a
# busy machine), and the services must hold on while a whole platform starts again.
ENV = {"TWINSTACK_LSS_TIMEOUT_SECONDS": "30", "TWINSTACK_LEASE_SECONDS": "60"}


def answers(session) -> bool:
    return session.call("kriging", "info", timeout=30)["session"] == session.id


def lss_log(platform: Platform) -> str:
    return (platform.data / "logs" / "local.out").read_text(errors="replace")


def key_files(platform: Platform) -> set[str]:
    """Sessions that have a private key on disk."""
    sessions = platform.data / "local" / "sessions"
    return {path.relative_to(sessions).parts[0] for path in sessions.glob("*/*/identity-key.pem")}


def report(figure: str, seconds: float) -> None:
    print(json.dumps({"figure": figure, "seconds": round(seconds, 2)}))


@pytest.fixture
def two_sessions(tmp_path):
    platform = start_platform(tmp_path, env=ENV)
    try:
        platform.add_user("ada")
        tw = platform.client("ada")
        sessions = [tw.open_session(tw.create_project(f"p{i}", "data analysis")["id"])
                    for i in range(2)]
        assert all(answers(s) for s in sessions)
        yield platform, tw, sessions
    finally:
        stop_platform(platform)
        for session in sessions:  # adopted processes are no children of this launcher
            wait_until(lambda: not session_processes(session.id), timeout=30,  # noqa: B023
                       what="the sessions' processes to stop")


def test_sessions_keep_answering_through_an_lss_kill(two_sessions):
    platform, tw, sessions = two_sessions
    pids = {s.id: session_processes(s.id) for s in sessions}
    old = platform.pid("local")
    killed = time.monotonic()
    os.kill(old, signal.SIGKILL)  # the launcher restarts it

    answered = [False, False]
    while not all(answered):  # the same Session objects, never reopened
        answered = [answered[i] or answers(s) for i, s in enumerate(sessions)]
    report("lss kill: both sessions answering", time.monotonic() - killed)
    wait_until(lambda: platform.pid("local") != old, what="the launcher to restart the LSS")
    assert all(f"adopted session {s.id}" in lss_log(platform) for s in sessions)
    report("lss kill: new LSS ready, both sessions re-adopted", time.monotonic() - killed)
    assert {s.id: session_processes(s.id) for s in sessions} == pids  # not restarted

    # The new LSS has them in hand: a close reaches their (adopted) processes.
    first, second = sessions
    first.close()
    wait_until(lambda: not session_processes(first.id), what="the adopted service to stop")
    report("lss kill: adopted session closed", time.monotonic() - killed)
    wait_until(lambda: first.id not in key_files(platform), what="its keys to go")
    # the LSS reports `closed` after it has removed the folder: wait for gss to have it
    wait_until(lambda: {s["id"]: s["state"] for s in tw.sessions()}
               == {first.id: "closed", second.id: "ready"}, what="gss to record the close")
    assert answers(second)
    assert not any(e.get("state") == "lost" for e in second.events())


def test_whole_platform_kill_then_up_again(two_sessions, tmp_path):
    """kill -9 of the launcher and every platform service; while the platform is down one
    session's compute service dies and another's checkpoint is damaged: up again, the intact
    session is re-adopted, the other two are ended cleanly (nothing running, no keys)."""
    platform, tw, (kept, broken) = two_sessions
    damaged = tw.open_session(tw.create_project("p2", "data analysis")["id"])
    kept_pids = session_processes(kept.id)
    services = [s["pid"] for s in platform.info()["services"].values()]
    everything = [platform.proc.pid, *services]
    for pid in everything:  # all at once, as a power cut would: a launcher that dies first
        os.kill(pid, signal.SIGSTOP)  # would make its services stop cleanly (parent death)
    for pid in everything:
        os.kill(pid, signal.SIGKILL)
    platform.proc.wait()
    for pid in session_processes(broken.id):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not session_processes(broken.id), what="the broken session to die")
    (platform.data / "local" / "sessions" / damaged.id / "state.json").write_text("{trunc")
    for client in platform.clients:
        client.close()
    platform.clients.clear()

    restarted = time.monotonic()
    again = start_platform(tmp_path, env=ENV, port=platform.port)
    platform.proc, platform.clients = again.proc, again.clients  # the fixture stops these
    report("platform kill -9: up again", time.monotonic() - restarted)
    tw = again.client("ada")
    wait_until(lambda: [s["state"] for s in tw.sessions() if s["id"] in (broken.id, damaged.id)]
               == ["lost", "lost"], what="the sessions that could not be adopted to end")
    wait_until(lambda: not session_processes(damaged.id), timeout=90,  # its lease went with
               what="the unadoptable session's service to stop")  # its folder
    session = tw.open_session(kept.project_id)
    assert session.id == kept.id and answers(session)
    report("platform kill -9: adopted session answering", time.monotonic() - restarted)
    assert session_processes(kept.id) == kept_pids
    assert key_files(again) == {kept.id}  # no key of an ended session left on disk
    assert "adopted session" in lss_log(again)


def test_a_hung_lss_fails_its_health_checks_and_is_replaced(tmp_path):
    """An LSS that answers nothing (SIGSTOP) is killed by the launcher's liveness probe and
    restarted; the new one adopts the session, which answers throughout."""
    platform = start_platform(tmp_path, env={**ENV, "TWINSTACK_LIVENESS_SECONDS": "1"})
    session = None
    try:
        platform.add_user("ada")
        tw = platform.client("ada")
        session = tw.open_session(tw.create_project("hung", "data analysis")["id"])
        pids = session_processes(session.id)
        old = platform.pid("local")
        os.kill(old, signal.SIGSTOP)
        assert answers(session)  # the relay reaches the service without the LSS
        wait_until(lambda: platform.pid("local") != old,
                   what="the launcher to kill and restart the hung LSS")
        wait_until(lambda: f"adopted session {session.id}" in lss_log(platform),
                   what="the new LSS to adopt the session")
        assert answers(session) and session_processes(session.id) == pids
    finally:
        stop_platform(platform)
        if session is not None:
            wait_until(lambda: not session_processes(session.id), timeout=30,
                       what="the session's processes to stop")
    assert platform.proc.stdout is not None
    assert "local failed its health check 3 times in a row" in platform.proc.stdout.read()
