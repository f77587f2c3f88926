"""Kubernetes spawner: each compute service of a session is its own pod.

What it creates, all labelled so NetworkPolicies and cleanup can find them:
- a Secret per compute service with its certificate (`tls.crt`, `tls.key`, `ca.crt`), mounted
  read-only into the pod (no image contains a key);
- a headless Service per compute service, selecting its pod by session and service labels,
  so the service has a stable DNS name (`<service>-<session>.<namespace>.svc`) whichever pod
  serves it: one started for it, its restart, or a warm pool's pod claimed for it
  (`kube_pool.py`);
- the pod: `twinstack serve SERVICE` in the compute image, restricted security context,
  resource requests, `nvidia.com/gpu` for solver services, probes on the health port.
With a warm pool, a session's service first tries to claim a waiting pool pod.

The manifests are built by pure functions (tested against the Kubernetes schemas). Pod status
comes from one shared watch per LSS (`PodReflector`), not from a poll per pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twinstack.pki.tls import TlsFiles
from twinstack.sessiontypes import SERVICE_NEEDS
from twinstack.spawners.base import ServiceSpec, Spawner, SpawnError

if TYPE_CHECKING:
    from twinstack.spawners.kube_pool import PodPool

log = logging.getLogger(__name__)

INTERNAL_PORT = 7450
HEALTH_PORT = 7451
TLS_DIR = "/etc/twinstack/tls"
RUN_AS = 10001
MANAGED_BY = "twinstack-lss"


@dataclass(frozen=True)
class PodSettings:
    """What the LSS's settings say about the pods it creates."""

    namespace: str
    image: str
    lss: str
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"


def _dns_label(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")


def pod_name(session: str, service: str) -> str:
    return _dns_label(f"{service}-{session[:12]}")[:63]


def session_label(session: str) -> str:
    return _dns_label(session)[:63]


def labels(settings: PodSettings, session: str | None, service: str) -> dict[str, str]:
    """What every object of a compute service carries (a pool pod: no session yet)."""
    found = {"app.kubernetes.io/name": "twinstack", "app.kubernetes.io/part-of": "twinstack",
             "app.kubernetes.io/component": "compute", "app.kubernetes.io/managed-by": MANAGED_BY,
             "twinstack.dev/lss": _dns_label(settings.lss)[:63],
             "twinstack.dev/service": _dns_label(service)}
    if session is not None:
        found["twinstack.dev/session"] = session_label(session)
    return found


def pod_host(settings: PodSettings, session: str, service: str) -> str:
    """The service's stable DNS name (its headless Service's), which the relay dials and its
    certificate must name."""
    return f"{pod_name(session, service)}.{settings.namespace}.svc"


def endpoint(settings: PodSettings, spec: ServiceSpec) -> str:
    return f"{pod_host(settings, spec.session, spec.service)}:{INTERNAL_PORT}"


def certificate_secret(settings: PodSettings, pod: str, pod_labels: dict[str, str],
                       identity: TlsFiles) -> dict[str, Any]:
    """The identity of the compute service in pod `pod`, as a Secret of PEM strings."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": pod + "-tls", "namespace": settings.namespace,
                     "labels": pod_labels},
        "stringData": {"tls.crt": identity.cert.read_text(), "tls.key": identity.key.read_text(),
                       "ca.crt": identity.ca.read_text()},
    }


def compute_service(settings: PodSettings, session: str, service: str) -> dict[str, Any]:
    """Headless Service giving one compute service its stable DNS name (`pod_host`)."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": pod_name(session, service), "namespace": settings.namespace,
                     "labels": labels(settings, session, service)},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": False,
                 "selector": {"twinstack.dev/session": session_label(session),
                              "twinstack.dev/service": _dns_label(service),
                              "app.kubernetes.io/component": "compute"},
                 "ports": [{"name": "internal", "port": INTERNAL_PORT,
                            "targetPort": INTERNAL_PORT}]},
    }


def compute_pod(settings: PodSettings, spec: ServiceSpec) -> dict[str, Any]:
    """The pod running one compute service; it never restarts by itself (the LSS does)."""
    name = pod_name(spec.session, spec.service)
    env = {"TWINSTACK_PUBLISH": endpoint(settings, spec), "TWINSTACK_SESSION": spec.session}
    return service_pod(settings, name, labels(settings, spec.session, spec.service), spec.service,
                       env, [spec.service, *spec.extra_args], logger_url=spec.logger_url,
                       gpus=spec.gpus)


def pod_requests(service: str) -> dict[str, str]:
    """What the scheduler reserves for a service's pod: what the session types declare it
    takes (sessiontypes.SERVICE_NEEDS), as the LSS's placement does on a node."""
    needs = SERVICE_NEEDS[service]
    return {"cpu": f"{max(10, round(needs.cpus * 1000))}m", "memory": f"{needs.memory_mb}Mi"}


def service_pod(settings: PodSettings, name: str, pod_labels: dict[str, str], service: str,
                env: dict[str, str], args: list[str], *, logger_url: str | None,
                gpus: int) -> dict[str, Any]:
    """A pod running `twinstack serve ARGS` with its identity from the Secret NAME-tls: a
    session's compute service, or a warm pool's waiting one."""
    check = {"path": "/healthz", "port": HEALTH_PORT, "scheme": "HTTPS"}
    probe = {"httpGet": check, "periodSeconds": 10, "timeoutSeconds": 3}
    env = {"TWINSTACK_BIND": f"0.0.0.0:{INTERNAL_PORT}",
           "TWINSTACK_HEALTH_BIND": f"0.0.0.0:{HEALTH_PORT}",
           "TWINSTACK_CERT": f"{TLS_DIR}/tls.crt", "TWINSTACK_KEY": f"{TLS_DIR}/tls.key",
           "TWINSTACK_CA": f"{TLS_DIR}/ca.crt", "TWINSTACK_DATA_DIR": "/var/lib/twinstack",
           **env}
    if logger_url:
        env["TWINSTACK_LOGGER_URL"] = logger_url
    limits: dict[str, str] = {"cpu": settings.cpu_limit, "memory": settings.memory_limit}
    requests = pod_requests(service)
    if gpus:
        limits["nvidia.com/gpu"] = requests["nvidia.com/gpu"] = str(gpus)
    container = {
        "name": _dns_label(service),
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,  # the image's entrypoint: twinstack serve
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": [{"name": "internal", "containerPort": INTERNAL_PORT},
                  {"name": "health", "containerPort": HEALTH_PORT}],
        "readinessProbe": {**probe, "httpGet": {**check, "path": "/readyz"},
                           "periodSeconds": 2},
        "livenessProbe": probe,
        "resources": {"requests": requests, "limits": limits},
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
                         {"name": "data", "mountPath": "/var/lib/twinstack"},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never", "serviceAccountName": "twinstack-compute",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "fsGroup": RUN_AS,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "tls", "secret": {"secretName": name + "-tls",
                                               "defaultMode": 0o440}},
                    {"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
    }
    if gpus:
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists",
                                    "effect": "NoSchedule"}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": settings.namespace, "labels": pod_labels},
            "spec": pod_spec}


# --- status from one shared watch ---------------------------------------------------------


def exit_code(pod: dict[str, Any]) -> int | None:
    """The container's exit code once the pod has stopped, else None."""
    phase = pod.get("status", {}).get("phase")
    if phase not in ("Succeeded", "Failed"):
        return None
    for status in pod.get("status", {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated is not None:
            return int(terminated.get("exitCode", -1))
    return -1


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or [])


def selector(settings: PodSettings) -> str:
    """The label selector of everything one LSS created."""
    return (f"app.kubernetes.io/managed-by={MANAGED_BY},"
            f"twinstack.dev/lss={_dns_label(settings.lss)[:63]}")


class WatchFailed(RuntimeError):
    """The pod watch gave up (or was stopped): pod states read from it can no longer be trusted."""


def _describe(exc: BaseException) -> str:
    """A failure in words fit for a user: no internal addresses, which connection errors carry."""
    status = getattr(exc, "status", None)
    if status is not None:
        return f"{status} {getattr(exc, 'reason', '') or ''}".strip()
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return type(exc).__name__


class PodReflector:
    """The LSS's one watch on its compute pods; every spawner reads pod state from here.

    List, then watch from the list's resourceVersion, in the shape of KubeSpawner's reflector:
    - every request has a client-side timeout, and each watch asks the server to end it after
      `watch_timeout` s; the next watch resumes from the last resourceVersion seen;
    - every `restart_every` s the reflector lists afresh instead (a watch is not trusted to
      deliver every event), and at once after 410 Gone (the version was compacted away);
    - a failed request is retried at once, then with doubling back-off; `give_up_after` failures
      in a row (a watch that delivers an event or ends normally counts as success) make run()
      raise WatchFailed, and every waiter fails with it instead of waiting for its timeout.

    `pods` is replaced as a whole by each list: read it afresh (never keep a reference to it).
    """

    def __init__(self, settings: PodSettings, *, request_timeout: float = 30.0,
                 watch_timeout: int = 10, restart_every: float = 60.0,
                 give_up_after: int = 8, backoff: float = 1.0,
                 max_backoff: float = 30.0) -> None:
        self.settings = settings
        self.request_timeout = request_timeout
        self.watch_timeout = watch_timeout
        self.restart_every = restart_every
        self.give_up_after = give_up_after
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.selector = selector(settings)
        self.pods: dict[str, dict[str, Any]] = {}
        self.resource_version: str | None = None  # of the last list or event; None: list next
        self.loaded = asyncio.Event()  # the first list is in `pods`
        self.failure: WatchFailed | None = None
        self._changed = asyncio.Event()  # replaced after each change; waiters hold the old one
        self._failures = 0

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def apply(self, kind: str, pod: dict[str, Any]) -> None:
        """Take one watch event (ADDED, MODIFIED, DELETED) into the cache."""
        name = pod["metadata"]["name"]
        if kind == "DELETED":
            self.pods.pop(name, None)
        else:
            self.pods[name] = pod
        self._notify()

    async def _request(self, core: Any, timeout: float, **params: Any) -> Any:
        """One GET on the pod collection, answered with the raw aiohttp response."""
        from kubernetes_asyncio.client.exceptions import ApiException

        response = await core.list_namespaced_pod(
            self.settings.namespace, label_selector=self.selector, _preload_content=False,
            _request_timeout=timeout, **params)
        if response.status != 200:
            reason = response.reason
            with contextlib.suppress(Exception):
                reason = (await response.json())["message"]
            response.close()
            raise ApiException(status=response.status, reason=reason)
        return response

    async def _list(self, core: Any) -> None:
        response = await self._request(core, self.request_timeout)
        try:
            listing = await response.json()
        finally:
            response.close()
        self.pods = {pod["metadata"]["name"]: pod for pod in listing.get("items") or []}
        self.resource_version = listing["metadata"]["resourceVersion"]
        self.loaded.set()
        self._notify()

    async def _watch(self, core: Any) -> None:
        """Apply events until the server ends the watch (after `watch_timeout` s).

        kubernetes_asyncio's Watch is not used: without timeoutSeconds it hides 410s and
        timeouts by reconnecting on its own, and it turns every event into a model object.
        """
        from kubernetes_asyncio.client.exceptions import ApiException

        response = await self._request(
            core, self.watch_timeout + self.request_timeout, watch=True,
            allow_watch_bookmarks=True, resource_version=self.resource_version,
            timeout_seconds=self.watch_timeout)
        try:
            async for line in response.content:  # one JSON event per line
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                self.resource_version = obj["metadata"]["resourceVersion"]
                if kind == "BOOKMARK":
                    self._notify()  # only the resume point moved
                else:
                    self.apply(kind, obj)
                self._failures = 0
        finally:
            response.close()
        self._failures = 0

    async def run(self, core: Any) -> None:
        """Keep `pods` in step with the API until cancelled; raise WatchFailed on giving up."""
        from kubernetes_asyncio.client.exceptions import ApiException

        loop = asyncio.get_running_loop()
        listed_at = -math.inf
        try:
            while True:
                try:
                    if (self.resource_version is None
                            or loop.time() - listed_at >= self.restart_every):
                        await self._list(core)
                        listed_at = loop.time()
                    await self._watch(core)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._failures += 1
                    gone = isinstance(exc, ApiException) and exc.status == 410
                    if gone:
                        self.resource_version = None  # compacted away: list afresh
                    if self._failures >= self.give_up_after:
                        log.error("pod watch failed %d times in a row, giving up",
                                  self._failures, exc_info=exc)
                        failure = self._fail(f"the Kubernetes pod watch failed {self._failures}"
                                             f" times in a row (last: {_describe(exc)})")
                        raise failure from exc
                    delay = 0.0 if self._failures == 1 else min(
                        self.max_backoff, self.backoff * 2 ** (self._failures - 2))
                    log.log(logging.INFO if gone else logging.WARNING,
                            "pod watch: %s; %s in %.1f s",
                            _describe(exc) if isinstance(exc, ApiException) else repr(exc),
                            "listing afresh" if gone else "retrying", delay)
                    await asyncio.sleep(delay * random.uniform(0.8, 1.0))
        except asyncio.CancelledError:
            self._fail("the Kubernetes pod watch was stopped")
            raise

    def _fail(self, reason: str) -> WatchFailed:
        if self.failure is None:
            self.failure = WatchFailed(reason)
        self._notify()
        return self.failure

    async def wait_loaded(self, timeout: float = math.inf) -> bool:
        """The first-load barrier: True once the first list is in `pods`, False after `timeout`.

        Raises WatchFailed if the watch gives up first.
        """
        return await self.wait(lambda: True, timeout)

    async def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until predicate() holds on a loaded cache; False after `timeout` s.

        The predicate is re-evaluated after every change, so it must read `self.pods` afresh.
        Raises WatchFailed once the watch has given up or been stopped.
        """
        try:
            async with asyncio.timeout(None if math.isinf(timeout) else timeout):
                while True:
                    changed = self._changed
                    if self.failure is not None:
                        raise WatchFailed(str(self.failure))
                    if self.loaded.is_set() and predicate():
                        return True
                    await changed.wait()
        except TimeoutError:
            return False


class KubernetesSpawner(Spawner):
    """One compute service as a pod; `core` is a kubernetes_asyncio CoreV1Api."""

    def __init__(self, spec: ServiceSpec, settings: PodSettings, core: Any,
                 reflector: PodReflector, pool: PodPool | None = None) -> None:
        super().__init__(spec)
        self.settings = settings
        self.core = core
        self.reflector = reflector
        self.pool = pool
        self.timeout = reflector.request_timeout  # of each API request
        self.own_name = pod_name(spec.session, spec.service)  # of a pod started for it
        self.name = self.own_name  # of the pod serving it: a claimed pool pod's, or own_name
        self._tail: list[str] = []

    def _pod(self) -> dict[str, Any] | None:
        return self.reflector.pods.get(self.name)  # afresh: a list replaces the whole dict

    async def _replace(self, create: Callable[..., Any], delete: Callable[..., Any],
                       body: dict[str, Any]) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        with contextlib.suppress(ApiException):
            await delete(body["metadata"]["name"], self.settings.namespace,
                         _request_timeout=self.timeout)
        await create(self.settings.namespace, body, _request_timeout=self.timeout)

    def endpoint(self) -> str:
        return endpoint(self.settings, self.spec)  # the pod's stable name: known before

    async def start(self, timeout: float = 120.0) -> str:
        """Create the pod and wait until it is ready (or has exited, or `timeout` s passed).

        Any failure, including an API error or the pod watch giving up, is a SpawnError, and
        what was created is deleted again, as it is when the start is cancelled.
        """
        from aiohttp import ClientError
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            return await self._start(timeout)
        except asyncio.CancelledError:
            await asyncio.shield(self.stop(grace=0))  # a cancelled start leaves nothing behind
            raise
        except (ApiException, WatchFailed, TimeoutError, ClientError) as exc:
            what = (str(exc) if isinstance(exc, WatchFailed)
                    else f"the Kubernetes API failed ({_describe(exc)})")
            log.warning("starting pod %s failed", self.name, exc_info=exc)
            await self.stop()
            raise SpawnError(f"{self.spec.service} pod {self.name} could not start: {what}",
                             None, []) from exc

    async def _start(self, timeout: float) -> str:
        from kubernetes_asyncio.client.exceptions import ApiException

        ns = self.settings.namespace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with contextlib.suppress(ApiException):  # from an earlier start: may exist already
            await self.core.create_namespaced_service(
                ns, compute_service(self.settings, self.spec.session, self.spec.service),
                _request_timeout=self.timeout)
        if not await self.reflector.wait_loaded(deadline - loop.time()):
            await self.stop()
            raise SpawnError(f"{self.spec.service} pod {self.name} could not start: the pod "
                             f"watch has not loaded in {timeout:g} s", None, [])
        if self.pool is not None and self.name == self.own_name \
                and (claimed := await self.pool.claim(self.spec.service, self.spec.session)):
            self.name = claimed["metadata"]["name"]  # stop() deletes it, whatever happens
            if await self.pool.hand_over(claimed, self.spec, self.endpoint(), deadline):
                return await self._until_serving(deadline, timeout)
        if self.name != self.own_name:  # a claimed pool pod that refused, or ended: a pod of
            await self._delete(self.name)  # its own now
            self.name = self.own_name
        await self._replace(self.core.create_namespaced_secret,
                            self.core.delete_namespaced_secret,
                            certificate_secret(self.settings, self.own_name,
                                               labels(self.settings, self.spec.session,
                                                      self.spec.service), self.spec.identity))
        if self._pod() is not None:  # left from an earlier start
            await self._delete(self.name)
        await self.core.create_namespaced_pod(ns, compute_pod(self.settings, self.spec),
                                              _request_timeout=self.timeout)
        return await self._until_serving(deadline, timeout)

    async def _delete(self, name: str) -> None:
        """Delete pod `name` at once (a pool pod with its Secret) and wait until the watch has
        seen it go."""
        from kubernetes_asyncio.client.exceptions import ApiException

        with contextlib.suppress(ApiException):
            await self.core.delete_namespaced_pod(name, self.settings.namespace,
                                                  grace_period_seconds=0,
                                                  _request_timeout=self.timeout)
        if name != self.own_name:
            with contextlib.suppress(ApiException):
                await self.core.delete_namespaced_secret(name + "-tls", self.settings.namespace,
                                                         _request_timeout=self.timeout)
        await self.reflector.wait(lambda: name not in self.reflector.pods, self.timeout)

    async def _until_serving(self, deadline: float, timeout: float) -> str:
        """The endpoint once the pod is ready; a SpawnError (nothing left) if it exits or is
        not ready by `deadline`."""
        if self.name != self.own_name:  # a claimed pool pod: ready once it serves the session
            assert self.pool is not None
            done = await self.pool.until_serving(self._pod, pod_host(
                self.settings, self.spec.session, self.spec.service), deadline)
            return await self._settled(done, timeout)

        def settled() -> bool:
            pod = self._pod()
            return pod is not None and (is_ready(pod) or exit_code(pod) is not None)

        done = await self.reflector.wait(settled,
                                         deadline - asyncio.get_running_loop().time())
        return await self._settled(done, timeout)

    async def _settled(self, done: bool, timeout: float) -> str:
        code = self.poll()
        if not done or code is not None:
            self._tail = await self._logs()
            await self.stop()
            raise SpawnError(f"{self.spec.service} pod {self.name} "
                             f"{'exited with ' + str(code) if code is not None else 'not ready'}"
                             f" (after up to {timeout:g} s)", code, self._tail)
        return self.endpoint()

    def poll(self) -> int | None:
        """None while the pod runs (or before the first list: unknown is not dead)."""
        if not self.reflector.loaded.is_set():
            return None
        pod = self._pod()
        return -1 if pod is None else exit_code(pod)

    async def stop(self, grace: float = 5.0) -> None:
        from aiohttp import ClientError
        from kubernetes_asyncio.client.exceptions import ApiException

        ns = self.settings.namespace
        with contextlib.suppress(ApiException, TimeoutError, ClientError):
            await self.core.delete_namespaced_pod(self.name, ns, grace_period_seconds=int(grace),
                                                  _request_timeout=self.timeout)
        for name in {self.name, self.own_name}:  # a claimed pool pod's Secret, and its own
            with contextlib.suppress(ApiException, TimeoutError, ClientError):
                await self.core.delete_namespaced_secret(name + "-tls", ns,
                                                         _request_timeout=self.timeout)
        with contextlib.suppress(ApiException, TimeoutError, ClientError):
            await self.core.delete_namespaced_service(self.own_name, ns,
                                                      _request_timeout=self.timeout)

    async def renewed(self) -> None:
        """Write the new certificate into the Secret the pod mounts: the kubelet updates the
        mounted files (within about a minute), and the service reloads them. A claimed pool
        pod mounts its pool Secret, and takes what it holds once that is its session's
        identity (`--identity-from`, pki.identity.follow_identity)."""
        identity = self.spec.identity
        await self.core.patch_namespaced_secret(
            self.name + "-tls", self.settings.namespace,
            {"stringData": {"tls.crt": identity.cert.read_text(),
                            "tls.key": identity.key.read_text()}},
            _content_type="application/merge-patch+json", _request_timeout=self.timeout)

    def get_state(self) -> dict[str, Any]:
        return {"pod": self.name}

    def load_state(self, state: dict[str, Any]) -> None:
        self.name = state.get("pod", self.name)

    async def _logs(self) -> list[str]:
        with contextlib.suppress(Exception):
            text = await self.core.read_namespaced_pod_log(self.name, self.settings.namespace,
                                                           tail_lines=20,
                                                           _request_timeout=self.timeout)
            return str(text).splitlines()
        return []

    def output_tail(self, lines: int = 20) -> list[str]:
        return self._tail[-lines:]


async def remove_session(core: Any, settings: PodSettings, session: str,
                         request_timeout: float = 30.0) -> None:
    """Delete what a session left in the cluster (the Services of services that never stopped
    cleanly)."""
    from kubernetes_asyncio.client.exceptions import ApiException

    with contextlib.suppress(ApiException):
        listing = await core.list_namespaced_service(
            settings.namespace, label_selector=f"{selector(settings)},twinstack.dev/session="
            f"{session_label(session)}", _request_timeout=request_timeout)
        for item in listing.items:
            await core.delete_namespaced_service(item.metadata.name, settings.namespace,
                                                 _request_timeout=request_timeout)


async def remove_orphans(core: Any, settings: PodSettings, keep: set[str],
                         request_timeout: float = 30.0) -> int:
    """On LSS start: delete pods, Secrets and Services of this LSS's sessions not in `keep`."""
    removed = 0
    kinds = (("list_namespaced_pod", "delete_namespaced_pod"),
             ("list_namespaced_secret", "delete_namespaced_secret"),
             ("list_namespaced_service", "delete_namespaced_service"))
    for lister, deleter in kinds:
        listing = await getattr(core, lister)(settings.namespace,
                                              label_selector=selector(settings),
                                              _request_timeout=request_timeout)
        for item in listing.items:
            if item.metadata.labels.get("twinstack.dev/session") not in keep:
                await getattr(core, deleter)(item.metadata.name, settings.namespace,
                                             _request_timeout=request_timeout)
                removed += 1
    return removed
