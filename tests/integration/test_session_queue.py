"""Queued session starts: a full LSS makes `open_session` wait its turn, first come first served.

A real `twinstack up` whose single LSS runs at most 8 sessions; 30 projects (of three users,
each shared with 0 to 2 of the others) open their sessions at once through the Python client.
The waiting clients are watched through their `Session` objects (`Client.attached` holds each
once its relay connection is open): their events say their place in the queue while they wait.
"""

from __future__ import annotations

import functools
import os
import signal
import sqlite3
import threading
from collections import defaultdict
from typing import Any

import pytest

from tests.platform_fixtures import (
    running_platform,
    session_processes,
    start_platform,
    stop_platform,
    wait_until,
)
from twinstack.client import Client, SessionFailed

USERS = ("ada", "bob", "cy")
CAPACITY = 8
QUEUE_TIMEOUT = 10  # seconds, on the platform without any LSS


def _projects(clients: dict[str, Client], count: int) -> list[tuple[str, str]]:
    """(opener, project id): each owned by one user and shared with 0 to 2 others as editors."""
    made = []
    for i in range(count):
        owner = USERS[i % len(USERS)]
        project = clients[owner].create_project(f"p{i:02d}", "data analysis")
        for k in range(1, i % 3 + 1):
            clients[owner].share(project["id"], user=USERS[(i + k) % len(USERS)], role="editor")
        made.append((owner, project["id"]))
    return made


class Watcher:
    """Every event each attached session received so far, by session id."""

    def __init__(self, clients: dict[str, Client]) -> None:
        self.clients = clients
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.sessions: dict[str, Any] = {}
        self.closed: set[str] = set()

    def poll(self) -> None:
        for client in self.clients.values():
            for session in list(client.attached):
                self.sessions[session.id] = session
                self.events[session.id].extend(session.events())

    def places(self, session: str) -> list[int]:
        return [e["position"] for e in self.events[session] if e["type"] == "queued"]

    def ready(self) -> set[str]:
        """Those running now (a closed session's object keeps its last state: detached)."""
        return {sid for sid, s in self.sessions.items()
                if s.state == "ready" and sid not in self.closed}

    def moved_on(self, admitted: list[str], waiting: list[str]) -> bool:
        """Exactly `admitted` run, and each in `waiting` was told its place in that order."""
        self.poll()
        return self.ready() == set(admitted) and all(
            self.places(sid)[-1] == place for place, sid in enumerate(waiting, 1))

    def close(self, session: str) -> None:
        self.sessions[session].close()
        self.closed.add(session)


def _open_all(clients: dict[str, Client], projects: list[tuple[str, str]]
              ) -> tuple[list[threading.Thread], list[BaseException]]:
    """Call `open_session` for every project at once, each in its own thread."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(projects))

    def open_one(user: str, project: str) -> None:
        start.wait()
        try:
            clients[user].open_session(project, timeout=300)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=pair) for pair in projects]
    for thread in threads:
        thread.start()
    return threads, errors


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    with running_platform(tmp_path_factory.mktemp("queue"), *USERS,
                          env={"TWINSTACK_CAPACITY": str(CAPACITY)}) as platform:
        yield platform


def test_thirty_sessions_wait_their_turn_for_eight_places(eight):
    clients = {user: eight.client(user) for user in USERS}
    projects = _projects(clients, 30)
    threads, errors = _open_all(clients, projects)
    watch = Watcher(clients)

    def all_waiting() -> bool:
        watch.poll()
        return len(watch.sessions) == 30 and (len(watch.ready()) == CAPACITY or errors != []) \
            and all(watch.places(sid) for sid in watch.sessions.keys() - watch.ready())
    wait_until(all_waiting, timeout=120, what="8 sessions ready and 22 told their place")
    assert errors == []
    # The queue's order: when gss recorded each open_session (ties broken by id, as gss does).
    records = {r["id"]: r for c in clients.values() for r in c.sessions()}
    order = sorted(watch.sessions, key=lambda sid: (records[sid]["created_at"], sid))
    assert watch.ready() == set(order[:CAPACITY])  # the first 8 got the 8 places at once
    for rank, sid in enumerate(order[CAPACITY:], 1):
        assert records[sid]["state"] == "queued" and records[sid]["lss"] is None
        assert watch.places(sid) and set(watch.places(sid)) == {rank}, (rank, watch.events[sid])

    admitted, waiting = order[:CAPACITY], order[CAPACITY:]
    while waiting:  # close everything that runs: the next ones in the queue take its places
        for sid in admitted:
            watch.close(sid)
        admitted, waiting = waiting[:CAPACITY], waiting[CAPACITY:]
        wait_until(functools.partial(watch.moved_on, admitted, waiting), timeout=120,
                   what="the next sessions in the queue to start")
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []

    records = {r["id"]: r for c in clients.values() for r in c.sessions()}
    placed = sorted(order, key=lambda sid: records[sid]["placed_at"])
    assert placed == order  # started strictly first come, first served
    for rank, sid in enumerate(order):
        places = watch.places(sid)
        assert places == sorted(set(places), reverse=True)  # only ever moving up
        kinds = [e["type"] for e in watch.events[sid]]
        if rank >= CAPACITY:  # it waited: told its place before it started
            assert places[-1] <= CAPACITY
            assert kinds.index("queued") < kinds.index("placed")
            later = [e for e in watch.events[sid] if e["type"] == "queued"][1:]
            assert all(isinstance(e["eta_seconds"], int) and e["eta_seconds"] >= 0
                       for e in later), later  # once sessions have ended, an ETA is known
    for sid in admitted:
        watch.close(sid)
    wait_until(lambda: not any(session_processes(sid) for sid in order), timeout=60,
               what="every kriging process to stop")


@pytest.fixture(scope="module")
def nodeless(tmp_path_factory):
    """No LSS at all, and a short queue timeout: every session waits, none ever starts."""
    platform = start_platform(tmp_path_factory.mktemp("nodeless"), "--lss-count", "0",
                              env={"TWINSTACK_QUEUE_TIMEOUT_SECONDS": str(QUEUE_TIMEOUT)})
    try:
        for user in ("ada", "bob"):
            platform.add_user(user)
        yield platform
    finally:
        stop_platform(platform)


def test_a_queued_session_closes_and_the_queue_times_out_across_a_gss_restart(nodeless):
    clients = {"ada": nodeless.client("ada"), "bob": nodeless.client("bob")}
    projects = [("ada", clients["ada"].create_project("first", "data analysis")["id"]),
                ("bob", clients["bob"].create_project("second", "data analysis")["id"])]
    failures: dict[str, SessionFailed] = {}

    def open_one(user: str, project: str) -> None:
        with pytest.raises(SessionFailed) as failed:
            clients[user].open_session(project, timeout=60)
        failures[project] = failed.value

    watch = Watcher(clients)
    threads = []
    for place, (user, project) in enumerate(projects, 1):  # one after the other: a known order
        threads.append(threading.Thread(target=open_one, args=(user, project)))
        threads[-1].start()

        def told(place: int = place) -> bool:
            watch.poll()
            return len(watch.sessions) == place and all(
                watch.places(sid) for sid in watch.sessions)
        wait_until(told, timeout=60, what=f"session {place} to be told its place")
    first, second = (s.id for s in sorted(watch.sessions.values(), key=lambda s: s.project_id
                                          != projects[0][1]))
    assert (watch.places(first), watch.places(second)) == ([1], [2])
    assert watch.events[first][-1]["eta_seconds"] is None  # no LSS, no history: unknown

    assert clients["ada"].gss("close_session", session=first) == {"id": first,
                                                                  "state": "closed"}
    threads[0].join(timeout=60)
    assert "closed by ada" in str(failures[projects[0][1]])
    wait_until(lambda: watch.poll() or watch.places(second)[-1] == 1, timeout=60,
               what="the second session to move up")
    assert watch.places(second) == [2, 1]

    # The queue lives in the database: a gss killed now (`twinstack up` restarts it) still
    # ends the wait when its time is up, and the waiting client hears it through the relay.
    gss = nodeless.pid("gss")
    os.kill(gss, signal.SIGKILL)
    threads[1].join(timeout=60)
    assert nodeless.pid("gss") != gss
    after = [e["type"] for e in watch.sessions[second].events()]  # from the restarted gss:
    assert "state" in after and after[-1] == "failed", after  # its state again, then the end
    reason = failures[projects[1][1]].event["reason"]
    assert f"no session node had room for {QUEUE_TIMEOUT} s" in reason
    assert "queue_timeout_seconds" in reason
    states = {r["id"]: (r["state"], r["placed_at"]) for c in clients.values()
              for r in c.sessions()}
    assert states == {first: ("closed", None), second: ("failed", None)}


def test_a_session_that_cannot_be_placed_fails_with_the_reason(nodeless):
    """An error while placing one session fails that session with the error as its reason,
    and the queue goes on. Here: its project's session type was retired since."""
    tw = nodeless.client("ada")
    retired = tw.create_project("retired", "data analysis")
    database = sqlite3.connect(nodeless.data / "twinstack.db", timeout=30)
    with database:
        database.execute("UPDATE projects SET session_type = 'old kind' WHERE id = ?",
                         (retired["id"],))
    database.close()
    with pytest.raises(SessionFailed, match="session type 'old kind' is not offered any more"):
        tw.open_session(retired["id"], timeout=60)
    other = tw.gss("open_session", project=tw.create_project("other", "data analysis")["id"])
    assert other["state"] == "queued"
    assert tw.gss("close_session", session=other["id"])["state"] == "closed"
