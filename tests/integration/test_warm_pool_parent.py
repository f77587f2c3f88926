"""The warm parent's pool on its own (`python -m twinstack.spawners.forked SOCKET 1 KINDS`),
with real processes and no platform: a waiting child whose warm-up fails ends and is never
handed out, and a request for its kind gets a new fork instead; a request for a kind with a
waiting child gets that child, which runs it and leaves the pool, and a new one takes its
place; SIGTERM to the parent ends the waiting children; so does the end of its stdin (the
LSS's pipe: the LSS has gone), and the parent with them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Pki
from tests.platform_fixtures import gone, pool_children, wait_until
from twinstack.spawners.forked import READY_LINE
from twinstack.spawners.process import child_environment


@pytest.fixture
def parent(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    sock = tmp_path / "parent.sock"
    with (tmp_path / "parent.out").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "twinstack.spawners.forked", str(sock),
                                 "1", "kriging,nowhere"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=log, env=child_environment(),
                                start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == READY_LINE
        yield proc, sock
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def ask(sock: Path, service: str, output: Path, argv: tuple[str, ...] = ("--version",)) -> int:
    """One request to the parent: `twinstack ARGV` as `service`; the child's pid."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(sock))
        conn.sendall(json.dumps({"service": service, "argv": list(argv),
                                 "output": str(output), "env": child_environment()}).encode()
                     + b"\n")
        reply = json.loads(conn.makefile("rb").readline())
    return int(reply["pid"])


def test_a_failed_warm_up_is_never_handed_out_and_a_claimed_child_is_replaced(parent, tmp_path):
    proc, sock = parent
    # "nowhere" is no service: its waiting child fails its warm-up (it says so in the
    # parent's log) and ends
    failed = "unknown service 'nowhere'"
    wait_until(lambda: failed in (tmp_path / "parent.out").read_text()
               and list(pool_children(proc.pid).values()) == ["kriging"],
               what="the kriging child waiting, the failed one gone")
    assert failed in (tmp_path / "parent.out").read_text()
    [first] = pool_children(proc.pid)

    claimed = ask(sock, "kriging", tmp_path / "one.out")
    assert claimed == first  # the waiting child took it
    wait_until(lambda: (tmp_path / "one.exit").exists(), what="its exit code")
    assert (tmp_path / "one.exit").read_text().split() == [str(first), "0"]
    assert "twinstack" in (tmp_path / "one.out").read_text()  # it ran the request
    wait_until(lambda: len(pool_children(proc.pid)) == 1 and first not in pool_children(proc.pid),
               what="a new waiting kriging child")
    [second] = pool_children(proc.pid)

    fresh = ask(sock, "nowhere", tmp_path / "two.out")  # none waiting: a new fork
    assert fresh not in (first, second)
    wait_until(lambda: (tmp_path / "two.exit").exists(), what="its exit code")
    assert (tmp_path / "two.exit").read_text().split() == [str(fresh), "0"]
    assert pool_children(proc.pid) == {second: "kriging"}  # and no waiting child for "nowhere"

    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    wait_until(lambda: gone(second), what="the waiting child gone with its parent")


def test_the_parent_and_its_waiting_children_end_when_the_lss_has_gone(parent):
    proc, _ = parent
    def kriging() -> list[int]:  # the "nowhere" child may come and go meanwhile
        return [pid for pid, kind in pool_children(proc.pid).items() if kind == "kriging"]

    wait_until(lambda: len(kriging()) == 1, what="a waiting kriging child")
    [child] = kriging()
    assert proc.stdin is not None
    proc.stdin.close()  # as when the LSS dies: its end of the pipe closes
    assert proc.wait(timeout=30) == 0
    wait_until(lambda: gone(child), what="the waiting child gone with its parent")


def test_a_service_whose_session_folder_went_before_it_ended_leaves_the_parent_serving(
        parent, pki: Pki, tmp_path):
    """A session whose start failed is removed with its folder while a service forked for it
    may still run; when that one ends, its exit code has nowhere to go: the parent goes on."""
    proc, sock = parent
    folder = tmp_path / "session"
    folder.mkdir()
    identity = pki.identity("kriging", session="s-1", issuer="intermediate")
    pid = ask(sock, "kriging", folder / "kriging.out", (
        "serve", "kriging", "--cert", str(identity.cert), "--key", str(identity.key),
        "--ca", str(identity.ca), "--session", "s-1", "--bind", "127.0.0.1:0",
        "--health-bind", "127.0.0.1:0", "--data-dir", str(folder / "data"),
        "--ready-file", str(folder / "kriging.ready")))
    wait_until(lambda: (folder / "kriging.ready").exists(), what="the service ready")
    shutil.rmtree(folder)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="the parent reaped it")

    again = ask(sock, "nowhere", tmp_path / "next.out")  # the parent still answers
    wait_until(lambda: (tmp_path / "next.exit").exists(), what="its exit code")
    assert (tmp_path / "next.exit").read_text().split() == [str(again), "0"]
    assert proc.poll() is None


def test_a_request_whose_sender_left_before_the_answer_leaves_the_parent_serving(parent,
                                                                                  tmp_path):
    """Half a request, then the connection closes: the parent's answer has no reader (EPIPE);
    it goes on serving."""
    proc, sock = parent
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(sock))
        conn.sendall(b'{"service": ')  # no end of line: the parent reads on until it closes
    again = ask(sock, "nowhere", tmp_path / "next.out")
    wait_until(lambda: (tmp_path / "next.exit").exists(), what="its exit code")
    assert (tmp_path / "next.exit").read_text().split() == [str(again), "0"]
    assert proc.poll() is None
