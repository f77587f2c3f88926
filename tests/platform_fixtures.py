"""A whole platform for tests: `twinstack up` in a temporary data directory, real processes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from twinstack.client import Client
from twinstack.launcher import serves_from

# Fast failure detection so the failure tests finish in seconds.
FAST = {"TWINSTACK_HEARTBEAT_SECONDS": "0.5", "TWINSTACK_LSS_TIMEOUT_SECONDS": "3",
        "TWINSTACK_RESTART_BACKOFF": "0.2", "TWINSTACK_RESTART_LIMIT": "3",
        "TWINSTACK_LEASE_SECONDS": "6", "TWINSTACK_CAPACITY": "8"}  # not the machine's size
PASSWORD = "correct horse battery"


def ephemeral_ports() -> range:
    """The ports the kernel hands to outgoing connections: a platform must stay out of them,
    or a client's connection could take one of its ports between the check and the bind."""
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def free_port_block(size: int = 24) -> int:
    """A base port with `size` free ports above it (the platform's fixed layout). Each
    pytest-xdist worker draws from its own share of the range: two workers' platforms could
    otherwise pick overlapping blocks between the check and the bind."""
    ephemeral = ephemeral_ports()
    low, high = (10_000, ephemeral.start) if ephemeral.start > 12_000 else \
        (ephemeral.stop, 65_000)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    share = (high - low) // workers
    low += int(worker) * share
    high = low + share
    for _ in range(50):
        base = random.randrange(low, high - size)
        sockets = []
        try:
            for port in range(base, base + size):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free block of ports")


def session_processes(session_id: str) -> list[int]:
    """PIDs of live processes started for a session (their command line names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # NULs between arguments; spaces where a forked service set its title
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").split()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if b"--session" in cmdline and session_id.encode() in cmdline and \
                "State:\tZ" not in status:
            pids.append(int(entry.name))
    return pids


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("\nPPid:\t", 1)[1].split()[0])


def gone(pid: int) -> bool:
    """Whether the process has ended (a zombie not reaped yet counts as ended)."""
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def pool_children(parent: int) -> dict[int, str]:
    """A warm parent's waiting children (their title: `twinstack pool KIND`): pid -> kind."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit():
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").strip()
            if title.startswith(b"twinstack pool ") and parent_of(int(entry.name)) == parent \
                    and not gone(int(entry.name)):
                found[int(entry.name)] = title.split()[-1].decode()
        except (OSError, IndexError):
            continue
    return found


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.1, what: str = "") -> None:
    """Poll until `predicate` holds; `timeout` is a hang guard, never the thing tested."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


@dataclass
class Platform:
    data: Path
    port: int
    proc: subprocess.Popen[str]
    env: dict[str, str]
    clients: list[Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.data / "pki" / "ca.pem"

    def info(self) -> dict:
        return json.loads((self.data / "platform.json").read_text())

    def pid(self, label: str) -> int:
        """The pid of a platform service that is running now: after a restart the launcher
        rewrites platform.json only once the new process is ready, so wait for that."""
        found: list[int] = []

        def running() -> bool:
            found[:] = [self.info()["services"][label]["pid"]]
            return serves_from(found[0], self.data)
        wait_until(running, what=f"a running {label} in platform.json")
        return found[0]

    def twinstack(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "twinstack", *args, "--data-dir",
                               str(self.data)], input=stdin, text=True, capture_output=True,
                              timeout=60, env=self.env)

    def add_user(self, name: str, *, admin: bool = False) -> None:
        done = self.twinstack("user", "add", name, "--password-stdin",
                              *(["--admin"] if admin else []), stdin=PASSWORD + "\n")
        assert done.returncode == 0, done.stderr

    def client(self, user: str | None = None) -> Client:
        tw = Client(self.url, ca=self.ca)
        self.clients.append(tw)
        if user is not None:
            tw.login(user, PASSWORD)
        return tw


def start_platform(tmp: Path, *args: str, env: dict[str, str] | None = None,
                   port: int | None = None) -> Platform:
    """`twinstack up` in TMP/data on `port` (default: a free block) once it says it is up."""
    port = port or free_port_block()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TWINSTACK_")}
    full_env.update(FAST)
    full_env.update(env or {})
    proc = subprocess.Popen([sys.executable, "-m", "twinstack", "up", "--data-dir",
                             str(tmp / "data"), "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=full_env)
    lines: list[str] = []
    deadline = time.monotonic() + 90
    assert proc.stdout is not None
    while not any("TwinStack is up" in line for line in lines):
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise AssertionError("twinstack up failed:\n" + "".join(lines))
        lines.append(line)
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("twinstack up not ready:\n" + "".join(lines))
    return Platform(tmp / "data", port, proc, full_env)


def stop_platform(platform: Platform) -> None:
    try:
        for tw in platform.clients:
            tw.close()
    finally:  # the platform stops whatever a client did
        if platform.proc.poll() is None:
            platform.proc.send_signal(signal.SIGTERM)
        try:
            platform.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            platform.proc.kill()
            platform.proc.wait()


@contextlib.contextmanager
def running_platform(tmp: Path, *users: str, env: dict[str, str] | None = None
                     ) -> Iterator[Platform]:
    """A platform with these users, stopped afterwards (for module-scoped fixtures)."""
    running = start_platform(tmp, env=env)
    try:
        for name in users:
            running.add_user(name)
        yield running
    finally:
        stop_platform(running)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    running = start_platform(tmp_path)
    try:
        yield running
    finally:
        stop_platform(running)


@contextlib.contextmanager
def lss_workers(platform: Platform) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """A way to add worker LSS processes (`add(name, *flags)`) to a running platform, each
    logging to DATA/NAME.out; all are stopped at the end of the block."""
    started: list[subprocess.Popen[bytes]] = []

    def add(name: str, *extra: str) -> subprocess.Popen[bytes]:
        pki = platform.data / "pki"
        with (platform.data / f"{name}.out").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "twinstack", "serve", "lss", "--bind", "127.0.0.1:0",
                 "--health-bind", "127.0.0.1:0", "--cert", str(pki / "lss-chain.pem"),
                 "--key", str(pki / "lss-key.pem"), "--ca", str(pki / "ca.pem"),
                 "--gss-url", platform.info()["gss_url"], "--session-ca", str(pki),
                 "--logger-url", platform.info()["logger_url"],
                 "--lss-name", name, "--data-dir", str(platform.data / name), *extra],
                stdout=log, stderr=subprocess.STDOUT, env=platform.env)
        started.append(proc)
        return proc

    try:
        yield add
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=20)
