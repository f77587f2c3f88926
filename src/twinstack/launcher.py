"""`twinstack up`: a whole local platform as separate processes, with a dev PKI.

On first run it creates DATA/pki (root CA, intermediate, one certificate per platform service and
an `admin` certificate for the CLI); then it starts each platform service with `twinstack serve`,
waits until each is ready, writes DATA/platform.json (where everything listens, for the CLI), and
on Ctrl-C/SIGTERM stops them all. If a platform service dies, the platform stops with its code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from twinstack.exitcodes import ExitCode, FatalError
from twinstack.pki import init_authority
from twinstack.pki.authority import CA_CERT
from twinstack.pki.identity import issue_identity
from twinstack.pki.tls import TlsFiles

# Started in this order: (service, offset): internal port = PORT + offset, health = that + 1.
PLATFORM: tuple[tuple[str, int], ...] = (("logger", 10),)
READY_TIMEOUT = 60.0


def pki_dir(data_dir: Path) -> Path:
    return data_dir / "pki"


def admin_identity(data_dir: Path) -> TlsFiles:
    d = pki_dir(data_dir)
    return TlsFiles(d / "admin-chain.pem", d / "admin-key.pem", d / CA_CERT)


def ensure_dev_pki(data_dir: Path, hosts: list[str]) -> None:
    """Create the CA and every platform identity that is missing; keep what exists."""
    d = pki_dir(data_dir)
    if not (d / CA_CERT).exists():
        init_authority(d)
    for service in [name for name, _ in PLATFORM] + ["admin"]:
        if not (d / f"{service}-chain.pem").exists():
            issue_identity(d, service, d / service, hosts=hosts)


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    ready_file: Path
    addresses: dict[str, str] | None = None


class Platform:
    def __init__(self, data_dir: Path, host: str, port: int, verbose: bool = False) -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        self.port = port
        self.verbose = verbose
        self.children: list[Child] = []

    async def _spawn(self, name: str, offset: int, extra: list[str]) -> Child:
        d = pki_dir(self.data_dir)
        run_dir = self.data_dir / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        ready = run_dir / f"{name}.ready"
        ready.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "twinstack", "serve", name,
               "--bind", f"{self.host}:{self.port + offset}",
               "--health-bind", f"{self.host}:{self.port + offset + 1}",
               "--cert", str(d / f"{name}-chain.pem"), "--key", str(d / f"{name}-key.pem"),
               "--ca", str(d / CA_CERT), "--data-dir", str(self.data_dir / name),
               "--ready-file", str(ready), *extra]
        if self.verbose:
            cmd.append("--verbose")
            out = None
        else:
            (self.data_dir / "logs").mkdir(exist_ok=True)
            out = (self.data_dir / "logs" / f"{name}.out").open("ab")
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=out, stderr=out,
                                                    start_new_session=True)
        if out is not None:
            out.close()
        child = Child(name, proc, ready)
        self.children.append(child)
        return child

    async def _wait_ready(self, child: Child) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not child.ready_file.exists():
            if child.proc.returncode is not None:
                raise FatalError(ExitCode(child.proc.returncode) if child.proc.returncode in
                                 ExitCode._value2member_map_ else ExitCode.INTERNAL_ERROR,
                                 f"{child.name} exited with {child.proc.returncode} while "
                                 f"starting; see {self.data_dir / 'logs' / child.name}.out")
            if time.monotonic() > deadline:
                raise FatalError(ExitCode.DEPENDENCY_UNREACHABLE,
                                 f"{child.name} not ready after {READY_TIMEOUT:g} s")
            await asyncio.sleep(0.02)
        child.addresses = json.loads(child.ready_file.read_text())

    async def start(self) -> None:
        hosts = sorted({self.host, socket.gethostname(), "localhost", "127.0.0.1"} - {"0.0.0.0"})
        ensure_dev_pki(self.data_dir, hosts)
        logger_url = f"https://{self._reachable()}:{self.port + PLATFORM[0][1]}"
        for name, offset in PLATFORM:
            extra = [] if name == "logger" else ["--logger-url", logger_url]
            child = await self._spawn(name, offset, extra)
            await self._wait_ready(child)
            print(f"  {name:8} ready on {child.addresses['internal']} "  # type: ignore[index]
                  f"(pid {child.proc.pid})", flush=True)
        (self.data_dir / "platform.json").write_text(json.dumps(
            {"logger_url": logger_url, "pid": os.getpid(),
             "services": {c.name: c.addresses for c in self.children}}, indent=2))

    def _reachable(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host

    async def stop(self) -> None:
        for child in self.children:
            if child.proc.returncode is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                await asyncio.wait_for(child.proc.wait(), 10)
            except TimeoutError:
                child.proc.kill()
                await child.proc.wait()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "platform.json").unlink()

    async def run(self) -> ExitCode:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            print(f"starting TwinStack in {self.data_dir}", flush=True)
            await self.start()
            print("TwinStack is up. Logs: twinstack logs --follow. Stop with Ctrl-C.", flush=True)
            waits = [asyncio.create_task(c.proc.wait()) for c in self.children]
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait([*waits, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in [*waits, stopper]:
                task.cancel()
            for child in self.children:
                if child.proc.returncode is not None:
                    print(f"{child.name} exited with {child.proc.returncode}; stopping",
                          file=sys.stderr)
                    return ExitCode.DEPENDENCY_UNREACHABLE
            return ExitCode.OK
        finally:
            await self.stop()
            print("TwinStack stopped.", flush=True)
