"""A front door with no single point of failure: `twinstack up --replicas 2` on PostgreSQL runs
two gss, two auth and two relays (real processes, mutual TLS) and one LSS, while two users call
their sessions and gss in a loop. Killing (SIGKILL) the gss the LSS is linked to and a relay the
sessions go through, and then restarting every front-door process and the logger one after the
other with ten sessions live: no call fails (idempotent ones are sent again by the client), no
session is lost, a session opens during the outage, and the LSS links to the surviving gss."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.platform_fixtures import (
    PASSWORD,
    Platform,
    free_port_block,
    start_platform,
    stop_platform,
    wait_until,
)
from tests.store_fixtures import new_postgres_database
from twinstack.client import Client, Session
from twinstack.exitcodes import ExitCode
from twinstack.launcher import FRONT_DOOR, PARTS, replica_parts

USERS = ("ada", "bob")


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str
               ) -> Iterator[Platform]:
    with new_postgres_database(postgres_server_url) as database:
        running = start_platform(
            tmp_path_factory.mktemp("replicas"), "--database-url", database, "--replicas", "2",
            port=free_port_block(24 + 10),
            env={"TWINSTACK_CAPACITY": "16", "TWINSTACK_SPAWNER": "forked"})
        try:
            for name in USERS:
                running.add_user(name)
            yield running
        finally:
            stop_platform(running)


def replicas(platform: Platform, name: str, channel: str) -> dict[int, str]:
    """The port of each replica of a front-door service on one channel, with its label."""
    second = next(part for part in replica_parts(2) if part.name == name)
    offsets = {PARTS[name]: name, second: f"{name}-2"}
    return {platform.port + (part.internal if channel == "internal" else part.public or 0): label
            for part, label in offsets.items()}


def linked_to(pid: int, ports: dict[int, str]) -> set[str]:
    """Which of these listeners the process holds an established connection to."""
    return {ports[c.raddr.port] for c in psutil.Process(pid).net_connections("tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port in ports}


def front_door(platform: Platform) -> str:
    """The client's list of gss replicas' public addresses."""
    return ",".join(f"https://127.0.0.1:{port}" for port in replicas(platform, "gss", "public"))


def user(platform: Platform, name: str) -> Client:
    client = Client(front_door(platform), ca=platform.ca)
    platform.clients.append(client)
    client.login(name, PASSWORD)
    return client


@contextlib.contextmanager
def calling(clients: dict[str, Client], sessions: dict[str, list[Session]]
            ) -> Iterator[tuple[collections.Counter[str], list[str]]]:
    """Each user calls each of their sessions (through a relay) and gss, over and over, in a
    thread of their own, for the duration of the block: rounds done per user, and what any
    call raised."""
    done: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    stop = threading.Event()

    def calls(name: str) -> None:
        while not stop.is_set():
            try:
                for session in sessions[name]:
                    info = session.call("kriging", "info", idempotent=True, timeout=60)
                    assert info["session"] == session.id
                listed = {p["id"] for p in clients[name].projects()}
                assert {s.project_id for s in sessions[name]} <= listed
                done[name] += 1
            except Exception as exc:  # what a user would have seen
                failures.append(f"{name}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=calls, args=(name,)) for name in clients]
    for thread in threads:
        thread.start()
    try:
        yield done, failures
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)


def more_rounds(done: collections.Counter[str], what: str, rounds: int = 3) -> None:
    """Wait until every user has done `rounds` more rounds of calls."""
    start = dict(done)
    wait_until(lambda: all(done[n] >= start.get(n, 0) + rounds for n in USERS), what=what)


def sessions_of(clients: dict[str, Client], what: str, count: int
                ) -> dict[str, list[Session]]:
    """`count` new projects of each user, each with its session open."""
    opened: dict[str, list[Session]] = {name: [] for name in clients}
    for name, client in clients.items():
        for n in range(count):
            project = client.create_project(f"{what} {n}", "data analysis")["id"]
            opened[name].append(client.open_session(project))
    return opened


def assert_all_ready(clients: dict[str, Client], sessions: dict[str, list[Session]],
                     failures: list[str]) -> None:
    assert failures == []
    events = [e for opened in sessions.values() for s in opened for e in s.events()]
    assert not [e for e in events if e.get("state") in ("lost", "failed")]
    states = {s["id"]: s["state"] for c in clients.values() for s in c.sessions()}
    assert set(states.values()) == {"ready"}, states


def test_killing_a_gss_and_a_relay_goes_unnoticed(replicated: Platform) -> None:
    clients = {name: user(replicated, name) for name in USERS}
    later = clients["ada"].create_project("opened during the outage", "data analysis")["id"]
    sessions = sessions_of(clients, "killed", 1)
    with calling(clients, sessions) as (done, failures):
        more_rounds(done, "calls before")
        lss = replicated.pid("local")
        gss_ports = replicas(replicated, "gss", "internal")
        (linked,) = linked_to(lss, gss_ports)
        survivor = next(label for label in gss_ports.values() if label != linked)
        # a relay the sessions attached through
        relay = sorted(linked_to(os.getpid(), replicas(replicated, "relay", "public")))[0]
        for label in (linked, relay):
            os.kill(replicated.pid(label), signal.SIGKILL)

        during = user(replicated, "ada").open_session(later)  # placed and started meanwhile
        assert during.state == "ready"
        wait_until(lambda: linked_to(lss, gss_ports) == {survivor}, what="LSS re-linked")
        more_rounds(done, "calls after the kills")
    assert any(e["type"] == "reconnected" for opened in sessions.values() for s in opened
               for e in s.events())
    assert_all_ready(clients, sessions, failures)


def test_a_rolling_restart_of_the_front_door_goes_unnoticed(replicated: Platform) -> None:
    """Every control-plane process (each gss, auth and relay, and the logger) stopped
    (SIGTERM) and restarted by the launcher, one after the other, each once its predecessor is
    back, while ten sessions are live. (Not the LSS: a clean stop of an LSS ends its sessions
    by design; a killed one leaves them to its successor, see test_lss_restart.py.)"""
    clients = {name: user(replicated, name) for name in USERS}
    sessions = sessions_of(clients, "rolling", 5)
    labels = [label for name in FRONT_DOOR for label in (name, f"{name}-2")] + ["logger"]
    with calling(clients, sessions) as (done, failures):
        more_rounds(done, "calls before", rounds=1)
        for label in labels:
            old = replicated.pid(label)
            os.kill(old, signal.SIGTERM)
            wait_until(lambda old=old, label=label: replicated.pid(label) != old,
                       what=f"{label} restarted")
            more_rounds(done, f"calls after restarting {label}", rounds=1)
    assert_all_ready(clients, sessions, failures)


def test_replicas_on_sqlite_are_refused_before_anything_starts(tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "twinstack", "up", "--replicas", "2", "--data-dir",
         str(tmp_path / "data"), "--port", str(free_port_block(34))],
        capture_output=True, text=True, timeout=60)
    assert refused.returncode == ExitCode.CONFIG_ERROR
    assert "--replicas 2 needs PostgreSQL" in refused.stderr
    assert not (tmp_path / "data").exists()
