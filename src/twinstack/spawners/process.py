"""Process spawner: each compute service is a local OS process running `twinstack serve`.

The child holds a lease (--lease-file) that the LSS renews: it outlives a restart of its LSS,
which re-adopts it from get_state() (pid and /proc start time), but stops itself when the LSS
is gone for longer than the lease. It writes its output to WORKDIR/SERVICE.out and its bound
addresses to a ready file. Every signal is sent only after /proc confirms the pid is still our
process.

The spawner binds the service's internal listener itself and hands it to the process
(--bind-fd), so its endpoint is known before it starts (a session's model service and the
services that are told where it is start together). Once the service is ready the spawner
closes its own copy: a service that is down refuses connections at once (the relay says so)
instead of leaving them to hang in a backlog nobody reads. A restart binds the same port again,
so the endpoint the relay knows stays valid.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections import deque
from pathlib import Path
from typing import Any

from twinstack.config import join_host_port, published_address
from twinstack.spawners.base import ServiceSpec, Spawner, SpawnError
from twinstack.supervision import (
    NotReady,
    process_start_time,
    read_ready_file,
    send_signal,
    wait_ready,
)


def child_environment() -> dict[str, str]:
    """This process's environment without its TWINSTACK_* settings: a compute service takes
    its settings from its flags alone."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TWINSTACK_")}


class ProcessSpawner(Spawner):
    ready_polls = (0.005, 0.1)  # the first and the longest wait between looks for ready

    def __init__(self, spec: ServiceSpec, host: str = "127.0.0.1", *,
                 lease: Path | None = None, lease_seconds: float = 20.0) -> None:
        super().__init__(spec)
        self.host = host
        self.lease = lease
        self.lease_seconds = lease_seconds
        self.port = 0  # the internal listener's, once bound: a restart binds it again
        self._listening: socket.socket | None = None
        self.pid: int | None = None
        self.started: int | None = None  # /proc start time of pid: the two name one process
        self._proc: asyncio.subprocess.Process | None = None
        spec.workdir.mkdir(parents=True, exist_ok=True)
        self.output = spec.workdir / f"{spec.service}.out"
        self.ready_file = spec.workdir / f"{spec.service}.ready"

    def endpoint(self) -> str:
        return published_address(self.host, self._listener().getsockname()[1])

    def _listener(self) -> socket.socket:
        """The service's internal listener, bound (to the port it had, if any) on first use."""
        if self._listening is None:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            try:
                self._listening = socket.create_server((self.host, self.port), family=family,
                                                       backlog=512)
            except OSError as exc:
                why = os.strerror(exc.errno) if exc.errno else str(exc)
                raise SpawnError(f"cannot bind {join_host_port(self.host, self.port)} for "
                                 f"{self.spec.service}: {why}", None, []) from exc
            self.port = self._listening.getsockname()[1]
        return self._listening

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "twinstack", *self._serve_args()]

    def _listener_fd(self) -> int:
        """The descriptor the child finds its internal listener at."""
        return self._listener().fileno()

    def _serve_args(self) -> list[str]:
        """`twinstack serve SERVICE` and its flags: the service's identity, session, sockets."""
        s = self.spec
        # --publish: the inherited socket knows only its address; peers dial the name the
        # service's certificate holds (spawn_host: "lss" in compose, not the container's IP)
        cmd = ["serve", s.service, "--bind-fd", str(self._listener_fd()),
               "--publish", self.endpoint(), "--health-bind", f"{self.host}:0",
               "--cert", str(s.identity.cert), "--key", str(s.identity.key),
               "--ca", str(s.identity.ca), "--session", s.session,
               "--data-dir", str(s.workdir / "data"), "--ready-file", str(self.ready_file)]
        if self.lease is not None:
            cmd += ["--lease-file", str(self.lease), "--lease-seconds", f"{self.lease_seconds:g}"]
        else:
            cmd += ["--parent-pid", str(os.getpid())]
        if s.logger_url:
            cmd += ["--logger-url", s.logger_url]
        return [*cmd, *s.extra_args]

    async def _launch(self, env: dict[str, str]) -> None:
        """Start the process (setting pid and started)."""
        with self.output.open("ab") as out:
            proc = self._proc = await asyncio.create_subprocess_exec(
                *self._command(), stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL,
                env=env, start_new_session=True, pass_fds=(self._listener_fd(),))
        self.pid, self.started = proc.pid, process_start_time(proc.pid)

    async def start(self, timeout: float = 60.0) -> str:
        self.ready_file.unlink(missing_ok=True)
        await self._launch(child_environment())
        try:
            first, longest = self.ready_polls
            ready = await wait_ready(lambda: read_ready_file(self.ready_file), timeout=timeout,
                                     what=self.spec.service, exited=self.poll, first=first,
                                     longest=longest)
        except NotReady as exc:
            await self.stop()
            raise SpawnError(str(exc), exc.exit_code, self.output_tail()) from exc
        except BaseException:  # cancelled, or a bad ready file: leave nothing running
            await self.stop()
            raise
        self._close_listener()  # the service holds it now
        return str(ready["publish"])

    def poll(self) -> int | None:
        if self._proc is not None:
            return self._proc.returncode
        if self.pid is not None and process_start_time(self.pid) == self.started:
            return None
        return -1  # adopted and gone (its exit code died with the old LSS), or never started

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, wait up to `grace`, SIGKILL; each signal only to our own process (and the
        listener closed, if it was bound for a start that did not finish)."""
        try:
            await self._end_process(grace)
        finally:
            self._close_listener()

    def _close_listener(self) -> None:
        if self._listening is not None:
            self._listening.close()
            self._listening = None

    async def _end_process(self, grace: float) -> None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if self.pid is None or self.poll() is not None:
                return
            if not send_signal(self.pid, self.started, sig):
                return
            if self._proc is not None:
                try:
                    await asyncio.wait_for(self._proc.wait(), wait)
                    return
                except TimeoutError:
                    continue
            try:
                await wait_ready(lambda: True if self.poll() is not None else None,
                                 timeout=wait, what=self.spec.service)
                return
            except NotReady:
                continue

    def get_state(self) -> dict[str, Any]:
        return {"pid": self.pid, "started": self.started, "port": self.port}

    def load_state(self, state: dict[str, Any]) -> None:
        self._proc = None
        self.pid, self.started = state.get("pid"), state.get("started")
        self.port = int(state.get("port") or 0)

    def output_tail(self, lines: int = 20) -> list[str]:
        if not self.output.exists():
            return []
        with self.output.open(errors="replace") as f:
            return [line.rstrip("\n") for line in deque(f, maxlen=lines)]
