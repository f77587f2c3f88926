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
from twinstack.store import Database, sqlite_url


@dataclass(frozen=True)
class Part:
    """One platform service and its ports as offsets from --port (the front door's port)."""

    name: str
    internal: int
    public: int | None = None

    def url(self, host: str, port: int, channel: str = "internal") -> str:
        offset = self.internal if channel == "internal" else self.public
        assert offset is not None
        return f"https://{host}:{port + offset}"


# Started in this order; each also gets a health port at internal + 1.
PLATFORM = (Part("logger", 16), Part("auth", 12, public=1), Part("gss", 10, public=0),
            Part("relay", 14, public=2), Part("lss", 18))
PARTS = {part.name: part for part in PLATFORM}
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
    for service in [part.name for part in PLATFORM] + ["admin"]:
        if not (d / f"{service}-chain.pem").exists():
            issue_identity(d, service, d / service, hosts=hosts)


@dataclass
class Child:
    part: Part
    label: str  # the part's name, or local-N for one of several LSS
    extra: list[str]
    proc: asyncio.subprocess.Process | None = None
    addresses: dict[str, str] | None = None
    started_at: float = 0.0
    restarts: int = 0


class Platform:
    """The platform's processes: started in order, restarted with back-off if they crash."""

    def __init__(self, data_dir: Path, host: str, port: int, *, verbose: bool = False,
                 database_url: str | None = None, lss_count: int = 1) -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        self.port = port
        self.verbose = verbose
        self.database_url = database_url or sqlite_url(self.data_dir)
        self.children: list[Child] = []
        for part in PLATFORM:
            if part.name != "lss":
                self.children.append(Child(part, part.name, self._arguments(part)))
        for i in range(lss_count):
            lss = Part("lss", PARTS["lss"].internal + 2 * i)
            name = "local" if lss_count == 1 else f"local-{i + 1}"
            self.children.append(Child(lss, name, [*self._arguments(lss), "--lss-name", name]))

    def _url(self, name: str, channel: str = "internal") -> str:
        return PARTS[name].url(self._reachable(), self.port, channel)

    def _reachable(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host

    def _arguments(self, part: Part) -> list[str]:
        """What each service needs to find the others."""
        args = [] if part.name == "logger" else ["--logger-url", self._url("logger")]
        if part.public is not None:
            args += ["--public-bind", f"{self.host}:{self.port + part.public}"]
        if part.name in ("auth", "gss"):
            args += ["--database-url", self.database_url]
        if part.name == "gss":
            args += ["--auth-public-url", self._url("auth", "public"),
                     "--relay-public-url", self._url("relay", "public")]
        if part.name in ("relay", "lss", "auth"):
            args += ["--gss-url", self._url("gss")]
        if part.name == "lss":
            args += ["--session-ca", str(pki_dir(self.data_dir))]
        return args

    async def _spawn(self, child: Child) -> None:
        """Start the child and wait until it is ready (FatalError if it is not)."""
        name, part = child.part.name, child.part
        d = pki_dir(self.data_dir)
        ready = self.data_dir / "run" / f"{child.label}.ready"
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "twinstack", "serve", name,
               "--bind", f"{self.host}:{self.port + part.internal}",
               "--health-bind", f"{self.host}:{self.port + part.internal + 1}",
               "--cert", str(d / f"{name}-chain.pem"), "--key", str(d / f"{name}-key.pem"),
               "--ca", str(d / CA_CERT), "--data-dir", str(self.data_dir / child.label),
               "--ready-file", str(ready), *child.extra]
        if self.verbose:
            cmd.append("--verbose")
            out = None
        else:
            (self.data_dir / "logs").mkdir(exist_ok=True)
            out = (self.data_dir / "logs" / f"{child.label}.out").open("ab")
        child.proc = await asyncio.create_subprocess_exec(*cmd, stdout=out, stderr=out,
                                                          start_new_session=True)
        if out is not None:
            out.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists():
            code = child.proc.returncode
            if code is not None:
                raise FatalError(ExitCode(code) if code in ExitCode._value2member_map_
                                 else ExitCode.INTERNAL_ERROR,
                                 f"{child.label} exited with {code} while starting; see "
                                 f"{self.data_dir / 'logs' / child.label}.out")
            if time.monotonic() > deadline:
                raise FatalError(ExitCode.DEPENDENCY_UNREACHABLE,
                                 f"{child.label} not ready after {READY_TIMEOUT:g} s")
            await asyncio.sleep(0.02)
        child.addresses = json.loads(ready.read_text())
        child.started_at = time.monotonic()

    async def start(self) -> None:
        hosts = sorted({self.host, socket.gethostname(), "localhost", "127.0.0.1"} - {"0.0.0.0"})
        ensure_dev_pki(self.data_dir, hosts)
        db = Database(self.database_url)  # migrate once here, before services share it
        try:
            await asyncio.to_thread(db.migrate)
        finally:
            db.dispose()
        for child in self.children:
            await self._spawn(child)
            assert child.proc is not None
            print(f"  {child.label:8} ready (pid {child.proc.pid})", flush=True)
        self._write_platform_file()

    def _write_platform_file(self) -> None:
        (self.data_dir / "platform.json").write_text(json.dumps(
            {"url": self._url("gss", "public"), "logger_url": self._url("logger"),
             "auth_url": self._url("auth"), "gss_url": self._url("gss"), "pid": os.getpid(),
             "services": {c.label: c.addresses for c in self.children}}, indent=2))

    async def _supervise(self) -> None:
        """Restart a child that exits: 0.5 s, 1 s, 2 s ... 10 s; give up after 5 in a row."""
        while True:
            waits = {asyncio.create_task(c.proc.wait()): c for c in self.children if c.proc}
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                child = waits[task]
                if time.monotonic() - child.started_at > 60:
                    child.restarts = 0
                if child.restarts >= 5:
                    raise FatalError(ExitCode.DEPENDENCY_UNREACHABLE,
                                     f"{child.label} keeps exiting; stopping the platform")
                delay = min(0.5 * 2**child.restarts, 10.0)
                child.restarts += 1
                print(f"{child.label} exited with {task.result()}; restarting in {delay:g} s",
                      file=sys.stderr, flush=True)
                await asyncio.sleep(delay)
                try:
                    await self._spawn(child)
                except FatalError as exc:  # it exited again: the next round counts it
                    print(exc.message, file=sys.stderr, flush=True)
                    continue
                self._write_platform_file()

    async def stop(self) -> None:
        running = [c.proc for c in self.children if c.proc and c.proc.returncode is None]
        for proc in reversed(running):
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
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
            print(f"TwinStack is up at {self._url('gss', 'public')} (CA: "
                  f"{pki_dir(self.data_dir) / CA_CERT}). Add a user: twinstack user add NAME. "
                  "Logs: twinstack logs --follow. Stop with Ctrl-C.", flush=True)
            supervisor = asyncio.create_task(self._supervise())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait([supervisor, stopper], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if supervisor.done():
                supervisor.result()  # raises the FatalError that ended it
            supervisor.cancel()
            return ExitCode.OK
        finally:
            await self.stop()
            print("TwinStack stopped.", flush=True)
