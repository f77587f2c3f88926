"""The local session service: runs the compute services of sessions on one worker machine.

It dials *out* to the GSS over one mutual-TLS WebSocket (so it works behind NAT), receives
start/stop commands as events of its `lss_attach` stream, and reports heartbeats and session
progress as calls on the same socket. Each compute service gets a short-lived certificate signed
by the LSS's intermediate CA and is started through a spawner backend; one that exits is
restarted with the shared restart policy (twinstack.supervision), and past its limit the session
fails with the exit code and the last output lines. Any other fault fails the session too, with
the reason; nothing of a session that ended stays running or on disk.

A session's services outlive a crash of their LSS: each running session is checkpointed to
SESSIONS/ID/state.json, a restarted LSS re-adopts what still runs (pids verified through /proc)
and lists those sessions when it attaches to the GSS; compute processes hold a lease the LSS
renews, so they stop by themselves if it never comes back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import importlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from twinstack.config import Settings
from twinstack.exitcodes import ExitCode, FatalError
from twinstack.metrics import LssMetrics
from twinstack.pki.identity import ensure_identity
from twinstack.pki.tls import TlsFiles
from twinstack.sessiontypes import SESSION_TYPES, session_memory_mb
from twinstack.spawners import ServiceSpec, Spawner, SpawnError
from twinstack.spawners.forked import ForkedSpawner, WarmParent, adopt_orphans
from twinstack.spawners.process import ProcessSpawner
from twinstack.supervision import RestartCounter, RestartPolicy, renew_leases, together
from twinstack.wire.client import ClientPool, Link, LinkKeeper, ServiceClient
from twinstack.wire.errors import ActionError
from twinstack.wire.runtime import Ports, ServiceBase

if TYPE_CHECKING:
    from twinstack.spawners.kube_pool import PodPool

log = logging.getLogger(__name__)

GPU_SERVICES = frozenset({"fit-td"})  # solver services that get the LSS's GPUs
COMPUTE_LIMITS = ("max_message_bytes", "max_json_depth", "compute_memory_mb",
                  "compute_work_gflop", "compute_workers")  # passed on to compute services
CERT_DAYS = 1.0  # compute services' certificates; renewed at half-life, reloaded in place
CERT_CHECK_SECONDS = 300.0  # how often a session's certificates are checked for renewal
STATE_FILE = "state.json"  # in a session's folder: what its services are, for a new LSS
LEASE_FILE = "lease"  # in a session's folder: see supervision.hold_lease
SpawnerFactory = Callable[[ServiceSpec, "LssService"], Spawner]


def _import_factory(path: str) -> SpawnerFactory:
    """`module:name` (the spawner_factory setting, for tests) as a callable."""
    module, _, name = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise FatalError(ExitCode.CONFIG_ERROR, f"spawner_factory {path!r}: {exc}") from exc
    return cast(SpawnerFactory, factory)


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


MODEL = "model"  # the service other compute services of a session read and write data through


class SessionFailure(Exception):
    """Why a session cannot go on, as its users read it, with the exit code and output."""

    def __init__(self, reason: str, exit_code: int | None = None,
                 output: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason, self.exit_code, self.output = reason, exit_code, output or []


@contextlib.contextmanager
def _failing_session(service: str, spawner: Spawner | None = None) -> Iterator[None]:
    """Any fault in starting `service` as the session's failure, saying why."""
    try:
        yield
    except SessionFailure:
        raise
    except SpawnError as exc:
        raise SessionFailure(str(exc), exc.exit_code, exc.output_tail) from exc
    except Exception as exc:
        raise SessionFailure(f"{service} could not start: {type(exc).__name__}: {exc}", None,
                             spawner.output_tail() if spawner else []) from exc


@dataclass
class Supervised:
    """One compute service and what the supervisor remembers of it."""

    spawner: Spawner
    restarts: RestartCounter
    endpoint: str = ""


@dataclass
class SessionRunner:
    """Starts a session's services together, then keeps each running; any fault but
    cancellation ends the session as failed with a reason, nothing of it left running or on
    disk. What it started is saved to WORKDIR/state.json so a restarted LSS can adopt it."""

    lss: LssService
    session: str
    services: list[str]
    project: str | None = None
    children: dict[str, Supervised] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    ready: bool = False

    @property
    def workdir(self) -> Path:
        return self.lss.sessions_dir / self.session

    @property
    def lease(self) -> Path:
        """Renewed by the LSS while it runs the session; its processes stop without it."""
        return self.workdir / LEASE_FILE

    def _certify(self, service: str) -> TlsFiles:
        """The service's certificate (CN service, OU session:<id>): kept while it has more than
        half its life left and fits, issued anew otherwise (the service reloads it in place)."""
        return self._ensure_identity(service)[0]

    def _ensure_identity(self, service: str) -> tuple[TlsFiles, bool]:
        """The service's certificate files, and whether they were issued anew just now."""
        s = self.lss.settings
        assert s.session_ca is not None and s.ca is not None
        workdir = self.workdir / service
        workdir.mkdir(parents=True, exist_ok=True)
        issued = ensure_identity(s.session_ca, service, workdir / "identity",
                                 session=self.session,
                                 hosts=self.lss.service_hosts(self.session, service),
                                 issuer="intermediate", days=CERT_DAYS,
                                 renew_before=timedelta(days=CERT_DAYS / 2),
                                 durable=False)  # its processes would not outlive a power cut
        return TlsFiles(issued.files.cert, issued.files.key, s.ca), issued.reissued is not None

    def _spawner(self, service: str) -> Spawner:
        s = self.lss.settings
        identity = self._certify(service)  # makes the folders
        self.lease.touch()
        spec = ServiceSpec(service=service, session=self.session,
                           identity=identity, workdir=self.workdir / service,
                           logger_url=s.logger_url, gpus=self.lss.gpus_for(service),
                           extra_args=(*self._data_args(service), *self._limit_args()))
        return self.lss.spawner_for(spec)

    def _limit_args(self) -> tuple[str, ...]:
        """The node's limits on what one request and one compute action may use, where they
        are not the defaults: its compute services are held to them too."""
        s = self.lss.settings
        return tuple(item for name in COMPUTE_LIMITS
                     if getattr(s, name) != Settings.model_fields[name].default
                     for item in ("--" + name.replace("_", "-"), str(getattr(s, name))))

    def _data_args(self, service: str) -> tuple[str, ...]:
        """Where a session with a model keeps its data: the model service writes the project's
        history in the platform database; every service shares the blob directory and reaches
        the model service (started first, so its endpoint is known)."""
        if MODEL not in self.services:
            return ()
        s = self.lss.settings
        if self.project is None:
            raise SessionFailure("the session's project is not known (gss sent none): its "
                                 "model cannot be opened")
        args = ["--project", self.project, "--blob-dir", str(s.blob_path())]
        if service == MODEL:
            if s.database_url is None:
                raise SessionFailure("this session node has no --database-url: it cannot run "
                                     "the model service, which writes the project's history")
            return (*args, "--database-url", s.database_url)
        return (*args, "--model-url", f"https://{self.children[MODEL].endpoint}")

    async def run(self) -> None:
        """Start every service, report ready, supervise; report failed on any fault."""
        try:
            if not self.ready:
                await self._start_services()
                self.ready = True
                self.save()
                self.report_ready()
            await together(self._renew_certificates(),
                           *(self._watch(name, child) for name, child in self.children.items()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = exc if isinstance(exc, SessionFailure) else SessionFailure(
                f"supervising the session failed: {type(exc).__name__}: {exc}")
            if not isinstance(exc, SessionFailure | SpawnError):
                log.exception("session %s: unexpected fault", self.session)
            await self._fail(failure)

    def report_ready(self, **detail: Any) -> None:
        via = {"via": "lss"} if self.lss.settings.tunnel else {}
        self.lss.report(self.session, "ready", services={
            name: {"endpoint": child.endpoint, **via} for name, child in self.children.items()},
            **detail)

    async def _start_services(self) -> None:
        """Start every service together. The others are told where the model is: where its
        endpoint is known only once it runs (start() says), it starts first."""
        first: list[str] = []
        if MODEL in self.services and not (await self._prepare(MODEL)).endpoint:
            await self._start(MODEL)
            first.append(MODEL)
        await together(*(self._start(name) for name in self.services if name not in first))

    async def _prepare(self, service: str) -> Supervised:
        """The service's spawner (its certificate issued), once; its endpoint already where
        the spawner knows it before the start."""
        if service not in self.children:
            with _failing_session(service):
                spawner = await asyncio.to_thread(self._spawner, service)
                self.children[service] = Supervised(
                    spawner, RestartCounter(self.lss.restart_policy), spawner.endpoint() or "")
        return self.children[service]

    async def _start(self, service: str) -> None:
        self.lss.report(self.session, "spawning", service=service)
        child = await self._prepare(service)
        with _failing_session(service, child.spawner):
            child.endpoint = await child.spawner.start(self.lss.settings.ready_timeout_seconds)
        child.restarts.started()
        self.save()
        self.lss.report(self.session, "service_ready", service=service, endpoint=child.endpoint)

    async def _watch(self, name: str, child: Supervised) -> None:
        """Restart the service each time it exits, after the policy's back-off (this task
        alone waits); past the policy's limit the session fails."""
        while True:
            while (code := child.spawner.poll()) is None:
                await asyncio.sleep(0.1)
            delay = child.restarts.next_delay()
            if delay is None:
                raise SessionFailure(f"{name} exited with {code} after {child.restarts.count} "
                                     "restarts", code, child.spawner.output_tail())
            log.warning("%s of session %s exited with %s; restart %d in %.1f s", name,
                        self.session, code, child.restarts.count, delay)
            self.lss.stats.compute_restarts.labels(name).inc()
            self.lss.report(self.session, "restarting", service=name, exit_code=code,
                            restart=child.restarts.count, delay=delay)
            await asyncio.sleep(delay)
            try:
                await child.spawner.start(self.lss.settings.ready_timeout_seconds)
            except SpawnError as exc:
                log.warning("restart of %s failed: %s", name, exc)
                continue  # counted: the next poll sees it stopped again
            child.restarts.started()
            self.save()
            self.lss.report(self.session, "restarted", service=name,
                            restart=child.restarts.count)

    async def _renew_certificates(self) -> None:
        """Keep every service's certificate in its second half-life at most, and get renewed
        ones to the services (`Spawner.renewed`); a failed renewal is logged and tried again
        (the old certificate is still valid for hours)."""
        undelivered: set[str] = set()  # renewed, not yet taken to the service
        while True:
            for name, child in list(self.children.items()):
                try:
                    _, reissued = await asyncio.to_thread(self._ensure_identity, name)
                    if reissued or name in undelivered:
                        undelivered.add(name)
                        await child.spawner.renewed()
                        undelivered.discard(name)
                except Exception:
                    log.exception("renewing the certificate of %s of session %s failed", name,
                                  self.session)
            await asyncio.sleep(CERT_CHECK_SECONDS)

    def save(self) -> None:
        """Checkpoint what runs, for a restarted LSS (written atomically)."""
        state = {"session": self.session, "services": self.services, "project": self.project,
                 "ready": self.ready,
                 "children": {name: {"endpoint": c.endpoint, "spawner": c.spawner.get_state()}
                              for name, c in self.children.items()}}
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.workdir / ".state.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.workdir / STATE_FILE)

    @classmethod
    def saved(cls, lss: LssService, folder: Path) -> SessionRunner | None:
        """The runner of a session an earlier LSS process started and checkpointed, with its
        services re-attached (see `adoptable`); None without a readable checkpoint."""
        try:
            state = json.loads((folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        runner = cls(lss, folder.name, list(state.get("services", [])), state.get("project"))
        children = state.get("children", {})
        for name in sorted(children, key=lambda n: n != MODEL):  # its endpoint is needed first
            saved = children[name]
            spawner = runner._spawner(name)
            spawner.load_state(saved.get("spawner", {}))
            runner.children[name] = Supervised(spawner, RestartCounter(lss.restart_policy),
                                               saved.get("endpoint", ""))
        runner.ready = bool(state.get("ready")) and set(runner.children) == set(runner.services)
        return runner

    def adoptable(self) -> bool:
        """Whether to carry on with a saved session: it was ready and some of its services
        still run (one that is gone is restarted like any that exits)."""
        return self.ready and any(c.spawner.poll() is None for c in self.children.values())

    async def _fail(self, failure: SessionFailure) -> None:
        log.error("session %s failed: %s", self.session, failure.reason)
        await self._stop_children()
        self.lss.report(self.session, "failed", reason=failure.reason,
                        exit_code=failure.exit_code, output=failure.output)
        self.lss.forget(self.session)
        self.remove_files()

    async def _stop_children(self) -> None:
        grace = self.lss.settings.stop_grace_seconds
        stopped = await asyncio.gather(*(c.spawner.stop(grace) for c in self.children.values()),
                                       return_exceptions=True)
        for name, outcome in zip(self.children, stopped, strict=True):
            if isinstance(outcome, Exception):
                log.error("stopping %s of session %s failed: %s", name, self.session, outcome)

    def remove_files(self) -> None:
        """The session's folder goes with it: it holds its services' private keys."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def stop(self) -> None:
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self._stop_children()
        await self.lss.session_closed(self.session)
        self.remove_files()


class LssService(ServiceBase):
    name: ClassVar[str] = "lss"
    ports: ClassVar[Ports] = Ports(internal=7420, health=7421)

    async def start(self) -> None:
        s = self.settings
        self.stats = LssMetrics(self.runtime.metrics.registry)
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
        self.compute_links: dict[str, LinkKeeper] = {}  # by endpoint
        self.background: set[asyncio.Task[None]] = set()  # stops and tunnelled calls
        self.tunnelled: dict[int, asyncio.Task[None]] = {}  # by gss's call id, to cancel
        self.kube: Any = None
        self.pod_pool: PodPool | None = None  # the Kubernetes spawner's warm pool
        self.warm_parent: WarmParent | None = None
        kinds = tuple(sorted({name for services in SESSION_TYPES.values() for name in services}))
        # A session claims one waiting worker of a kind, and no more than `capacity` sessions
        # start here at once: more would wait for nothing.
        pool = min(s.warm_pool, s.capacity)
        if s.spawner == "forked":
            self.warm_parent = WarmParent(Path(s.data_dir) / "warm-parent", pool, kinds)
            adopt_orphans()
            self._in_background(self._warm_up(self.warm_parent))
        self.restart_policy = RestartPolicy.from_settings(s)
        self.lease_renewer = asyncio.create_task(renew_leases(
            lambda: [r.lease for r in self.runners.values()], s.lease_seconds))
        self.factory = _import_factory(s.spawner_factory) if s.spawner_factory else None
        if s.spawner == "kubernetes" and self.factory is None:
            await self._connect_kubernetes()
        await self._adopt()
        if self.kube is not None:
            from twinstack.spawners import kubernetes

            removed = await kubernetes.remove_orphans(self.kube, self.pod_settings,
                                                      keep=set(self.runners))
            log.info("removed %d kubernetes objects of earlier sessions", removed)
            if pool:  # after the orphans: its pods have no session either
                from twinstack.spawners.kube_pool import PodPool, pool_identity

                assert s.ca is not None
                self.pod_pool = PodPool(
                    self.pod_settings, self.kube, self.reflector, pool, kinds,
                    identity=functools.partial(pool_identity, s.session_ca, s.ca, CERT_DAYS),
                    client_tls=self.runtime.tls.client(),
                    logger_url=s.logger_url, gpus=self.gpus_for,
                    max_age=timedelta(days=CERT_DAYS / 2))
                self.pool_filler: asyncio.Task[None] = asyncio.create_task(self.pod_pool.run())
        self.control = asyncio.create_task(self._control())

    async def _adopt(self) -> None:
        """Carry on with the sessions an earlier LSS process left running (see
        SessionRunner.saved); stop what is left of the others and delete their folders."""
        for folder in sorted(p for p in self.sessions_dir.iterdir() if p.is_dir()):
            try:
                runner = SessionRunner.saved(self, folder)
                if runner is not None and runner.adoptable():
                    self.runners[runner.session] = runner
                    runner.task = asyncio.create_task(runner.run())
                    runner.report_ready(adopted=True)  # it may have died in the old outbox
                    log.info("adopted session %s (%s)", runner.session,
                             ", ".join(runner.children))
                    continue
                if runner is not None:
                    await runner._stop_children()
            except Exception:  # a checkpoint we cannot use: its session cannot be adopted
                log.exception("cannot adopt the session in %s", folder)
            log.info("removing session folder %s: not adopted", folder.name)
            shutil.rmtree(folder, ignore_errors=True)

    def essential_tasks(self) -> dict[str, asyncio.Task[Any]]:
        tasks = {"control channel": self.control, "compute leases": self.lease_renewer}
        if self.kube is not None:
            tasks["kubernetes pod watch"] = self.watch  # gave up: pod states are unknown
        return tasks

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
        # Adoption reads pod states: wait for the first list (or fail loudly if it never comes).
        try:
            loaded = await self.reflector.wait_loaded(self.settings.ready_timeout_seconds)
        except kubernetes.WatchFailed as exc:
            raise FatalError(ExitCode.DEPENDENCY_UNREACHABLE, str(exc)) from exc
        if not loaded:
            raise FatalError(ExitCode.DEPENDENCY_UNREACHABLE, "the Kubernetes pod watch did not "
                             f"load within {self.settings.ready_timeout_seconds:g} s")

    def gpus_for(self, service: str) -> int:
        return self.settings.gpus if service in GPU_SERVICES else 0

    def service_hosts(self, session: str, service: str) -> list[str]:
        """The names a compute service is dialled at, for its certificate."""
        if self.kube is None:
            return [self.settings.spawn_host]
        from twinstack.spawners.kubernetes import pod_host

        return [pod_host(self.pod_settings, session, service)]

    @staticmethod
    async def _warm_up(parent: WarmParent) -> None:
        """Start the warm parent now (it imports for a second or two), not at the first
        session's start; if it fails, the first start tries again and says why."""
        try:
            await parent.start()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the warm parent did not start")

    def spawner_for(self, spec: ServiceSpec) -> Spawner:
        if self.factory is not None:
            return self.factory(spec, self)
        lease = self.sessions_dir / spec.session / LEASE_FILE
        if self.warm_parent is not None:
            return ForkedSpawner(spec, self.warm_parent, host=self.settings.spawn_host,
                                 lease=lease, lease_seconds=self.settings.lease_seconds)
        if self.kube is None:
            return ProcessSpawner(spec, host=self.settings.spawn_host, lease=lease,
                                  lease_seconds=self.settings.lease_seconds)
        from twinstack.spawners.kubernetes import KubernetesSpawner

        return KubernetesSpawner(spec, self.pod_settings, self.kube, self.reflector,
                                 self.pod_pool)

    async def session_closed(self, session: str) -> None:
        if self.kube is not None:
            from twinstack.spawners.kubernetes import remove_session

            await remove_session(self.kube, self.pod_settings, session)

    async def stop(self) -> None:
        """A clean stop ends the sessions too (a crash leaves them to the next LSS)."""
        self.control.cancel()
        self.lease_renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.control
        await asyncio.gather(*(r.stop() for r in self.runners.values()))
        if self.warm_parent is not None:
            await self.warm_parent.close()
        await self.gss.close()
        for keeper in self.compute_links.values():
            await keeper.close()
        await self.compute.close()
        if self.pod_pool is not None:
            self.pool_filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pool_filler
            await self.pod_pool.drain()
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
                "memory_mb": self._session_memory_mb(), "gpus": self.settings.gpus,
                "load": self._load(), "sessions": sorted(self.runners)}

    def _session_memory_mb(self) -> float | None:
        """What this node's sessions may take in all (None: not known here: a Kubernetes LSS's
        own pod is not where they run)."""
        if self.settings.session_memory_mb is not None or self.kube is not None:
            return self.settings.session_memory_mb
        return session_memory_mb()

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
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug or an odd answer: log it, reconnect, go on
                log.exception("control channel to %s failed", self.settings.gss_url)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _heartbeats(self, link: Link) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            with contextlib.suppress(ActionError):
                await link.call("lss_heartbeat", {"name": self.lss_name, "load": self._load()},
                                timeout=self.settings.heartbeat_seconds * 2)

    async def _send_outbox(self, link: Link) -> None:
        """Send events in order, each until the GSS takes it: a 5xx or no answer (a busy
        database, a timeout) is tried again with back-off, so the events behind it wait and
        nothing is lost or reordered; a 4xx refusal is logged and dropped. If the link itself
        is gone, the control loop cancels this and the first event waits for the next link."""
        while True:
            await self.outbox_filled.wait()
            while self.outbox:
                event = self.outbox[0]
                attempt = 0
                while True:
                    try:
                        await link.call("session_event", event,
                                        timeout=self.settings.dependency_timeout * 2)
                        break
                    except ActionError as exc:
                        if exc.status < 500:
                            log.warning("GSS refused %s event: %s", event["type"], exc.message)
                            break
                        delay = min(self.restart_policy.delay(attempt), 5.0)
                        attempt += 1
                        log.warning("GSS answered %s to the %s event of session %s (%s); "
                                    "retry %d in %.1f s", exc.status, event["type"],
                                    event["session"], exc.message, attempt, delay)
                        await asyncio.sleep(delay)
                self.outbox.popleft()
            self.outbox_filled.clear()

    async def _handle(self, command: dict[str, Any]) -> None:
        kind, session = command.get("type"), command.get("session", "")
        if kind == "attached":
            return
        if kind == "start_session" and session not in self.runners:
            runner = SessionRunner(self, session, list(command["services"]),
                                   command.get("project"))
            self.runners[session] = runner
            runner.task = asyncio.create_task(runner.run())
        elif kind == "stop_session":
            self._in_background(self._stop_session(session))
        elif kind == "call" and self.link is not None:
            call_id = command["call_id"]
            self.tunnelled[call_id] = self._in_background(self._tunnel(self.link, command))
            self.tunnelled[call_id].add_done_callback(lambda _: self.tunnelled.pop(call_id, None))
        elif kind == "cancel_call":  # its caller is gone: the service is told to stop it
            cancelled = self.tunnelled.get(command.get("call_id", -1))
            if cancelled is not None:
                cancelled.cancel()
        else:
            log.warning("ignored control command %s", command)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` off the control loop, holding a reference until it is done."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def _stop_session(self, session: str) -> None:
        """Stop a session's services (off the control loop: a stop may take its grace
        period), delete its files and report it closed, whatever stopping ran into."""
        stopping = self.runners.pop(session, None)
        try:
            if stopping is not None:
                await stopping.stop()
        except Exception:
            log.exception("stopping session %s failed", session)
        finally:
            shutil.rmtree(self.sessions_dir / session, ignore_errors=True)
            self.report(session, "closed")

    async def _tunnel(self, link: Link, command: dict[str, Any]) -> None:
        """Carry one relay call to a local compute service and send the answer back."""
        reply: dict[str, Any] = {"call_id": command["call_id"]}
        try:
            runner = self.runners.get(command["session"])
            child = runner.children.get(command["service"]) if runner else None
            if child is None:
                raise ActionError(404, "unknown_service", f"no {command['service']} in session "
                                  f"{command['session']} on LSS {self.lss_name}")
            keeper = self.compute_links.setdefault(
                child.endpoint, LinkKeeper(self.compute[child.endpoint]))
            link_to_service = await keeper.get()  # a link: cancelling the call reaches it
            reply["result"] = await link_to_service.call(
                command["action"], command.get("params") or {}, timeout=600)
        except ActionError as err:
            reply["error"] = err.in_message()
        with contextlib.suppress(ActionError):
            await link.call("tunnel_result", reply)
