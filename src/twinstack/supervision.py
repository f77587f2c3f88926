"""What the launcher and the LSS share to supervise processes: one restart policy and one
readiness wait, both built from settings so the two never drift apart again.

A process that exits is restarted after `backoff`, `2·backoff`, `4·backoff` … capped at
`backoff_max`; after `limit` restarts in a row its supervisor gives up; a process that stayed up
`reset_after` seconds starts counting from zero again (the thesis's Kubernetes rule, faster).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from twinstack.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RestartPolicy:
    backoff: float = 0.5
    backoff_max: float = 30.0
    limit: int = 5
    reset_after: float = 60.0

    @classmethod
    def from_settings(cls, s: Settings) -> RestartPolicy:
        return cls(s.restart_backoff, s.restart_backoff_max, s.restart_limit,
                   s.restart_reset_seconds)

    def delay(self, restarts: int) -> float:
        """The wait before restart number `restarts + 1`."""
        return min(self.backoff * 2 ** restarts, self.backoff_max)


@dataclass
class RestartCounter:
    """One supervised process's restarts in a row under a policy."""

    policy: RestartPolicy
    count: int = 0
    started_at: float = field(default_factory=time.monotonic)

    def started(self) -> None:
        self.started_at = time.monotonic()

    def next_delay(self) -> float | None:
        """After an exit: how long to wait before starting again, or None to give up."""
        if time.monotonic() - self.started_at > self.policy.reset_after:
            self.count = 0
        if self.count >= self.policy.limit:
            return None
        delay = self.policy.delay(self.count)
        self.count += 1
        return delay


class NotReady(Exception):
    """A process did not become ready: it exited (`exit_code` set) or the deadline passed."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


async def wait_ready(check: Callable[[], T | Awaitable[T | None] | None], *, timeout: float,
                     what: str, exited: Callable[[], int | None] = lambda: None,
                     first: float = 0.005, longest: float = 0.1) -> T:
    """Poll `check` (a function, or a coroutine function: a probe over the network) until it
    returns something, fast at first (most of a start is imports), then every `longest`
    seconds; raise NotReady as soon as `exited` gives an exit code, or once `timeout` has
    passed."""
    deadline = time.monotonic() + timeout
    delay = first
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found is not None:
            return found
        code = exited()
        if code is not None:
            raise NotReady(f"{what} exited with {code} while starting", code)
        if time.monotonic() > deadline:
            raise NotReady(f"{what} not ready after {timeout:g} s")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, longest)


def read_ready_file(path: Path) -> dict[str, Any] | None:
    """The addresses a service wrote once ready, or None while the file is absent.

    The service replaces it atomically, so a file that does not parse is a fault (ValueError),
    not a half-written file to wait for.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    ready = json.loads(text)
    if not isinstance(ready, dict) or not isinstance(ready.get("publish"), str):
        raise ValueError(f"ready file {path.name} does not name the service's address")
    return ready


async def renew_leases(paths: Callable[[], Iterable[Path]], seconds: float) -> None:
    """Touch every lease file `paths()` names, `seconds`/4 apart, so the processes holding
    them keep running. One that cannot be touched (its folder is not there yet, or gone) is
    skipped: its holders stop, the others go on."""
    while True:
        for path in paths():
            try:
                path.touch(exist_ok=True)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot renew lease %s: %s", path, exc)
        await asyncio.sleep(seconds / 4)


def lease_age(path: Path) -> float | None:
    """Seconds since the lease was renewed, or None if it is gone."""
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except FileNotFoundError:
        return None


async def hold_lease(path: Path, seconds: float, expired: Callable[[str], None]) -> None:
    """Call `expired` once the lease file is gone or older than `seconds`: whoever renewed it
    (the LSS) has been away too long, so nobody supervises us any more."""
    while True:
        age = lease_age(path)
        if age is None or age > seconds:
            expired(f"lease {path} " + ("is gone" if age is None else f"not renewed for "
                                         f"{age:.0f} s (lease {seconds:g} s)"))
            return
        await asyncio.sleep(min(1.0, seconds / 4))


def process_start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot, /proc/PID/stat field 22), or None if there
    is no such live process. With the pid it names one process for good: a pid is reused,
    the pair never is."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def send_signal(pid: int, started: int | None, sig: int) -> bool:
    """Signal `pid` only if it is still the process that started at `started`; whether it
    was sent."""
    if started is None or process_start_time(pid) != started:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
        return True
    return False


async def together(*jobs: Coroutine[Any, Any, None]) -> None:
    """Run `jobs` as one TaskGroup: the first to fail cancels the others (and waits for them
    to wind down), then its exception is raised as it is, not wrapped in a group."""
    try:
        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(job)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
