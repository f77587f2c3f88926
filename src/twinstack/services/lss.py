"""The local session service: runs the compute services of sessions on one worker machine.

It dials *out* to the GSS over one mutual-TLS WebSocket (so it works behind NAT), receives
start/stop commands as events of its `lss_attach` stream, and reports heartbeats and session
progress as calls on the same socket. Each compute service gets a short-lived certificate signed
by the LSS's intermediate CA and is started through a spawner backend; one that exits is
restarted with exponential back-off, and past the restart limit its session fails with the exit
code and the last output lines.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from twinstack.exitcodes import ExitCode, FatalError
from twinstack.pki.identity import issue_identity
from twinstack.pki.tls import TlsFiles
from twinstack.spawners import ServiceSpec, Spawner, SpawnError
from twinstack.spawners.process import ProcessSpawner
from twinstack.wire.client import ClientPool, Link, ServiceClient
from twinstack.wire.errors import ActionError
from twinstack.wire.runtime import Ports, ServiceBase

log = logging.getLogger(__name__)

GPU_SERVICES = frozenset({"fit-td"})  # solver services that get the LSS's GPUs
CERT_DAYS = 1.0  # compute services' certificates; renewed at half-life, reloaded in place


def machine_load() -> dict[str, float]:
    """CPU (1-min load per core) and memory in use, both as fractions."""
    cpu = os.getloadavg()[0] / (os.cpu_count() or 1)
    info: dict[str, int] = {}
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0])
    total, available = info.get("MemTotal", 0), info.get("MemAvailable", 0)
    return {"cpu": round(cpu, 3), "memory": round(1 - available / total, 3) if total else 0.0}


@dataclass
class Supervised:
    """One compute service and what the supervisor remembers of it."""

    spawner: Spawner
    certified_at: float = 0.0
    endpoint: str = ""
    started_at: float = 0.0
    restarts: int = 0
    stopping: bool = False


@dataclass
class SessionRunner:
    lss: LssService
    session: str
    services: list[str]
    children: dict[str, Supervised] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    @property
    def workdir(self) -> Path:
        return self.lss.sessions_dir / self.session

    def _certify(self, service: str) -> TlsFiles:
        """Issue (or renew) the service's certificate: CN service, OU session:<id>."""
        s = self.lss.settings
        assert s.session_ca is not None and s.ca is not None
        workdir = self.workdir / service
        workdir.mkdir(parents=True, exist_ok=True)
        issued = issue_identity(s.session_ca, service, workdir / "identity",
                                session=self.session,
                                hosts=self.lss.service_hosts(self.session, service),
                                issuer="intermediate", days=CERT_DAYS)
        return TlsFiles(issued.cert, issued.key, s.ca)

    def _spawner(self, service: str) -> Spawner:
        s = self.lss.settings
        spec = ServiceSpec(service=service, session=self.session,
                           identity=self._certify(service), workdir=self.workdir / service,
                           logger_url=s.logger_url, gpus=s.gpus if service in GPU_SERVICES else 0)
        return self.lss.spawner_for(spec)

    async def run(self) -> None:
        try:
            await asyncio.gather(*(self._start(name) for name in self.services))
        except SpawnError as exc:
            await self._fail(exc.args[0], exc.exit_code, exc.output_tail)
            return
        via = {"via": "lss"} if self.lss.settings.tunnel else {}
        self.lss.report(self.session, "ready", services={
            name: {"endpoint": child.endpoint, **via} for name, child in self.children.items()})
        await self._supervise()

    async def _start(self, service: str) -> None:
        self.lss.report(self.session, "spawning", service=service)
        spawner = await asyncio.to_thread(self._spawner, service)
        child = self.children[service] = Supervised(spawner, certified_at=time.time())
        child.endpoint = await spawner.start()
        child.started_at = time.monotonic()
        self.lss.report(self.session, "service_ready", service=service, endpoint=child.endpoint)

    async def _supervise(self) -> None:
        s = self.lss.settings
        while True:
            await asyncio.sleep(0.1)
            for name, child in self.children.items():
                if time.time() - child.certified_at > CERT_DAYS * 86400 / 2:
                    await asyncio.to_thread(self._certify, name)
                    child.certified_at = time.time()
                code = child.spawner.poll()
                if code is None or child.stopping:
                    continue
                if time.monotonic() - child.started_at > s.restart_reset_seconds:
                    child.restarts = 0
                if child.restarts >= s.restart_limit:
                    await self._fail(f"{name} exited with {code} after {child.restarts} "
                                     "restarts", code, child.spawner.output_tail())
                    return
                delay = min(s.restart_backoff * 2**child.restarts, s.restart_backoff_max)
                child.restarts += 1
                log.warning("%s of session %s exited with %s; restart %d in %.1f s", name,
                            self.session, code, child.restarts, delay)
                self.lss.report(self.session, "restarting", service=name, exit_code=code,
                                restart=child.restarts, delay=delay)
                await asyncio.sleep(delay)
                try:
                    await child.spawner.start()
                except SpawnError as exc:
                    log.warning("restart of %s failed: %s", name, exc)
                    continue  # counted: the next poll sees it stopped again
                child.started_at = time.monotonic()
                self.lss.report(self.session, "restarted", service=name, restart=child.restarts)

    async def _fail(self, reason: str, exit_code: int | None, tail: list[str]) -> None:
        log.error("session %s failed: %s", self.session, reason)
        await self._stop_children()
        self.lss.report(self.session, "failed", reason=reason, exit_code=exit_code,
                        output=tail)
        self.lss.forget(self.session)

    async def _stop_children(self) -> None:
        for child in self.children.values():
            child.stopping = True
        await asyncio.gather(*(c.spawner.stop() for c in self.children.values()))

    async def stop(self) -> None:
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self._stop_children()
        await self.lss.session_closed(self.session)
        shutil.rmtree(self.workdir, ignore_errors=True)  # keys of the session go with it


class LssService(ServiceBase):
    name: ClassVar[str] = "lss"
    ports: ClassVar[Ports] = Ports(internal=7420, health=7421)

    async def start(self) -> None:
        s = self.settings
        if s.gss_url is None:
            raise FatalError(ExitCode.CONFIG_ERROR, "the LSS needs --gss-url")
        if s.session_ca is None or not (s.session_ca / "intermediate-key.pem").exists():
            raise FatalError(ExitCode.CERTIFICATE_ERROR,
                             "the LSS needs --session-ca, a directory with intermediate.pem "
                             "and intermediate-key.pem")
        self.lss_name = s.lss_name or socket.gethostname()
        self.sessions_dir = Path(s.data_dir) / "sessions"
        self.sessions_dir.mkdir(parents=True, exist_ok=True)
        self.runners: dict[str, SessionRunner] = {}
        self.outbox: collections.deque[dict[str, Any]] = collections.deque()
        self.outbox_filled = asyncio.Event()
        self.gss = ServiceClient(s.gss_url, self.runtime.tls.client(), timeout=10)
        self.attached = asyncio.Event()
        self.link: Link | None = None
        self.compute = ClientPool(self.runtime.tls.client())  # for tunnelled calls
        self.tunnelled: set[asyncio.Task[None]] = set()
        self.kube: Any = None
        if s.spawner == "kubernetes":
            await self._connect_kubernetes()
        self.control = asyncio.create_task(self._control())

    async def _connect_kubernetes(self) -> None:
        """In-cluster API access, one shared pod watch, and cleanup of a previous run."""
        from kubernetes_asyncio import client, config

        from twinstack.spawners import kubernetes

        try:
            config.load_incluster_config()
        except config.ConfigException as exc:
            raise FatalError(ExitCode.CONFIG_ERROR,
                             f"--spawner kubernetes needs to run in a cluster: {exc}") from exc
        self.pod_settings = kubernetes.PodSettings(self.settings.namespace,
                                                   self.settings.compute_image, self.lss_name)
        self.kube = client.CoreV1Api(client.ApiClient())
        self.reflector = kubernetes.PodReflector(self.pod_settings)
        self.watch = asyncio.create_task(self.reflector.run(self.kube))
        removed = await kubernetes.remove_orphans(self.kube, self.pod_settings, keep=set())
        log.info("kubernetes spawner ready; removed %d objects of earlier sessions", removed)

    def service_hosts(self, session: str, service: str) -> list[str]:
        """The names a compute service is dialled at, for its certificate."""
        if self.kube is None:
            return [self.settings.spawn_host]
        from twinstack.spawners.kubernetes import pod_host

        return [pod_host(self.pod_settings, session, service)]

    def spawner_for(self, spec: ServiceSpec) -> Spawner:
        if self.kube is None:
            return ProcessSpawner(spec, host=self.settings.spawn_host)
        from twinstack.spawners.kubernetes import KubernetesSpawner

        return KubernetesSpawner(spec, self.pod_settings, self.kube, self.reflector)

    async def session_closed(self, session: str) -> None:
        if self.kube is not None:
            from twinstack.spawners.kubernetes import remove_session

            await remove_session(self.kube, self.pod_settings, session)

    async def stop(self) -> None:
        self.control.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.control
        await asyncio.gather(*(r.stop() for r in self.runners.values()))
        await self.gss.close()
        await self.compute.close()
        if self.kube is not None:
            self.watch.cancel()
            await self.kube.api_client.close()

    def is_ready(self) -> bool:
        return self.attached.is_set()

    # reporting -----------------------------------------------------------------------------

    def report(self, session: str, kind: str, **detail: Any) -> None:
        """Queue a session event for the GSS; it waits in the outbox while the GSS is away."""
        self.outbox.append({"session": session, "type": kind, "lss": self.lss_name,
                            "ts": time.time(), **detail})
        self.outbox_filled.set()

    def forget(self, session: str) -> None:
        self.runners.pop(session, None)

    def _hello(self) -> dict[str, Any]:
        return {"name": self.lss_name, "capacity": self.settings.capacity,
                "gpus": self.settings.gpus, "load": self._load(),
                "sessions": sorted(self.runners)}

    def _load(self) -> dict[str, Any]:
        return {**machine_load(), "sessions": len(self.runners),
                "capacity": self.settings.capacity, "gpus": self.settings.gpus}

    # control channel -----------------------------------------------------------------------

    async def _control(self) -> None:
        delay = 0.1
        while True:
            try:
                async with self.gss.link() as link:
                    self.link = link
                    helpers = [asyncio.create_task(self._heartbeats(link)),
                               asyncio.create_task(self._send_outbox(link))]
                    try:
                        async for command in link.stream("lss_attach", self._hello()):
                            self.attached.set()
                            delay = 0.1
                            await self._handle(command)
                    finally:
                        self.attached.clear()
                        for helper in helpers:
                            helper.cancel()
            except ActionError as exc:
                log.warning("control channel to %s: %s", self.settings.gss_url, exc.message)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _heartbeats(self, link: Link) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            with contextlib.suppress(ActionError):
                await link.call("lss_heartbeat", {"name": self.lss_name, "load": self._load()},
                                timeout=self.settings.heartbeat_seconds * 2)

    async def _send_outbox(self, link: Link) -> None:
        """Send events in order; one the GSS did not get stays first for the next link."""
        while True:
            await self.outbox_filled.wait()
            while self.outbox:
                event = self.outbox[0]
                try:
                    await link.call("session_event", event)
                except ActionError as exc:
                    if exc.status >= 500:
                        return
                    log.warning("GSS refused %s event: %s", event["type"], exc.message)
                self.outbox.popleft()
            self.outbox_filled.clear()

    async def _handle(self, command: dict[str, Any]) -> None:
        kind, session = command.get("type"), command.get("session", "")
        if kind == "attached":
            return
        if kind == "start_session" and session not in self.runners:
            runner = SessionRunner(self, session, list(command["services"]))
            self.runners[session] = runner
            runner.task = asyncio.create_task(runner.run())
        elif kind == "stop_session":
            stopping = self.runners.pop(session, None)
            if stopping is not None:
                await stopping.stop()
            self.report(session, "closed")
        elif kind == "call" and self.link is not None:
            task = asyncio.create_task(self._tunnel(self.link, command))
            self.tunnelled.add(task)
            task.add_done_callback(self.tunnelled.discard)
        else:
            log.warning("ignored control command %s", command)

    async def _tunnel(self, link: Link, command: dict[str, Any]) -> None:
        """Carry one relay call to a local compute service and send the answer back."""
        reply: dict[str, Any] = {"call_id": command["call_id"]}
        try:
            runner = self.runners.get(command["session"])
            child = runner.children.get(command["service"]) if runner else None
            if child is None:
                raise ActionError(404, "unknown_service", f"no {command['service']} in session "
                                  f"{command['session']} on LSS {self.lss_name}")
            reply["result"] = await self.compute[child.endpoint].call(
                command["action"], command.get("params") or {}, timeout=600)
        except ActionError as err:
            reply["error"] = err.in_message()
        with contextlib.suppress(ActionError):
            await link.call("tunnel_result", reply)
