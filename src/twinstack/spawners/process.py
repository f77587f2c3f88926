"""Process spawner: each compute service is a local OS process running `twinstack serve`.

The child dies with the LSS (PR_SET_PDEATHSIG via --parent-pid), writes its output to
WORKDIR/SERVICE.out and its bound addresses to a ready file. A restart reuses the first port,
so the endpoint the relay knows stays valid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import deque
from typing import Any

from twinstack.spawners.base import ServiceSpec, Spawner, SpawnError


class ProcessSpawner(Spawner):
    def __init__(self, spec: ServiceSpec, host: str = "127.0.0.1") -> None:
        super().__init__(spec)
        self.host = host
        self.port = 0
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        spec.workdir.mkdir(parents=True, exist_ok=True)
        self.output = spec.workdir / f"{spec.service}.out"
        self.ready_file = spec.workdir / f"{spec.service}.ready"

    def _command(self) -> list[str]:
        s = self.spec
        cmd = [sys.executable, "-m", "twinstack", "serve", s.service,
               "--bind", f"{self.host}:{self.port}", "--health-bind", f"{self.host}:0",
               "--cert", str(s.identity.cert), "--key", str(s.identity.key),
               "--ca", str(s.identity.ca), "--session", s.session,
               "--data-dir", str(s.workdir / "data"), "--ready-file", str(self.ready_file),
               "--parent-pid", str(os.getpid()), *s.extra_args]
        if s.logger_url:
            cmd += ["--logger-url", s.logger_url]
        return cmd

    async def start(self, timeout: float = 60.0) -> str:
        self.ready_file.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWINSTACK_")}
        with self.output.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *self._command(), stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL,
                env=env, start_new_session=True)
        self.pid = self._proc.pid
        deadline = time.monotonic() + timeout
        delay = 0.005  # poll fast at first: most of a start is the child's imports
        while not self.ready_file.exists():
            if self._proc.returncode is not None:
                raise SpawnError(f"{self.spec.service} exited with {self._proc.returncode} "
                                 "while starting", self._proc.returncode, self.output_tail())
            if time.monotonic() > deadline:
                await self.stop()
                raise SpawnError(f"{self.spec.service} not ready after {timeout:g} s", None,
                                 self.output_tail())
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.1)
        ready = json.loads(self.ready_file.read_text())
        self.port = int(ready["internal"].rsplit(":", 1)[1])
        return ready["publish"]

    def poll(self) -> int | None:
        if self._proc is not None:
            return self._proc.returncode
        if self.pid is not None and _alive(self.pid):
            return None
        return -1  # adopted and gone: its exit code died with the old LSS

    async def stop(self, grace: float = 5.0) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
                await self._proc.wait()
        elif self._proc is None and self.pid is not None and _alive(self.pid):
            await _stop_adopted(self.pid, grace)

    def get_state(self) -> dict[str, Any]:
        return {"pid": self.pid, "port": self.port}

    def load_state(self, state: dict[str, Any]) -> None:
        self.pid, self.port = state.get("pid"), int(state.get("port") or 0)

    def output_tail(self, lines: int = 20) -> list[str]:
        if not self.output.exists():
            return []
        with self.output.open(errors="replace") as f:
            return [line.rstrip("\n") for line in deque(f, maxlen=lines)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _stop_adopted(pid: int, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
