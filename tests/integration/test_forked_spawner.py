"""Compute services forked from the LSS's warm parent (`--spawner forked`), on a real platform:
each session's services are children of the warm parent, serve their own certificate and
refuse another session's peers; none holds a descriptor of the parent; a service that dies is
restarted with its exit code known; killing the parent leaves the services running, and the
next session gets a new parent; CAD works in a child of a parent that imported OpenCascade.
With a warm pool (`--warm-pool`): sessions opened at once each claim a different waiting
worker, which then serves that session's identity alone, and the pool refills; waiting workers
end with their parent, claimed ones go on."""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.conftest import served_certificate
from tests.platform_fixtures import (
    Platform,
    gone,
    parent_of,
    pool_children,
    running_platform,
    session_processes,
    wait_until,
)
from twinstack.client import Session
from twinstack.pki.tls import TlsFiles, client_context

POINTS = {"points": [[0, 0], [1, 0], [0, 1], [1, 1]], "values": [1, 2, 3, 4],
          "targets": [[0.5, 0.5]]}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("forked"), "ada",
                          env={"TWINSTACK_SPAWNER": "forked"}) as running:
        yield running


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("pooled"), "ada",
                          env={"TWINSTACK_SPAWNER": "forked",
                               "TWINSTACK_WARM_POOL": "1"}) as running:
        yield running


def warm_parents(platform: Platform) -> set[int]:
    """The platform's warm parents (their socket is in its data directory); not a child
    just forked from one, which has its parent's command line until it sets its title."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if b"twinstack.spawners.forked" in cmdline and str(platform.data).encode() in cmdline:
            found.add(int(entry.name))
    return {pid for pid in found if _parent_or_none(pid) not in found}


def _parent_or_none(pid: int) -> int | None:
    try:
        return parent_of(pid)
    except (OSError, IndexError):  # ended meanwhile
        return None


def waiting_workers(parent: int, kind: str) -> set[int]:
    """The warm parent's waiting children of one kind."""
    return {pid for pid, of in pool_children(parent).items() if of == kind}


def sockets_of(pid: int) -> set[str]:
    """The socket inodes a process holds ("socket:[1234]")."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:"):
            held.add(target)
    return held


def service_files(platform: Platform, session: str, service: str) -> Path:
    [folder] = [p for p in platform.data.rglob(f"sessions/{session}/{service}") if p.is_dir()]
    return folder


def identity_of(folder: Path, ca: Path) -> TlsFiles:
    return TlsFiles(folder / "identity-chain.pem", folder / "identity-key.pem", ca)


def kriging_pid(session: Session) -> int:
    [pid] = [p for p in session_processes(session.id)
             if b" kriging " in Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")]
    return pid


def test_services_are_forked_with_their_own_identity_and_no_parent_descriptor(platform):
    tw = platform.client("ada")
    with tw.open_session(tw.create_project("one", "data analysis")["id"]) as one, \
            tw.open_session(tw.create_project("two", "data analysis")["id"]) as two:
        [parent] = warm_parents(platform)
        pids = [kriging_pid(one), kriging_pid(two)]
        assert [parent_of(pid) for pid in pids] == [parent, parent]
        assert one.call("kriging", "interpolate", **POINTS)["estimates"] == [pytest.approx(2.5)]

        ca = platform.data / "pki" / "ca.pem"
        folders = [service_files(platform, s.id, "kriging") for s in (one, two)]
        ready = json.loads((folders[0] / "kriging.ready").read_text())
        certificate = x509.load_pem_x509_certificate(  # the chain's first: the service's own
            (folders[0] / "identity-chain.pem").read_bytes())
        assert certificate.subject.get_attributes_for_oid(
            x509.NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == f"session:{one.id}"
        served = served_certificate(ready["internal"], identity_of(folders[0], ca))
        assert served == certificate.public_bytes(Encoding.DER)  # its own, not the parent's

        other = client_context(identity_of(folders[1], ca))  # session two's kriging
        other.check_hostname = False
        request = urllib.request.Request(f"https://{ready['internal']}/execute",
                                         data=json.dumps({"action": "interpolate",
                                                          "params": POINTS}).encode())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, context=other, timeout=10)
        assert refused.value.code == 403
        assert "another session" in json.loads(refused.value.read())["error"]["message"]

        parents_sockets, lss_sockets = sockets_of(parent), sockets_of(parent_of(parent))
        for pid in pids:
            assert not sockets_of(pid) & parents_sockets
            assert not sockets_of(pid) & lss_sockets  # its listener: the LSS let go of it


def test_a_dead_service_is_restarted_and_a_dead_parent_leaves_services_running(platform):
    tw = platform.client("ada")
    with tw.open_session(tw.create_project("three", "data analysis")["id"]) as session:
        first = kriging_pid(session)
        os.kill(first, signal.SIGKILL)
        restarted = session.wait_for_event(
            lambda e: e.get("type") == "restarting" and e.get("service") == "kriging", 60)
        assert restarted["exit_code"] == -9  # the warm parent reaped it and wrote the code
        session.wait_for_event(lambda e: e.get("type") == "restarted"
                               and e.get("service") == "kriging", 60)
        second = kriging_pid(session)
        assert second != first

        [parent] = warm_parents(platform)
        os.kill(parent, signal.SIGKILL)
        # re-parented to the LSS, its subreaper (as the parent exits: its command line, gone
        # with its memory, goes a moment before)
        wait_until(lambda: parent_of(second) != parent, what="the service re-parented")
        assert parent not in warm_parents(platform)
        assert session.call("kriging", "interpolate", **POINTS)["estimates"] == \
            [pytest.approx(2.5)]
        with tw.open_session(tw.create_project("four", "data analysis")["id"]) as later:
            assert later.call("kriging", "interpolate", **POINTS)["estimates"] == \
                [pytest.approx(2.5)]
            [new_parent] = warm_parents(platform)
            assert new_parent != parent and parent_of(kriging_pid(later)) == new_parent
        os.kill(second, signal.SIGKILL)  # orphaned and dead: the LSS reaps it, knows its code
        restarted = session.wait_for_event(
            lambda e: e.get("type") == "restarting" and e.get("service") == "kriging", 60)
        assert restarted["exit_code"] == -9


def test_cad_works_in_a_service_forked_after_the_parent_imported_the_kernel(pooled):
    """The warm parent imports OpenCascade before it forks: a "3D simulation" session's
    services, each from the pool (the model and modeling warmed up before the claim: an ORM
    read, a first solid), build and subtract solids with the right volume."""
    import math

    tw = pooled.client("ada")
    with tw.open_session(tw.create_project("cad", "3D simulation")["id"]) as session:
        [parent] = warm_parents(pooled)
        assert "/OCP/" in Path(f"/proc/{parent}/maps").read_text()  # the kernel, preloaded
        box = session.call("modeling", "create", feature="box", inputs=[],
                           parameters={"size": [2, 2, 2]})
        ball = session.call("modeling", "create", feature="sphere", inputs=[],
                            parameters={"radius": 1.2})
        cut = session.call("modeling", "create", feature="difference",
                           inputs=[box["id"], ball["id"]], parameters={})
        volume = session.model.get(cut["id"])["properties"]["volume"]
        assert volume == pytest.approx(8 - math.pi * 1.2**3 / 6, rel=1e-6)  # an octant less


def test_sessions_at_once_each_claim_their_own_waiting_worker_and_the_pool_refills(pooled):
    [parent] = warm_parents(pooled)
    wait_until(lambda: len(waiting_workers(parent, "kriging")) == 1, what="the pool filled")
    [waiting] = waiting_workers(parent, "kriging")
    users = [pooled.client("ada") for _ in range(3)]
    projects = [tw.create_project(f"pool-{n}", "data analysis")["id"]
                for n, tw in enumerate(users)]
    sessions: list[Session] = []
    gate = threading.Barrier(len(users))

    def open_one(n: int) -> None:
        gate.wait(timeout=30)
        sessions.append(users[n].open_session(projects[n]))

    threads = [threading.Thread(target=open_one, args=(n,)) for n in range(len(users))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert len(sessions) == 3
        pids = [kriging_pid(session) for session in sessions]
        assert len(set(pids)) == 3 and waiting in pids  # the waiting one went to one session
        claimed = sessions[pids.index(waiting)]
        for session in sessions:
            assert session.call("kriging", "interpolate", **POINTS)["estimates"] == \
                [pytest.approx(2.5)]
        # the claimed worker is that session's service alone, with its identity
        ca = pooled.data / "pki" / "ca.pem"
        folder = service_files(pooled, claimed.id, "kriging")
        ready = json.loads((folder / "kriging.ready").read_text())
        certificate = x509.load_pem_x509_certificate((folder / "identity-chain.pem").read_bytes())
        assert served_certificate(ready["internal"], identity_of(folder, ca)) == \
            certificate.public_bytes(Encoding.DER)
        assert [s.id for s in sessions
                if s.id.encode() in Path(f"/proc/{waiting}/cmdline").read_bytes()] == [claimed.id]
        assert parent_of(waiting) == parent and not sockets_of(waiting) & sockets_of(parent)
        wait_until(lambda: len(waiting_workers(parent, "kriging")) == 1, what="the pool refilled")
        assert not waiting_workers(parent, "kriging") & set(pids)  # a new one, not a used one
    finally:
        for session in sessions:
            session.close()


def test_waiting_workers_end_with_their_parent_and_claimed_ones_go_on(pooled):
    tw = pooled.client("ada")
    [parent] = warm_parents(pooled)
    wait_until(lambda: len(waiting_workers(parent, "modeling")) == 1, what="the pool filled")
    waiting = waiting_workers(parent, "kriging") | waiting_workers(parent, "modeling")
    with tw.open_session(tw.create_project("kept", "data analysis")["id"]) as session:
        claimed = kriging_pid(session)
        os.kill(parent, signal.SIGKILL)
        wait_until(lambda: all(gone(pid) for pid in waiting - {claimed}),
                   what="the waiting workers gone with their parent")
        assert session.call("kriging", "interpolate", **POINTS)["estimates"] == \
            [pytest.approx(2.5)]
        with tw.open_session(tw.create_project("next", "data analysis")["id"]) as later:
            [new_parent] = warm_parents(pooled)
            assert new_parent != parent and parent_of(kriging_pid(later)) == new_parent
            wait_until(lambda: len(waiting_workers(new_parent, "kriging")) == 1,
                       what="a new pool")


def test_a_pool_holds_no_more_of_a_kind_than_sessions_can_start(tmp_path):
    """--warm-pool 3 on a node of --capacity 1: one waiting worker of each kind, since a
    session claims one of each and only one session runs there."""
    with running_platform(tmp_path, env={"TWINSTACK_SPAWNER": "forked",
                                         "TWINSTACK_WARM_POOL": "3",
                                         "TWINSTACK_CAPACITY": "1"}) as capped:
        wait_until(lambda: bool(warm_parents(capped)), what="the warm parent")
        [parent] = warm_parents(capped)
        argv = Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0")
        module = argv.index(b"twinstack.spawners.forked")
        assert argv[module + 2] == b"1"  # SOCKET POOL KINDS
