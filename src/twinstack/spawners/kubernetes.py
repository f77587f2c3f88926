"""Kubernetes spawner: each compute service of a session is its own pod.

What it creates, all labelled so NetworkPolicies and cleanup can find them:
- a Secret per compute service with its certificate (`tls.crt`, `tls.key`, `ca.crt`), mounted
  read-only into the pod (no image contains a key);
- a headless Service per session, so each compute pod has a stable DNS name
  (`<service>.<session-service>.<namespace>.svc`) that survives the pod being recreated;
- the pod: `twinstack serve SERVICE` in the compute image, restricted security context,
  resource requests, `nvidia.com/gpu` for solver services, probes on the health port.

The manifests are built by pure functions (tested against the Kubernetes schemas). Pod status
comes from one shared watch per LSS (`PodReflector`), not from a poll per pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twinstack.spawners.base import ServiceSpec, Spawner, SpawnError

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
    cpu_request: str = "250m"
    memory_request: str = "256Mi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"


def _dns_label(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")


def pod_name(session: str, service: str) -> str:
    return _dns_label(f"{service}-{session[:12]}")[:63]


def session_service_name(session: str) -> str:
    return _dns_label(f"ts-{session[:12]}")


def labels(settings: PodSettings, session: str, service: str | None = None) -> dict[str, str]:
    found = {"app.kubernetes.io/name": "twinstack", "app.kubernetes.io/part-of": "twinstack",
             "app.kubernetes.io/component": "compute", "app.kubernetes.io/managed-by": MANAGED_BY,
             "twinstack.dev/session": _dns_label(session)[:63], "twinstack.dev/lss":
             _dns_label(settings.lss)[:63]}
    if service is not None:
        found["twinstack.dev/service"] = _dns_label(service)
    return found


def pod_host(settings: PodSettings, session: str, service: str) -> str:
    """The pod's stable DNS name, which the relay dials and its certificate must name."""
    return (f"{pod_name(session, service)}.{session_service_name(session)}."
            f"{settings.namespace}.svc")


def endpoint(settings: PodSettings, spec: ServiceSpec) -> str:
    return f"{pod_host(settings, spec.session, spec.service)}:{INTERNAL_PORT}"


def certificate_secret(settings: PodSettings, spec: ServiceSpec) -> dict[str, Any]:
    """The compute service's identity, as a Secret of PEM strings."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": pod_name(spec.session, spec.service) + "-tls",
                     "namespace": settings.namespace,
                     "labels": labels(settings, spec.session, spec.service)},
        "stringData": {"tls.crt": spec.identity.cert.read_text(),
                       "tls.key": spec.identity.key.read_text(),
                       "ca.crt": spec.identity.ca.read_text()},
    }


def session_service(settings: PodSettings, session: str) -> dict[str, Any]:
    """Headless Service giving the session's pods stable DNS names."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": session_service_name(session), "namespace": settings.namespace,
                     "labels": labels(settings, session)},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": False,
                 "selector": {"twinstack.dev/session": _dns_label(session)[:63],
                              "app.kubernetes.io/component": "compute"},
                 "ports": [{"name": "internal", "port": INTERNAL_PORT,
                            "targetPort": INTERNAL_PORT}]},
    }


def compute_pod(settings: PodSettings, spec: ServiceSpec) -> dict[str, Any]:
    """The pod running one compute service; it never restarts by itself (the LSS does)."""
    name = pod_name(spec.session, spec.service)
    check = {"path": "/healthz", "port": HEALTH_PORT, "scheme": "HTTPS"}
    probe = {"httpGet": check, "periodSeconds": 10, "timeoutSeconds": 3}
    env = {"TWINSTACK_BIND": f"0.0.0.0:{INTERNAL_PORT}",
           "TWINSTACK_PUBLISH": endpoint(settings, spec),
           "TWINSTACK_HEALTH_BIND": f"0.0.0.0:{HEALTH_PORT}",
           "TWINSTACK_CERT": f"{TLS_DIR}/tls.crt", "TWINSTACK_KEY": f"{TLS_DIR}/tls.key",
           "TWINSTACK_CA": f"{TLS_DIR}/ca.crt", "TWINSTACK_SESSION": spec.session,
           "TWINSTACK_DATA_DIR": "/var/lib/twinstack"}
    if spec.logger_url:
        env["TWINSTACK_LOGGER_URL"] = spec.logger_url
    limits: dict[str, str] = {"cpu": settings.cpu_limit, "memory": settings.memory_limit}
    requests: dict[str, str] = {"cpu": settings.cpu_request, "memory": settings.memory_request}
    if spec.gpus:
        limits["nvidia.com/gpu"] = requests["nvidia.com/gpu"] = str(spec.gpus)
    container = {
        "name": _dns_label(spec.service),
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "args": [spec.service, *spec.extra_args],  # the image's entrypoint: twinstack serve
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
        "hostname": name, "subdomain": session_service_name(spec.session),
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
    if spec.gpus:
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists",
                                    "effect": "NoSchedule"}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": settings.namespace,
                         "labels": labels(settings, spec.session, spec.service)},
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


class PodReflector:
    """The LSS's one watch on its compute pods; every spawner reads pod state from here."""

    def __init__(self, settings: PodSettings) -> None:
        self.settings = settings
        self.pods: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Condition()
        self.selector = (f"app.kubernetes.io/managed-by={MANAGED_BY},"
                         f"twinstack.dev/lss={_dns_label(settings.lss)[:63]}")

    async def apply(self, kind: str, pod: dict[str, Any]) -> None:
        """Take one watch event (ADDED, MODIFIED, DELETED) into the cache."""
        name = pod["metadata"]["name"]
        if kind == "DELETED":
            self.pods.pop(name, None)
        else:
            self.pods[name] = pod
        async with self.changed:
            self.changed.notify_all()

    async def run(self, core: Any) -> None:
        """Keep watching, resuming after errors (list, then watch from its resourceVersion)."""
        from kubernetes_asyncio import watch

        while True:
            try:
                listing = await core.list_namespaced_pod(self.settings.namespace,
                                                         label_selector=self.selector)
                seen = {}
                for item in listing.items:
                    pod = core.api_client.sanitize_for_serialization(item)
                    seen[pod["metadata"]["name"]] = pod
                self.pods = seen
                async with watch.Watch().stream(
                        core.list_namespaced_pod, self.settings.namespace,
                        label_selector=self.selector,
                        resource_version=listing.metadata.resource_version) as stream:
                    async for event in stream:
                        pod = core.api_client.sanitize_for_serialization(event["object"])
                        await self.apply(event["type"], pod)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pod watch failed, restarting it: %s", exc)
                await asyncio.sleep(1.0)

    async def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(predicate), timeout)
                return True
            except TimeoutError:
                return False


class KubernetesSpawner(Spawner):
    """One compute service as a pod; `core` is a kubernetes_asyncio CoreV1Api."""

    def __init__(self, spec: ServiceSpec, settings: PodSettings, core: Any,
                 reflector: PodReflector) -> None:
        super().__init__(spec)
        self.settings = settings
        self.core = core
        self.reflector = reflector
        self.name = pod_name(spec.session, spec.service)
        self._tail: list[str] = []

    async def _replace(self, create: Callable[..., Any], delete: Callable[..., Any],
                       body: dict[str, Any]) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        with contextlib.suppress(ApiException):
            await delete(body["metadata"]["name"], self.settings.namespace)
        await create(self.settings.namespace, body)

    async def start(self, timeout: float = 120.0) -> str:
        from kubernetes_asyncio.client.exceptions import ApiException

        ns = self.settings.namespace
        await self._replace(self.core.create_namespaced_secret,
                            self.core.delete_namespaced_secret,
                            certificate_secret(self.settings, self.spec))
        with contextlib.suppress(ApiException):  # one per session: may exist already
            await self.core.create_namespaced_service(
                ns, session_service(self.settings, self.spec.session))
        if self.name in self.reflector.pods:
            await self.core.delete_namespaced_pod(self.name, ns, grace_period_seconds=0)
            await self.reflector.wait(lambda: self.name not in self.reflector.pods, 60)
        await self.core.create_namespaced_pod(ns, compute_pod(self.settings, self.spec))
        pods = self.reflector.pods
        done = await self.reflector.wait(
            lambda: self.name in pods and (is_ready(pods[self.name])
                                           or exit_code(pods[self.name]) is not None), timeout)
        code = self.poll()
        if not done or code is not None:
            self._tail = await self._logs()
            await self.stop()
            raise SpawnError(f"{self.spec.service} pod {self.name} "
                             f"{'exited with ' + str(code) if code is not None else 'not ready'}"
                             f" (after up to {timeout:g} s)", code, self._tail)
        return endpoint(self.settings, self.spec)

    def poll(self) -> int | None:
        pod = self.reflector.pods.get(self.name)
        return -1 if pod is None else exit_code(pod)

    async def stop(self, grace: float = 5.0) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        ns = self.settings.namespace
        with contextlib.suppress(ApiException):
            await self.core.delete_namespaced_pod(self.name, ns,
                                                  grace_period_seconds=int(grace))
        with contextlib.suppress(ApiException):
            await self.core.delete_namespaced_secret(self.name + "-tls", ns)

    def get_state(self) -> dict[str, Any]:
        return {"pod": self.name}

    def load_state(self, state: dict[str, Any]) -> None:
        self.name = state.get("pod", self.name)

    async def _logs(self) -> list[str]:
        with contextlib.suppress(Exception):
            text = await self.core.read_namespaced_pod_log(self.name, self.settings.namespace,
                                                           tail_lines=20)
            return str(text).splitlines()
        return []

    def output_tail(self, lines: int = 20) -> list[str]:
        return self._tail[-lines:]


async def remove_session(core: Any, settings: PodSettings, session: str) -> None:
    """Delete what a session left in the cluster (its headless Service)."""
    from kubernetes_asyncio.client.exceptions import ApiException

    with contextlib.suppress(ApiException):
        await core.delete_namespaced_service(session_service_name(session), settings.namespace)


async def remove_orphans(core: Any, settings: PodSettings, keep: set[str]) -> int:
    """On LSS start: delete pods, Secrets and Services of this LSS's sessions not in `keep`."""
    selector = (f"app.kubernetes.io/managed-by={MANAGED_BY},"
                f"twinstack.dev/lss={_dns_label(settings.lss)[:63]}")
    removed = 0
    kinds = (("list_namespaced_pod", "delete_namespaced_pod"),
             ("list_namespaced_secret", "delete_namespaced_secret"),
             ("list_namespaced_service", "delete_namespaced_service"))
    for lister, deleter in kinds:
        listing = await getattr(core, lister)(settings.namespace, label_selector=selector)
        for item in listing.items:
            if item.metadata.labels.get("twinstack.dev/session") not in keep:
                await getattr(core, deleter)(item.metadata.name, settings.namespace)
                removed += 1
    return removed
