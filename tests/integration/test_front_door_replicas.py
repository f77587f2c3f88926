"""A front door with no single point of failure: `twinstack up --replicas 2` on PostgreSQL runs
two gss, two auth and two relays (real processes, mutual TLS) and one LSS. The gss the LSS is
linked to and a relay the users' sessions go through are killed with SIGKILL while two users
call their sessions and gss in a loop: no call fails (idempotent ones are sent again by the
client), no session is lost, a session opens during the outage, and the LSS links to the
surviving gss."""

from __future__ import annotations

import collections
import os
import signal
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
from twinstack.client import Client, Session
from twinstack.launcher import PARTS, replica_parts

USERS = ("ada", "bob")


@pytest.fixture
def replicated(tmp_path: Path, postgres_url: str) -> Iterator[Platform]:
    port = free_port_block(24 + 10)
    running = start_platform(tmp_path, "--database-url", postgres_url, "--replicas", "2",
                             port=port)
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


def test_killing_a_gss_and_a_relay_goes_unnoticed(replicated: Platform) -> None:
    clients = {name: Client(front_door(replicated), ca=replicated.ca) for name in USERS}
    replicated.clients += clients.values()
    for name, client in clients.items():
        client.login(name, PASSWORD)
    projects = {name: client.create_project(f"{name}'s survey", "data analysis")["id"]
                for name, client in clients.items()}
    later = clients["ada"].create_project("opened during the outage", "data analysis")["id"]
    sessions: dict[str, Session] = {name: clients[name].open_session(projects[name])
                                    for name in USERS}
    done: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    stop = threading.Event()

    def calls(name: str) -> None:
        client, session = clients[name], sessions[name]
        while not stop.is_set():
            try:  # a compute call through the relay, and a call to gss
                info = session.call("kriging", "info", idempotent=True, timeout=60)
                assert info["session"] == session.id
                assert projects[name] in {p["id"] for p in client.projects()}
                done[name] += 1
            except Exception as exc:  # what a user would have seen
                failures.append(f"{name}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=calls, args=(name,)) for name in USERS]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: all(done[name] >= 5 for name in USERS), what="calls before")
        lss = replicated.pid("local")
        gss_ports = replicas(replicated, "gss", "internal")
        (linked,) = linked_to(lss, gss_ports)
        survivor = next(label for label in gss_ports.values() if label != linked)
        # a relay the sessions attached through
        relay = sorted(linked_to(os.getpid(), replicas(replicated, "relay", "public")))[0]
        for label in (linked, relay):
            os.kill(replicated.pid(label), signal.SIGKILL)
        before = dict(done)

        opener = Client(front_door(replicated), ca=replicated.ca)
        replicated.clients.append(opener)
        opener.login("ada", PASSWORD)
        during = opener.open_session(later)  # placed, started and ready meanwhile
        assert during.state == "ready"

        wait_until(lambda: linked_to(lss, gss_ports) == {survivor}, what="LSS re-linked")
        wait_until(lambda: all(done[name] >= before[name] + 5 for name in USERS),
                   what="calls after the kills")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
    assert failures == []
    events = {name: list(session.events()) for name, session in sessions.items()}
    assert any(e["type"] == "reconnected" for name in USERS for e in events[name])
    assert not [e for name in USERS for e in events[name] if e.get("state") in ("lost", "failed")]
    states = {s["id"]: s["state"] for s in clients["ada"].sessions() + clients["bob"].sessions()}
    assert set(states.values()) == {"ready"}, states
