"""`twinstack up`: a whole local platform as separate processes, with a dev PKI.

It first takes an exclusive lock on DATA/twinstack.lock for its whole life, so a second launcher
on the same data directory is refused (exit 14) before it touches anything, and checks that every
port of its block is free (exit 12 naming the port). On first run it creates DATA/pki (root CA,
intermediate, one certificate per platform service and an `admin` certificate for the CLI); then
it starts each platform service with `twinstack serve`, waits until each is ready, writes
DATA/platform.json (where everything listens, for the CLI), and on Ctrl-C/SIGTERM stops them all.
The platform services die with the launcher (--parent-pid), so a killed launcher leaves no
orphans and its stale platform.json does not block the next start; the sessions' compute
services hold a lease instead, so the next `twinstack up` re-adopts them or, if it does not come
within the lease, they stop by themselves. A service that exits is restarted under the same
restart policy as compute services (twinstack.supervision, from the restart_* settings).
Everything under DATA is private to its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinstack.config import load_settings
from twinstack.exitcodes import ExitCode, FatalError
from twinstack.pki import PkiError, init_authority
from twinstack.pki.authority import CA_CERT
from twinstack.pki.identity import ensure_identity
from twinstack.pki.revocation import crl_url, refresh_crls
from twinstack.pki.tls import TlsFiles
from twinstack.store import sqlite_url
from twinstack.supervision import (
    NotReady,
    RestartCounter,
    RestartPolicy,
    read_ready_file,
    together,
    wait_ready,
)


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
FRONT_DOOR = ("gss", "auth", "relay")  # what --replicas runs several of
REPLICA_PORTS = 10  # each further replica's block, above the first replica's 24 ports


def replica_parts(number: int) -> list[Part]:
    """The front door's parts of replica `number` (2, 3, ...): public ports +0..2 of its
    block, like the first's 0..2; internal and health ports above them."""
    base = 24 + REPLICA_PORTS * (number - 2)
    return [Part(name, base + 4 + 2 * i, public=base + i) for i, name in enumerate(FRONT_DOOR)]
# Started stage by stage, each stage's services together: every service sends its records to
# the logger; relay and LSS subscribe to gss (they would retry, with back-off, if it were late).
START_STAGES = ({"logger"}, {"auth", "gss"}, {"relay", "lss"})
LOCK_FILE = "twinstack.lock"
LIVENESS_FAILURES = 3  # health checks failed in a row before a platform service is killed
PLATFORM_FILE = "platform.json"
STALE_STOP_TIMEOUT = 20.0  # how long a killed launcher's services may take to stop
MIGRATE = "import sys; from twinstack.store import Database; Database(sys.stdin.read()).migrate()"
CRL_REFRESH_SECONDS = 3600.0  # refresh_crls re-signs a CRL only when less than 4 days are left


def pki_dir(data_dir: Path) -> Path:
    return data_dir / "pki"


def admin_identity(data_dir: Path) -> TlsFiles:
    d = pki_dir(data_dir)
    return TlsFiles(d / "admin-chain.pem", d / "admin-key.pem", d / CA_CERT)


def ensure_dev_pki(data_dir: Path, hosts: list[str], crl: str | None = None) -> list[str]:
    """Create the CA if missing, re-sign CRLs that are due, and (re-)issue each platform
    identity whose host names, CRL URL or remaining validity no longer fit; keep the others.
    Returns what was (re-)issued and why."""
    d = pki_dir(data_dir)
    if not (d / CA_CERT).exists():
        init_authority(d)
    refresh_crls(d)
    issued = []
    for service in [part.name for part in PLATFORM] + ["admin"]:
        reason = ensure_identity(d, service, d / service, hosts=hosts, crl_url=crl).reissued
        if reason is not None:
            issued.append(f"{service} ({reason})")
    return issued


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with a file only its owner can read."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def make_private(data_dir: Path) -> list[Path]:
    """Take group and other access away from DATA and all in it; return what could not be.

    Earlier versions left the database, logs and session folders world-readable.
    """
    refused = []
    for root, dirs, files in os.walk(data_dir):
        for path in [Path(root), *(Path(root) / name for name in dirs + files)]:
            try:
                mode = path.lstat().st_mode
                if not stat.S_ISLNK(mode) and mode & 0o077:
                    path.chmod(stat.S_IMODE(mode) & ~0o077)
            except FileNotFoundError:
                continue
            except PermissionError:
                refused.append(path)
    return sorted(set(refused))


def read_platform_file(data_dir: Path) -> dict[str, Any] | None:
    """DATA/platform.json of a launcher that got the platform up, or None."""
    try:
        return json.loads((data_dir / PLATFORM_FILE).read_text())
    except (OSError, ValueError):
        return None


def serves_from(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a live `twinstack serve` (or serve-together) of this data directory (not
    a reused pid)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and not {b"serve", b"serve-together"}.isdisjoint(args) and \
        any(arg.startswith(str(data_dir).encode()) for arg in args)


class DataDirLock:
    """An exclusive flock on DATA/twinstack.lock: one launcher per data directory.

    The kernel drops the lock when its holder dies, however it dies, so a stale lock never blocks
    a new start; the file itself stays (deleting a lock file races with the next opener) and holds
    the holder's pid for the message a second launcher prints.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        """Hold the lock, or raise FatalError(ALREADY_RUNNING) without changing any file."""
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise FatalError(ExitCode.ALREADY_RUNNING,
                             self._running_message(holder)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def _running_message(self, holder: str) -> str:
        data_dir = self.path.parent
        info = read_platform_file(data_dir)
        if info is not None and str(info.get("pid")) == holder:
            return (f"TwinStack is already running at {info.get('url')} (pid {holder}) with data "
                    f"directory {data_dir}. Use it, stop it first (Ctrl-C in its terminal, or "
                    f"kill {holder}), or give another --data-dir.")
        return (f"TwinStack is already starting in {data_dir} (pid {holder or 'unknown'}); "
                "wait for it to print its URL, or stop it first.")

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None


def port_taken(host: str, port: int) -> bool:
    """Whether a service could not bind host:port (the same way `twinstack serve` binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return True
        raise FatalError(ExitCode.CONFIG_ERROR, f"cannot bind {host}:{port}: "
                         f"{exc.strerror or exc}") from exc
    return False


@dataclass(frozen=True)
class Member:
    """One platform service as its process runs it."""

    part: Part
    label: str  # the part's name, or NAME-N for a replica, or local-N for one of several LSS
    extra: tuple[str, ...]

    def ports(self, base: int) -> dict[int, str]:
        """The ports it binds, each with what it is for."""
        who = self.part.name if self.label == self.part.name else f"{self.part.name} {self.label}"
        ports = {base + self.part.internal: f"{who} (internal channel)",
                 base + self.part.internal + 1: f"{who} (health channel)"}
        if self.part.public is not None:
            ports[base + self.part.public] = f"{who} (public channel)"
        return ports


@dataclass
class Child:
    """One process of the platform: one service, or with --combined several (they start,
    fail and restart together)."""

    members: tuple[Member, ...]
    restarts: RestartCounter
    proc: asyncio.subprocess.Process | None = None
    addresses: dict[str, dict[str, Any]] | None = None  # each member's ready file, by label
    ready: bool = False  # its current process has written its ready files

    @property
    def label(self) -> str:
        return "+".join(member.label for member in self.members)

    def ports(self, base: int) -> dict[int, str]:
        """The ports this child binds, each with what it is for."""
        return {port: what for member in self.members
                for port, what in member.ports(base).items()}


class Platform:
    """The platform's processes: started in stages, restarted with back-off if they crash."""

    def __init__(self, data_dir: Path, host: str, port: int, *, verbose: bool = False,
                 database_url: str | None = None, lss_count: int = 1, replicas: int = 1,
                 combined: bool = False) -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        self.port = port
        self.verbose = verbose
        self.database_url = database_url or sqlite_url(self.data_dir)
        self.lock = DataDirLock(self.data_dir)
        settings = load_settings({})  # TWINSTACK_* and --config: the same knobs as the LSS's
        self.policy = RestartPolicy.from_settings(settings)
        self.ready_timeout = settings.ready_timeout_seconds
        self.liveness_seconds = settings.liveness_seconds
        if replicas > 1 and not self.database_url.startswith("postgresql"):
            raise FatalError(ExitCode.CONFIG_ERROR, f"--replicas {replicas} needs PostgreSQL "
                             "(--database-url postgresql+psycopg://...): the replicas share "
                             "their state through it; SQLite serves one")
        # Every part first (with the process it runs in), so that each child's arguments can
        # name all replicas of the others. --combined: the logger and the first replica of the
        # front door in one process, each further replica in one; each LSS on its own.
        parts = [(part, part.name, "front-1" if combined else part.name)
                 for part in PLATFORM if part.name != "lss"]
        parts += [(part, f"{part.name}-{n}", f"front-{n}" if combined else f"{part.name}-{n}")
                  for n in range(2, replicas + 1) for part in replica_parts(n)]
        for i in range(lss_count):
            label = "local" if lss_count == 1 else f"local-{i + 1}"
            parts.append((Part("lss", PARTS["lss"].internal + 2 * i), label, label))
        self.parts = [part for part, _, _ in parts]
        processes: dict[str, list[Member]] = {}
        for part, label, process in parts:
            extra = ("--lss-name", label) if part.name == "lss" else ()
            processes.setdefault(process, []).append(
                Member(part, label, (*self._arguments(part), *extra)))
        self.children = [Child(tuple(members), RestartCounter(self.policy))
                         for members in processes.values()]

    def _url(self, name: str, channel: str = "internal") -> str:
        """The service's URL; with replicas, each one's, comma-separated."""
        return ",".join(part.url(self._reachable(), self.port, channel)
                        for part in self.parts if part.name == name)

    def _front_door_origins(self) -> list[str]:
        """The origins a browser may load the page from: every name in the certificates, at
        every gss replica."""
        ports = [self.port + (part.public or 0) for part in self.parts if part.name == "gss"]
        return [f"https://{f'[{h}]' if ':' in h else h}:{port}"
                for port in ports for h in self._hosts()]

    def _hosts(self) -> list[str]:
        return sorted({self.host, socket.gethostname(), "localhost", "127.0.0.1"} - {"0.0.0.0"})

    def _reachable(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host

    def _arguments(self, part: Part) -> list[str]:
        """What each service needs to find the others."""
        args = [] if part.name == "logger" else ["--logger-url", self._url("logger")]
        if part.public is not None:
            args += ["--public-bind", f"{self.host}:{self.port + part.public}"]
        if part.name in ("auth", "gss", "lss"):  # an LSS hands it to its model services
            args += ["--database-url", self.database_url]
        if part.name == "lss":
            args += ["--blob-dir", str(self.data_dir / "blobs")]
        if part.name == "gss":
            args += ["--auth-public-url", self._url("auth", "public"),
                     "--relay-public-url", self._url("relay", "public")]
        if part.name in ("relay", "lss", "auth"):
            args += ["--gss-url", self._url("gss")]
        if part.name in ("gss", "auth", "relay"):  # the page (and its WebSockets) call them
            args += ["--web-origins", ",".join(self._front_door_origins())]
        if part.name == "lss":
            args += ["--session-ca", str(pki_dir(self.data_dir))]
        return args

    def ports(self) -> dict[int, str]:
        """Every port of the block this launcher binds, with what it is for."""
        return {port: what for child in self.children for port, what in
                child.ports(self.port).items()}

    def _check_ports(self) -> None:
        """Refuse to start (exit 12 naming the port) if any port of the block is taken."""
        ports = self.ports()
        if self.port < 1 or max(ports) > 65535:
            raise FatalError(ExitCode.CONFIG_ERROR,
                             f"--port {self.port}: TwinStack needs ports {self.port}-"
                             f"{max(ports)}, which must lie within 1-65535")
        for port, what in sorted(ports.items()):
            if port_taken(self.host, port):
                raise FatalError(ExitCode.PORT_IN_USE, self._port_message(port, what))

    def _port_message(self, port: int, what: str) -> str:
        span = max(self.ports()) - self.port
        other = next((base for base in range(self.port + 100, 65535 - span, 100)[:20]
                      if not any(port_taken(self.host, base + offset)
                                 for offset in range(span + 1))), 7500)
        return (f"port {port} on {self.host} is already in use; TwinStack needs it for {what}. "
                f"Another program (or another TwinStack) holds it: see ss -ltnp 'sport = :{port}'. "
                f"Choose another block of ports (TwinStack uses --port and the {span} above it): "
                f"make up PORT={other}   or   twinstack up --port {other}")

    def _bind_failure(self, child: Child, log: Path) -> str:
        """What to tell when a child exits with PORT_IN_USE: which port, and what to do."""
        for port, what in sorted(child.ports(self.port).items()):
            if port_taken(self.host, port):
                return self._port_message(port, what)
        listed = ", ".join(str(port) for port in sorted(child.ports(self.port)))
        return (f"{child.label} could not bind one of its ports ({listed}), taken while it "
                f"started; see {log}. Choose another block: twinstack up --port PORT")

    def _ready_file(self, member: Member) -> Path:
        return self.data_dir / "run" / f"{member.label}.ready"

    def _serve_arguments(self, member: Member) -> list[str]:
        """`twinstack serve`'s arguments for one member: where it listens, who it is."""
        name, part, d = member.part.name, member.part, pki_dir(self.data_dir)
        return [name, "--bind", f"{self.host}:{self.port + part.internal}",
                "--health-bind", f"{self.host}:{self.port + part.internal + 1}",
                "--cert", str(d / f"{name}-chain.pem"), "--key", str(d / f"{name}-key.pem"),
                "--ca", str(d / CA_CERT), "--crl-dir", str(d),
                "--data-dir", str(self.data_dir / member.label),
                "--ready-file", str(self._ready_file(member)), "--parent-pid", str(os.getpid()),
                *member.extra, *(["--verbose"] if self.verbose else [])]

    def _read_ready_files(self, child: Child) -> dict[str, dict[str, Any]] | None:
        """Every member's ready file, by label, once all are written."""
        found = {}
        for member in child.members:
            ready = read_ready_file(self._ready_file(member))
            if ready is None:
                return None
            found[member.label] = ready
        return found

    async def _spawn(self, child: Child) -> None:
        """Start the child and wait until it is ready (FatalError if it is not)."""
        run_dir = self.data_dir / "run"
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for member in child.members:
            self._ready_file(member).unlink(missing_ok=True)
        log = self.data_dir / "logs" / f"{child.label}.out"
        arguments = [self._serve_arguments(member) for member in child.members]
        cmd = [sys.executable, "-m", "twinstack", "serve", *arguments[0]]
        if len(arguments) > 1:
            spec = run_dir / f"{child.label}.json"
            write_private(spec, json.dumps(arguments))
            cmd = [sys.executable, "-m", "twinstack", "serve-together", str(spec)]
        out: int | None = None
        if not self.verbose:
            log.parent.mkdir(mode=0o700, exist_ok=True)
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        child.ready = False  # not probed until ready again
        try:
            child.proc = await asyncio.create_subprocess_exec(*cmd, stdout=out, stderr=out,
                                                              start_new_session=True)
        finally:
            if out is not None:
                os.close(out)
        proc = child.proc
        try:
            child.addresses = await wait_ready(
                lambda: self._read_ready_files(child), timeout=self.ready_timeout,
                what=child.label, exited=lambda: proc.returncode)
        except NotReady as exc:
            raise self._start_failure(child, exc, log) from exc
        except ValueError as exc:
            raise FatalError(ExitCode.INTERNAL_ERROR, f"{child.label}: {exc}") from exc
        child.ready = True
        child.restarts.started()
        print(f"  {child.label:8} ready (pid {proc.pid})", flush=True)

    def _start_failure(self, child: Child, exc: NotReady, log: Path) -> FatalError:
        """The FatalError for a child that did not become ready, with what to do about it."""
        code = exc.exit_code
        if code is None:
            return FatalError(ExitCode.DEPENDENCY_UNREACHABLE, str(exc))
        if code == ExitCode.PORT_IN_USE:
            return FatalError(ExitCode.PORT_IN_USE, self._bind_failure(child, log))
        return FatalError(ExitCode(code) if code in ExitCode._value2member_map_
                          else ExitCode.INTERNAL_ERROR, f"{exc}; see {log}")

    async def start(self) -> None:
        for issued in ensure_dev_pki(self.data_dir, self._hosts(), self._crl_url()):
            print(f"  certificate issued: {issued}", flush=True)
        await self._migrate()
        for stage in START_STAGES:
            await together(*(self._spawn(child) for child in self.children
                             if child.members[0].part.name in stage))
        self._write_platform_file()

    async def _migrate(self) -> None:
        """Bring the schema up to date once, before the services share the database; in a
        process of its own, so that the launcher never holds SQLAlchemy and Alembic (~30 MB).
        The URL goes through stdin: it may hold a password."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", MIGRATE, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate(self.database_url.encode())
        if proc.returncode != 0:
            raise FatalError(ExitCode.DEPENDENCY_UNREACHABLE, "cannot bring the database up "
                             f"to date:\n{out.decode(errors='replace')[-3000:]}")

    def _crl_url(self) -> str:
        """Where clients fetch the root's CRL: gss's public listener, by a name they can reach
        (the host name when every interface is bound; it is among the certificates' SANs)."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host
        offset = PARTS["gss"].public
        assert offset is not None
        return crl_url(host, self.port + offset)

    async def _refresh_crls(self) -> None:
        """Keep the CRLs fresh while the platform runs: services stop checking revocation when
        a CRL nears its nextUpdate, rather than refuse every peer."""
        while True:
            await asyncio.sleep(CRL_REFRESH_SECONDS)
            try:
                await asyncio.to_thread(refresh_crls, pki_dir(self.data_dir))
            except PkiError as exc:
                print(f"cannot refresh the CRLs: {exc}", file=sys.stderr, flush=True)
            except Exception as exc:  # keep trying: a missed refresh only weakens revocation
                print(f"refreshing the CRLs failed: {type(exc).__name__}: {exc}",
                      file=sys.stderr, flush=True)

    def _write_platform_file(self) -> None:
        write_private(self.data_dir / PLATFORM_FILE, json.dumps(
            {"url": self._url("gss", "public"), "logger_url": self._url("logger"),
             "auth_url": self._url("auth"), "gss_url": self._url("gss"), "pid": os.getpid(),
             "services": {label: found for c in self.children
                          for label, found in (c.addresses or {}).items()}}, indent=2))

    async def _supervise(self) -> None:
        """Restart a child that exits, with the restart policy's back-off; stop the platform
        (FatalError) once one keeps exiting past the policy's limit. Each child has its own
        task, so one waiting out its back-off does not hold up another."""
        try:
            async with asyncio.TaskGroup() as group:
                for child in self.children:
                    group.create_task(self._keep_running(child))
                    group.create_task(self._probe_liveness(child))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None  # the FatalError of the child that gave up

    async def _keep_running(self, child: Child) -> None:
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            delay = child.restarts.next_delay()
            if delay is None:
                raise FatalError(ExitCode.DEPENDENCY_UNREACHABLE,
                                 f"{child.label} keeps exiting; stopping the platform")
            print(f"{child.label} exited with {code}; restarting in {delay:g} s",
                  file=sys.stderr, flush=True)
            await asyncio.sleep(delay)
            try:
                await self._spawn(child)
            except FatalError as exc:  # it exited again: the next round counts it
                print(exc.message, file=sys.stderr, flush=True)
                continue
            self._write_platform_file()

    async def _probe_liveness(self, child: Child) -> None:
        """Kill a ready child whose /healthz (any of its services') fails LIVENESS_FAILURES
        times in a row (an essential loop has ended, or it hangs), as Kubernetes' liveness
        probe would: its exit then takes the restart path, and a killed LSS leaves its sessions
        to the next one."""
        import aiohttp

        from twinstack.pki.tls import client_context

        tls = client_context(ca=pki_dir(self.data_dir) / CA_CERT)
        timeout = aiohttp.ClientTimeout(total=self.liveness_seconds)
        failures = 0
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                await asyncio.sleep(self.liveness_seconds)
                proc, addresses = child.proc, child.addresses
                if proc is None or proc.returncode is not None or not child.ready \
                        or addresses is None:
                    failures = 0  # exited or starting: the restart path has it
                    continue
                problem = None
                for label, found in addresses.items():  # each service of the process
                    try:
                        async with http.get(f"https://{found['health']}/healthz",
                                            ssl=tls) as resp:
                            if resp.status != 200:
                                problem = f"{label}: {await resp.text()}"
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        problem = f"{label}: no answer ({type(exc).__name__})"
                failures = 0 if problem is None else failures + 1
                if failures >= LIVENESS_FAILURES and proc.returncode is None:
                    print(f"{child.label} failed its health check {failures} times in a row "
                          f"({problem}); killing it", file=sys.stderr, flush=True)
                    proc.kill()
                    failures = 0

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
            (self.data_dir / PLATFORM_FILE).unlink()

    def _prepare(self) -> None:
        """Before anything starts: own the data directory, check the ports, tidy up.

        A second launcher stops at the lock, having changed nothing.
        """
        self.lock.acquire()
        try:
            self._await_stale_services()
            self._check_ports()
            for path in make_private(self.data_dir):
                print(f"warning: cannot make {path} private (not its owner?)", file=sys.stderr)
        except BaseException:
            self.lock.release()
            raise

    def _await_stale_services(self) -> None:
        """A killed launcher left platform.json behind; its services stop by themselves
        (--parent-pid) but may still hold their ports for a moment: wait for them."""
        stale = read_platform_file(self.data_dir)
        (self.data_dir / PLATFORM_FILE).unlink(missing_ok=True)
        pids = [s.get("pid") for s in (stale or {}).get("services", {}).values()]
        alive = [pid for pid in pids if isinstance(pid, int) and
                 serves_from(pid, self.data_dir)]
        if alive:
            print(f"waiting for the services of a stopped launcher to exit (pids "
                  f"{', '.join(map(str, alive))})", flush=True)
        deadline = time.monotonic() + STALE_STOP_TIMEOUT
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in alive if serves_from(pid, self.data_dir)]

    async def run(self) -> ExitCode:
        self._prepare()
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
            refresher = asyncio.create_task(self._refresh_crls())
            await asyncio.wait([supervisor, stopper], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            refresher.cancel()
            if supervisor.done():
                supervisor.result()  # raises the FatalError that ended it
            supervisor.cancel()
            return ExitCode.OK
        finally:
            await self.stop()
            self.lock.release()
            print("TwinStack stopped.", flush=True)
