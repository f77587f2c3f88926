"""Shared fixtures: a real PKI on disk and real `twinstack serve` processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from tests import ci_skips
from twinstack.pki import init_authority
from twinstack.pki.identity import issue_identity
from twinstack.pki.tls import TlsFiles


def pytest_configure(config: pytest.Config) -> None:
    ci_skips.register(config)  # under CI=true a skipped test fails the run


class Pki:
    """A root CA and intermediate on disk, issuing identities for tests."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        init_authority(directory)
        self.ca = directory / "ca.pem"

    def identity(self, cn: str, *, session: str | None = None, issuer: str = "root",
                 name: str | None = None, not_before: datetime | None = None,
                 not_after: datetime | None = None) -> TlsFiles:
        prefix = self.dir / (name or (cn if session is None else f"{cn}-{session}"))
        return issue_identity(self.dir, cn, prefix, session=session, issuer=issuer,  # type: ignore[arg-type]
                              not_before=not_before, not_after=not_after)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """An unrelated CA: its certificates must be refused everywhere."""
    return Pki(tmp_path_factory.mktemp("other-pki"))


def served_certificate(address: str, peer: TlsFiles) -> bytes:
    """The certificate the mutual-TLS listener at `address` (host:port) presents to `peer`
    (DER)."""
    from twinstack.pki.tls import client_context

    host, port = address.rsplit(":", 1)
    context = client_context(peer)
    context.check_hostname = False
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw) as conn:
        served = conn.getpeercert(binary_form=True)
    assert served is not None
    return served


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServiceProcess:
    name: str
    proc: subprocess.Popen[bytes]
    output: Path
    addresses: dict[str, str]

    def url(self, channel: str = "internal") -> str:
        return f"https://{self.addresses[channel]}"

    def log_lines(self) -> list[str]:
        return self.output.read_text(errors="replace").splitlines()


class Services:
    """Starts `twinstack serve` processes and ends every one of them (by PID) afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(self, service: str, identity: TlsFiles | None, *args: str,
              env: dict[str, str] | None = None, preexec: Callable[[], None] | None = None
              ) -> tuple[subprocess.Popen[bytes], Path, Path]:
        label = f"{service}-{len(self.started)}"
        ready = self.tmp / f"{label}.ready"
        output = self.tmp / f"{label}.out"
        cmd = [sys.executable, "-m", "twinstack", "serve", service,
               "--bind", "127.0.0.1:0", "--health-bind", "127.0.0.1:0",
               "--ready-file", str(ready), "--data-dir", str(self.tmp / f"{label}-data")]
        if identity is not None:
            cmd += ["--cert", str(identity.cert), "--key", str(identity.key),
                    "--ca", str(identity.ca)]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TWINSTACK_")}
        full_env.update(env or {})
        with output.open("wb") as out:
            proc = subprocess.Popen([*cmd, *args], stdout=out, stderr=subprocess.STDOUT,
                                    env=full_env, preexec_fn=preexec)
        self.started.append(proc)
        return proc, ready, output

    def start(self, service: str, identity: TlsFiles, *args: str, timeout: float = 60.0,
              env: dict[str, str] | None = None, preexec: Callable[[], None] | None = None
              ) -> ServiceProcess:
        proc, ready, output = self.spawn(service, identity, *args, env=env, preexec=preexec)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None:
                raise AssertionError(f"{service} exited with {proc.returncode}:\n"
                                     f"{output.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{service} not ready after {timeout} s:\n"
                                     f"{output.read_text(errors='replace')}")
            time.sleep(0.02)
        return ServiceProcess(service, proc, output, json.loads(ready.read_text()))

    def run_to_exit(self, service: str, identity: TlsFiles | None, *args: str,
                    env: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, str]:
        """Run a service that is expected to stop by itself; return its exit code and output.

        `timeout` (like `start`'s) is a hang guard, generous for a loaded machine."""
        proc, _, output = self.spawn(service, identity, *args, env=env)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{service} still running after {timeout} s") from exc
        return code, output.read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    running = Services(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


# Fixtures defined in their own modules, available to every test.
from tests.platform_fixtures import platform  # noqa: E402, F401
from tests.store_fixtures import database_url, db, postgres_server_url, postgres_url  # noqa: E402, F401
