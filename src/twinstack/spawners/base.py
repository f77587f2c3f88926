"""The contract every spawner backend fulfils (after JupyterHub's Spawner, in our terms).

Life of one compute service:  start() -> endpoint  ...  poll() is None while it runs  ...
stop().  After a crash (poll() returns the exit code) the LSS may call start() again on the
same spawner: the service comes back at the same endpoint. `get_state()` is a JSON-able dict
that `load_state()` accepts in a new LSS process, so a restarted LSS can find what it started;
the LSS saves it after every start. A start that is cancelled, or fails in any way, leaves
nothing running. Any exception a method raises other than SpawnError is a fault of the backend
(an OS error, an API error); the LSS fails the session with it as the reason.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinstack.pki.tls import TlsFiles


@dataclass(frozen=True)
class ServiceSpec:
    """What to run: one compute service of one session, and how it proves who it is."""

    service: str
    session: str
    identity: TlsFiles
    workdir: Path
    logger_url: str | None = None
    gpus: int = 0
    extra_args: tuple[str, ...] = field(default=())


class SpawnError(Exception):
    """The service did not become ready; `exit_code` is None if it was still running."""

    def __init__(self, message: str, exit_code: int | None, output_tail: list[str]) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.output_tail = output_tail


class Spawner(ABC):
    def __init__(self, spec: ServiceSpec) -> None:
        self.spec = spec

    @abstractmethod
    async def start(self, timeout: float = 60.0) -> str:
        """Start the service and return its endpoint (host:port) once it is ready.

        Raises SpawnError (with the exit code and last output lines) if it exits or is not
        ready within `timeout`; nothing is left running then.
        """

    def endpoint(self) -> str | None:
        """The endpoint start() will return, where it is known before the service starts (the
        LSS then tells others where it is while it starts); None where only start() knows."""
        return None

    @abstractmethod
    def poll(self) -> int | None:
        """None while the service runs; its exit code once it has stopped (-1 when it is not
        known, e.g. an adopted service that is gone); -1 before any start."""

    @abstractmethod
    async def stop(self, grace: float = 5.0) -> None:
        """Stop the service (SIGTERM, then SIGKILL after `grace`), checking before each step
        that it is still the service this spawner started; safe to call twice."""

    @abstractmethod
    def get_state(self) -> dict[str, Any]:
        """What a new LSS process needs to find this service again (JSON-able)."""

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None:
        """Adopt a service described by get_state() of an earlier LSS process; poll() then
        says whether it still runs."""

    @abstractmethod
    def output_tail(self, lines: int = 20) -> list[str]:
        """The service's last output lines, for failure reports."""

    async def renewed(self) -> None:
        """The service's certificate files (the spec's identity) were issued anew: get them to
        it where it does not read them from the LSS's disk. A process reloads them in place
        (it watches its files): nothing to do here."""
        return None

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """Events while starting (e.g. 'pulling image'); processes start too fast for any."""
        return
        yield
