"""Compute services forked from a warm parent (`--spawner forked`), not started cold.

A fresh `twinstack serve` spends most of its start importing the platform and its numerics.
The warm parent (`python -m twinstack.spawners.forked SOCKET`, one per LSS, started with the
LSS and again by the next start after it has died) imports them once, before any thread of
its own starts, then forks a child per request on its Unix socket; copy-on-write shares the
imported pages.
The child leaves the parent's session (setsid), keeps only its output as stdout and stderr and
closes every other descriptor, and runs `twinstack serve` with the arguments a process
spawner's child gets: its certificate, session and sockets are its own, made after the fork.

With a warm pool (`--warm-pool N`), the parent also keeps N forked children of each compute
service kind waiting, session-less: each does its kind's warm-up (`ServiceBase.warm_up`,
e.g. kriging's first solve), says so, and waits on a socket of its own for a session's request.
A request for that kind goes to one of them that has warmed up, which is then no longer in the
pool (one worker, one session), and the parent forks its replacement once no request has come
for a moment (a session's other services are claimed first); with none warmed up, it forks a
child as without a pool. A waiting child exits when its socket closes: when the parent dies.

The parent reaps its children and writes each one's exit code beside its output
(SERVICE.exit), so `poll()` can say why a service ended. If the parent dies, its children go
on: the LSS is their subreaper (PR_SET_CHILD_SUBREAPER), so they become its children, and it
reaps them and learns their exit codes itself. It supervises them by pid and start time, as
it does the services an earlier LSS started. If the LSS dies, the parent ends too (its stdin, a
pipe from the LSS, closes), and its waiting children with it; the services go on until their
lease runs out or a new LSS adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from setproctitle import setproctitle

from twinstack.spawners.base import ServiceSpec
from twinstack.spawners.process import ProcessSpawner, child_environment
from twinstack.supervision import process_start_time

READY_LINE = b"warm parent ready\n"
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
MAX_REQUEST = 1 << 20
INHERITED_FD = 3  # where a child finds the listener that came with its request
WARMED = b"+"  # what a waiting child sends its parent once it has warmed up
# A claimed child is replaced once no request has come for this long: a fork (~10 ms of the
# parent's CPU, its page tables) would otherwise hold up the claims of a session's other
# services (they come 5-10 ms apart). Not much longer: the new child's warm-up (kriging's:
# ~0.13 s of CPU) would then fall on the next session's start rather than this one's end
# (0.25 s: "data analysis" pooled 96-138 ms median against 62-66 ms, measured side by side).
REFILL_QUIET_SECONDS = 0.05
REFILL_LATEST_SECONDS = 2.0  # but no later than this after the first claim, however busy
# imported once in the parent: the platform's runtime and what compute services import first
PRELOAD = ("twinstack.cli", "twinstack.wire.runtime", "twinstack.services.project", "uvloop",
           "numpy", "scipy.linalg", "scipy.spatial", "scipy.optimize")
# and where their extras are installed: what a service imports as it starts (modeling's CAD
# kernel, ~1 s of a "3D simulation" session's start)
PRELOAD_IF_INSTALLED = ("twinstack.sim.cad",)


def adopt_orphans() -> None:
    """Make this process (the LSS) the subreaper of its descendants: services whose warm
    parent died become its children, so it can reap them and learn their exit codes
    (otherwise they go to init, which in a container may never reap them)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


class WarmParent:
    """The LSS's side: one warm parent process, started again when it has died; `pool`
    waiting children of each of `kinds` (the compute services) once it runs."""

    def __init__(self, folder: Path, pool: int = 0, kinds: tuple[str, ...] = ()) -> None:
        self.folder = folder
        self.socket = folder / "warm-parent.sock"
        self.pool = pool
        self.kinds = kinds
        self.process: asyncio.subprocess.Process | None = None
        self.lock = asyncio.Lock()

    async def fork(self, service: str, argv: list[str], output: Path, env: dict[str, str],
                   listener: socket.socket) -> tuple[int, int]:
        """A child running `twinstack ARGV` (serving `service`) with its output appended to
        `output` and `listener` as descriptor INHERITED_FD: its pid, and the parent's."""
        parent = await self.start()
        request = {"service": service, "argv": argv, "output": str(output), "env": env}
        reply = await asyncio.to_thread(self._ask, request, listener.fileno())
        if "pid" not in reply:
            raise OSError(f"the warm parent did not fork: {reply.get('error', 'no answer')}")
        return int(reply["pid"]), parent

    def _ask(self, request: dict[str, Any], fd: int) -> dict[str, Any]:
        """Send one request with `fd` attached (SCM_RIGHTS: asyncio's streams cannot); the
        parent's answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(30.0)
            conn.connect(str(self.socket))
            send_line(conn, json.dumps(request).encode(), fd)
            answer: dict[str, Any] = json.loads(conn.makefile("rb").readline() or b"{}")
            return answer

    def is_running(self, pid: int | None) -> bool:
        """Whether the parent process `pid` is this one's, and runs."""
        return self.process is not None and self.process.returncode is None \
            and self.process.pid == pid

    async def start(self) -> int:
        """The parent's pid, started first if it is not running."""
        async with self.lock:
            if self.process is not None and self.process.returncode is None:
                return self.process.pid
            self.folder.mkdir(parents=True, exist_ok=True)
            self.socket.unlink(missing_ok=True)
            env = child_environment()
            with (self.folder / "warm-parent.out").open("ab") as log:
                self.process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "twinstack.spawners.forked", str(self.socket),
                    str(self.pool), ",".join(self.kinds),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=log, env=env, start_new_session=True)
            assert self.process.stdout is not None
            if await self.process.stdout.readline() != READY_LINE:
                code = await self.process.wait()
                raise OSError(f"the warm parent exited ({code}) before it was ready: see "
                              f"{self.folder / 'warm-parent.out'}")
            return self.process.pid

    async def close(self) -> None:
        """End the parent (its children, the services, go on); after a start under way."""
        async with self.lock:
            process, self.process = self.process, None
            if process is not None and process.returncode is None:
                process.terminate()
                await process.wait()


class ForkedSpawner(ProcessSpawner):
    """A process spawner whose processes come from the warm parent."""

    # ready in 20-40 ms (no imports): looks every 2-10 ms, not at 5, 12.5, 24, 41, 66 ms
    ready_polls = (0.002, 0.01)

    def __init__(self, spec: ServiceSpec, parent: WarmParent, host: str = "127.0.0.1", *,
                 lease: Path | None = None, lease_seconds: float = 20.0) -> None:
        super().__init__(spec, host, lease=lease, lease_seconds=lease_seconds)
        self.parent = parent
        self.exit_file = spec.workdir / f"{spec.service}.exit"
        self.forked_by: int | None = None  # the warm parent's pid: it writes the exit file
        self.exit_code: int | None = None  # once this process reaped it itself

    def _listener_fd(self) -> int:
        return INHERITED_FD

    async def _launch(self, env: dict[str, str]) -> None:
        self.exit_file.unlink(missing_ok=True)
        self._proc = None  # not our child: watched by pid and start time
        self.exit_code = None
        pid, self.forked_by = await self.parent.fork(self.spec.service, self._serve_args(),
                                                     self.output, env, self._listener())
        self.pid, self.started = pid, process_start_time(pid) or 0  # 0: it has ended already

    def poll(self) -> int | None:
        if self.pid is None:
            return -1
        if self.exit_code is not None:
            return self.exit_code
        if process_start_time(self.pid) == self.started:
            return None
        try:  # orphaned by a warm parent that died: the LSS, their subreaper, reaps it
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pass  # the warm parent's child still
        else:
            if pid == 0:
                return None  # ours, and still ending: not waitable yet
            self.exit_code = os.waitstatus_to_exitcode(status)
            return self.exit_code
        try:
            written_pid, code = self.exit_file.read_text().split()
        except (OSError, ValueError):
            # ended, not reaped yet (its parent writes its exit code in a moment), or adopted
            # from an earlier LSS (the code is lost: -1)
            return None if self.parent.is_running(self.forked_by) else -1
        return int(code) if int(written_pid) == self.pid else -1


# --- the warm parent process ----------------------------------------------------------------

class Pool:
    """The waiting children (the parent's side): a socket to each, by service kind."""

    def __init__(self, size: int, kinds: list[str]) -> None:
        self.size = size
        self.waiting: dict[str, list[tuple[int, socket.socket]]] = {kind: [] for kind in kinds}
        self.warmed: set[int] = set()  # the waiting children that said they are warmed up

    def fill(self, kind: str) -> None:
        """Fork waiting children of `kind` until there are `size`."""
        while len(self.waiting[kind]) < self.size:
            ours, theirs = socket.socketpair()
            pid = os.fork()
            if pid == 0:
                ours.close()
                _wait_for_a_session(kind, theirs)  # never returns
            theirs.close()
            self.waiting[kind].append((pid, ours))

    def hand_over(self, request: dict[str, Any], listener: int | None) -> int | None:
        """Give the request (and its listener) to a warmed-up waiting child of its kind, which
        leaves the pool: its pid, or None if none took it. One still warming up is passed
        over: its warm-up may yet fail (the request would be lost with it), or take longer
        than a fork."""
        waiting = self.waiting.get(request.get("service", ""), [])
        for entry in list(waiting):
            pid, link = entry
            if not self._warmed(pid, link):
                continue
            waiting.remove(entry)
            self.warmed.discard(pid)
            with link:
                try:
                    send_line(link, json.dumps(request).encode(), listener)
                except OSError:  # it died waiting (reaped below)
                    continue
            return pid
        return None

    def _warmed(self, pid: int, link: socket.socket) -> bool:
        """Whether the child has said it is warmed up (a byte on its link, read once)."""
        if pid not in self.warmed:
            with contextlib.suppress(BlockingIOError):
                if link.recv(1, socket.MSG_DONTWAIT) == WARMED:
                    self.warmed.add(pid)
        return pid in self.warmed

    def forget(self, pid: int) -> None:
        """A waiting child ended (it failed its warm-up): no longer in the pool."""
        self.warmed.discard(pid)
        for waiting in self.waiting.values():
            for entry in waiting:
                if entry[0] == pid:
                    waiting.remove(entry)
                    entry[1].close()
                    return


class Refills:
    """The kinds whose claimed children are still to be replaced, and when: once no claim has
    come for REFILL_QUIET_SECONDS (a session's services are all claimed first), and no later
    than REFILL_LATEST_SECONDS after the first of them."""

    def __init__(self) -> None:
        self.kinds: set[str] = set()
        self.first = self.last = 0.0

    def claimed(self, kind: str) -> None:
        self.last = time.monotonic()
        if not self.kinds:
            self.first = self.last
        self.kinds.add(kind)

    def wait(self) -> float | None:
        """How long until refills are due (None: none are pending)."""
        if not self.kinds:
            return None
        due = min(self.last + REFILL_QUIET_SECONDS, self.first + REFILL_LATEST_SECONDS)
        return max(0.0, due - time.monotonic())

    def due(self) -> set[str]:
        """The kinds to refill now (and forget)."""
        if self.wait() != 0.0:
            return set()
        due, self.kinds = self.kinds, set()
        return due


def serve(path: str, pool: Pool) -> None:
    """Fork a child per request (or hand it to a waiting one) until SIGTERM; reap children as
    they end."""
    for module in PRELOAD:
        importlib.import_module(module)
    for module in PRELOAD_IF_INSTALLED:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    from twinstack.cli import build_parser
    from twinstack.config import load_settings
    from twinstack.exitcodes import FatalError
    from twinstack.services import SERVICES, load_service
    from twinstack.wire.actions import declared_actions

    for name in SERVICES:
        declared_actions(load_service(name))  # imports it; its actions' type hints, cached
    build_parser()  # cached: the children parse their arguments with it
    with contextlib.suppress(FatalError):  # a bad setting: each child says so itself
        load_settings({})  # pydantic's first validation costs 4 ms more than the next
    _warm_tls()
    gc.freeze()  # the imported objects out of the collector's reach: its passes would copy
    wake_read, wake_write = socket.socketpair()
    wake_read.setblocking(False)
    wake_write.setblocking(False)
    signal.set_wakeup_fd(wake_write.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the wakeup fd
    outputs: dict[int, str] = {}
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    selector.register(0, selectors.EVENT_READ)  # the LSS's pipe, never written to
    sys.stdout.buffer.write(READY_LINE)
    sys.stdout.flush()
    for kind in pool.waiting:
        pool.fill(kind)
    refills = Refills()
    while True:
        for kind in refills.due():
            pool.fill(kind)
        for key, _ in selector.select(refills.wait()):
            if key.fileobj is wake_read:
                _drain(wake_read)
            elif key.fileobj == 0:
                if not os.read(0, 512):
                    return  # the LSS has gone (its end of the pipe closed): so do we
            else:
                conn, _ = listener.accept()
                with conn:
                    asked = _answer(conn, outputs, pool)
                if asked in pool.waiting:
                    refills.claimed(asked)
        _reap(outputs, pool)


def _warm_tls() -> None:
    """OpenSSL sets up its providers and decoders at a process's first TLS context: a child's
    first cost 3.1 ms of CPU against 1.7 ms where its parent had made one (measured). One
    throwaway server and client context here, from a throwaway CA, so children find it done."""
    from twinstack.pki import init_authority
    from twinstack.pki.identity import issue_identity
    from twinstack.pki.tls import client_context, server_context

    with tempfile.TemporaryDirectory() as folder:
        init_authority(Path(folder))
        files = issue_identity(Path(folder), "warm-up", Path(folder) / "warm-up",
                               issuer="intermediate", durable=False)
        server_context(files, require_client_cert=True)
        client_context(files)


def _drain(wake: socket.socket) -> None:
    try:
        while wake.recv(512):
            pass
    except BlockingIOError:
        pass


def _answer(conn: socket.socket, outputs: dict[int, str], pool: Pool) -> str | None:
    """Fork (or hand over) the request on `conn` and answer with the child's pid; the kind
    of service asked for."""
    conn.settimeout(5.0)
    service, listener = None, None
    try:
        data, listener = receive_line(conn)
        request = json.loads(data)
        output, service = str(request["output"]), request.get("service")
        pid = pool.hand_over(request, listener)
        if pid is None:
            pid = os.fork()
            if pid == 0:
                _new_child(request, listener)  # never returns
        outputs[pid] = output
        reply: dict[str, Any] = {"pid": pid}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        if listener is not None:
            os.close(listener)  # the child has its own
    with contextlib.suppress(OSError):  # the LSS gave up meanwhile: not the parent's end
        conn.sendall(json.dumps(reply).encode() + b"\n")
    return service if isinstance(service, str) else None


def _leave_the_parent() -> None:
    """In a new child: a session of its own, default signal handling."""
    os.setsid()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _new_child(request: dict[str, Any], listener: int | None) -> None:
    try:
        _leave_the_parent()
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    _child(request, listener)


def _wait_for_a_session(kind: str, link: socket.socket) -> None:
    """A waiting child: warm up, then run the request the parent sends on `link`; exit when
    the parent closes it instead (or has died)."""
    try:
        _leave_the_parent()
        setproctitle(f"twinstack warming {kind}")
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)  # not the LSS's pipe from the parent; stderr: the parent's log
        keep = link.fileno()
        os.closerange(3, keep)  # the parent's listener, wake-up pipe, other children's links
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
        from twinstack.services import load_service

        load_service(kind).warm_up()
        _rehearse(kind)
        link.sendall(WARMED)  # before the title: one that shows it can be claimed
        setproctitle(f"twinstack pool {kind}")  # what ps shows until a session claims it
        data, listener = receive_line(link)
        link.close()
        request = json.loads(data) if data else None
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    if request is None:  # the parent closed the link, or died: no session came
        os._exit(0)
    _child(request, listener)


def _rehearse(kind: str) -> None:
    """Parse a service's arguments and validate its settings once, before a session claims
    this child: the pages that writes to are then copied already, not as its start runs."""
    from twinstack.cli import build_parser
    from twinstack.config import load_settings

    load_settings(vars(build_parser().parse_args(["serve", kind])))


def send_line(conn: socket.socket, data: bytes, fd: int | None) -> None:
    """`data` and a newline on `conn`, with descriptor `fd` attached to its first bytes."""
    line = data + b"\n"
    sent = socket.send_fds(conn, [line], [fd]) if fd is not None else 0
    if sent < len(line):  # not an empty send: the peer may have answered and closed (EPIPE)
        conn.sendall(line[sent:])


def receive_line(conn: socket.socket) -> tuple[bytes, int | None]:
    """One line from `conn` (up to MAX_REQUEST bytes), or b"" if it closes first, and the
    descriptor that came with it, if one did (any more are closed)."""
    data, fds = b"", []
    while not data.endswith(b"\n"):
        chunk, received, _, _ = socket.recv_fds(conn, 65536, 4)
        fds += received
        if not chunk:
            data = b""
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            for fd in fds:
                os.close(fd)
            raise ValueError(f"a request over {MAX_REQUEST} bytes")
    for fd in fds[1:]:
        os.close(fd)
    return data, (fds[0] if fds else None)


def _child(request: dict[str, Any], listener: int | None) -> None:
    """Become the service: its output as stdout and stderr, its listener (if one came) as
    INHERITED_FD, nothing else of the parent's open, its environment, `twinstack ARGV`."""
    code = 1
    try:
        output = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        if listener is not None and listener != INHERITED_FD:
            os.dup2(listener, INHERITED_FD)
        # the parent's sockets stay there
        os.closerange(3 if listener is None else INHERITED_FD + 1, os.sysconf("SC_OPEN_MAX"))
        sys.argv = ["twinstack", *request["argv"]]
        setproctitle(" ".join(sys.argv))  # what ps shows; before environ changes, which it uses
        os.environ.clear()
        os.environ.update(request["env"])
        from twinstack.cli import run

        code = run(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(outputs: dict[int, str], pool: Pool) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        pool.forget(pid)
        output = outputs.pop(pid, None)
        if output is not None:
            exit_file = Path(output).with_suffix(".exit")
            with contextlib.suppress(FileNotFoundError):  # its session has ended: none asks
                exit_file.write_text(f"{pid} {os.waitstatus_to_exitcode(status)}\n")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(sys.argv[1], Pool(int(sys.argv[2]), [k for k in sys.argv[3].split(",") if k]))
