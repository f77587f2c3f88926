"""The Kubernetes spawner's warm pool: `--warm-pool N` waiting pods of each compute service
kind per LSS, which a session's services claim instead of starting a pod each.

A pool pod runs `twinstack serve KIND --claim-bind 0.0.0.0:7452` (`claim.py`): it has done
its kind's warm-up, holds a pool identity of its own (a certificate naming the pod, in a
Secret, as a session's pods get theirs) and is Ready once it waits. It has no session label,
so no session's Service selects it and no session's peer accepts it.

Claiming one is a label change (pool=claimed, the session's label) sent as a JSON merge patch
that carries the pod's resourceVersion: the API server applies one of two claims of the same
pod and answers the other 409 Conflict, so the pool never gives one pod to two sessions, not
even to two LSS processes. The claimant then sends the pod the session's identity and
arguments over mutual TLS, checking that the pod presents its pool certificate; the service's
headless Service now selects the pod, so the service has the DNS name a pod started for it
would have. It is ready once its health port presents the session's certificate and says so.
If the pod refuses or cannot be reached, it is deleted and the service gets a pod of its own.

`run()` keeps N waiting (or starting) pods of each kind: a claimed pod leaves the count, and
the change the watch reports wakes it to create the replacement; a pool pod that has exited,
or has waited for half its certificate's life (`max_age`: a claim must find it valid for
as long as a session's own), is deleted and replaced. Pool pods of an earlier LSS process are
removed with its orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from twinstack.config import join_host_port
from twinstack.pki.identity import issue_identity
from twinstack.pki.tls import TlsFiles
from twinstack.spawners.base import ServiceSpec
from twinstack.spawners.claim import claim_body, send_claim, serves_as
from twinstack.spawners.kubernetes import (
    HEALTH_PORT,
    PodReflector,
    PodSettings,
    _describe,
    _dns_label,
    certificate_secret,
    exit_code,
    is_ready,
    labels,
    service_pod,
    session_label,
)
from twinstack.supervision import NotReady, wait_ready

log = logging.getLogger(__name__)

CLAIM_PORT = 7452
POOL_LABEL = "twinstack.dev/pool"
WAITING, CLAIMED = "waiting", "claimed"
READY_POLLS = (0.005, 0.05)  # the claimed service's health: first and longest pause


def pool_pod_name(service: str) -> str:
    return f"pool-{_dns_label(service)}-{secrets.token_hex(4)}"


def pool_labels(settings: PodSettings, service: str) -> dict[str, str]:
    return {**labels(settings, None, service), POOL_LABEL: WAITING}


def pool_pod(settings: PodSettings, service: str, name: str, *, logger_url: str | None,
             gpus: int) -> dict[str, Any]:
    """A waiting pod of `service`'s kind, its pool identity in the Secret NAME-tls."""
    pod = service_pod(settings, name, pool_labels(settings, service), service,
                      {"TWINSTACK_CLAIM_BIND": f"0.0.0.0:{CLAIM_PORT}"}, [service],
                      logger_url=logger_url, gpus=gpus)
    pod["spec"]["containers"][0]["ports"].append({"name": "claim", "containerPort": CLAIM_PORT})
    return pod


def pool_identity(session_ca: Path, ca: Path, days: float, service: str, pod: str,
                  folder: Path) -> TlsFiles:
    """A pool pod's certificate, from the LSS's intermediate CA (SESSION_CA), into FOLDER: it
    names the pod, and its 'session' is the pod's own, which no peer shares (a session's
    identity comes with the claim)."""
    issued = issue_identity(session_ca, service, folder / "identity", session=pod, hosts=[pod],
                            issuer="intermediate", days=days,
                            durable=False)  # read into the pod's Secret at once
    return TlsFiles(issued.cert, issued.key, ca)


def _created(pod: dict[str, Any]) -> datetime:
    """When the API server created the pod (now, where it does not say)."""
    stamp = pod["metadata"].get("creationTimestamp")
    return datetime.fromisoformat(stamp) if stamp else datetime.now(UTC)


def _address(pod: dict[str, Any], port: int) -> str:
    return join_host_port(pod.get("status", {}).get("podIP") or "", port)


@dataclass
class PodPool:
    """One LSS's waiting pods, `size` of each of `kinds`; `identity(service, pod, folder)`
    issues a pool pod's certificate (naming the pod) into `folder` (removed once the pod's
    Secret holds it); `client_tls` is the LSS's own mutual-TLS client context."""

    settings: PodSettings
    core: Any  # kubernetes_asyncio's CoreV1Api
    reflector: PodReflector
    size: int
    kinds: tuple[str, ...]
    identity: Callable[[str, str, Path], TlsFiles]
    client_tls: ssl.SSLContext
    logger_url: str | None = None
    gpus: Callable[[str], int] = lambda service: 0
    max_age: timedelta = timedelta(hours=12)
    creating: dict[str, str] = field(default_factory=dict)  # kind by pod: not yet watched
    claiming: set[str] = field(default_factory=set)  # being claimed by a session of this LSS
    deleting: set[str] = field(default_factory=set)  # deleted here, still watched

    @property
    def timeout(self) -> float:
        """Of each API request."""
        return self.reflector.request_timeout

    def _of_kind(self, kind: str) -> list[dict[str, Any]]:
        """The waiting pool pods of `kind` the watch knows, not being deleted."""
        label = _dns_label(kind)
        return [pod for pod in self.reflector.pods.values()
                if (pod["metadata"].get("labels") or {}).get(POOL_LABEL) == WAITING
                and pod["metadata"]["labels"].get("twinstack.dev/service") == label
                and not pod["metadata"].get("deletionTimestamp")]

    def _missing(self) -> dict[str, int]:
        for name in [name for name in self.creating if name in self.reflector.pods]:
            del self.creating[name]
        counts = {kind: len([p for p in self._of_kind(kind) if exit_code(p) is None])
                  for kind in self.kinds}
        for kind in self.creating.values():
            counts[kind] += 1
        return {kind: self.size - counts[kind] for kind in self.kinds if counts[kind] < self.size}

    async def run(self) -> None:
        """Keep the pool full until cancelled; a failed round is logged and tried again."""
        from kubernetes_asyncio.client.exceptions import ApiException

        delay = 1.0
        while True:
            try:
                await self.reflector.wait_loaded()
                await self._remove_spent()
                for kind, missing in self._missing().items():
                    for _ in range(missing):
                        await self._create(kind)
                delay = 1.0
                await self.reflector.wait(lambda: bool(self._missing() or self._spent()),
                                          timeout=60.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                what = _describe(exc) if isinstance(exc, ApiException) else repr(exc)
                log.warning("warm pool: %s; trying again in %.0f s", what, delay)
                await asyncio.sleep(delay)
                delay = min(60.0, delay * 2)

    def _spent(self) -> list[str]:
        """Waiting pods to replace: exited, or older than `max_age` (and not deleted yet)."""
        self.deleting &= set(self.reflector.pods)
        oldest = datetime.now(UTC) - self.max_age
        return [pod["metadata"]["name"] for kind in self.kinds for pod in self._of_kind(kind)
                if (exit_code(pod) is not None or _created(pod) < oldest)
                and pod["metadata"]["name"] not in self.deleting]

    async def _remove_spent(self) -> None:
        for name in self._spent():
            log.info("replacing warm pool pod %s: it has exited or waited too long", name)
            self.deleting.add(name)
            await self._delete(name)

    async def _create(self, kind: str) -> None:
        name = pool_pod_name(kind)
        ns = self.settings.namespace
        with tempfile.TemporaryDirectory() as folder:
            identity = await asyncio.to_thread(self.identity, kind, name, Path(folder))
            secret = certificate_secret(self.settings, name, pool_labels(self.settings, kind),
                                        identity)
        await self.core.create_namespaced_secret(ns, secret, _request_timeout=self.timeout)
        self.creating[name] = kind
        try:
            await self.core.create_namespaced_pod(
                ns, pool_pod(self.settings, kind, name, logger_url=self.logger_url,
                             gpus=self.gpus(kind)), _request_timeout=self.timeout)
        except BaseException:
            del self.creating[name]
            await asyncio.shield(self._delete(name))
            raise

    async def _delete(self, name: str) -> None:
        """Delete a pool pod and its Secret (either may be gone already)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        ns = self.settings.namespace
        with contextlib.suppress(ApiException):
            await self.core.delete_namespaced_pod(name, ns, _request_timeout=self.timeout)
        with contextlib.suppress(ApiException):
            await self.core.delete_namespaced_secret(name + "-tls", ns,
                                                     _request_timeout=self.timeout)

    async def drain(self) -> None:
        """Delete every waiting pod (a clean stop of the LSS; its successor makes its own)."""
        for name in [pod["metadata"]["name"] for kind in self.kinds
                     for pod in self._of_kind(kind)]:
            await self._delete(name)

    async def claim(self, kind: str, session: str) -> dict[str, Any] | None:
        """A ready waiting pod of `kind`, now labelled as `session`'s (the pod as the watch
        had it before), or None when none is ready or every claim lost to another."""
        from kubernetes_asyncio.client.exceptions import ApiException

        for pod in self._of_kind(kind):
            name = pod["metadata"]["name"]
            if name in self.claiming or not is_ready(pod) or exit_code(pod) is not None:
                continue
            claimed = {POOL_LABEL: CLAIMED, "twinstack.dev/session": session_label(session)}
            self.claiming.add(name)
            try:
                await self.core.patch_namespaced_pod(
                    name, self.settings.namespace,
                    {"metadata": {"resourceVersion": pod["metadata"]["resourceVersion"],
                                  "labels": claimed}},
                    _content_type="application/merge-patch+json", _request_timeout=self.timeout)
            except ApiException as exc:
                if exc.status in (404, 409):  # taken or gone meanwhile: the next one
                    continue
                raise
            finally:
                self.claiming.discard(name)
            # its Secret is the session's now too: a new LSS keeps it with the session's pod
            # (renewals go into it) and removes it with the session's objects
            try:
                await self.core.patch_namespaced_secret(
                    name + "-tls", self.settings.namespace, {"metadata": {"labels": claimed}},
                    _content_type="application/merge-patch+json", _request_timeout=self.timeout)
            except ApiException as exc:  # gone: the pod still has what it mounted
                log.warning("the Secret of warm pool pod %s: %s", name, _describe(exc))
            log.info("session %s claimed warm pool pod %s", session, name)
            return pod
        return None

    async def hand_over(self, pod: dict[str, Any], spec: ServiceSpec, publish: str,
                        deadline: float) -> bool:
        """Send the claimed pod its session's identity and arguments: whether it took them
        (False: it refused, or could not be reached, and the reason is logged)."""
        name = pod["metadata"]["name"]
        body = claim_body(spec.session, publish, spec.identity, spec.extra_args)
        left = min(30.0, max(0.1, deadline - asyncio.get_running_loop().time()))
        refused = await send_claim(_address(pod, CLAIM_PORT), name, body, self.client_tls, left)
        if refused is not None:
            log.warning("warm pool pod %s did not take %s of session %s (%s): starting a pod "
                        "of its own", name, spec.service, spec.session, refused)
        return refused is None

    async def until_serving(self, pod: Callable[[], dict[str, Any] | None], host: str,
                            deadline: float) -> bool:
        """Wait until the claimed pod serves as `host` (`serves_as`): True; False if the pod
        has gone or exited, or at `deadline`."""
        from aiohttp import ClientSession, ClientTimeout

        async with ClientSession(timeout=ClientTimeout(total=5.0)) as http:
            async def serving() -> bool | None:
                found = pod()
                if found is not None and await serves_as(
                        http, _address(found, HEALTH_PORT), host, self.client_tls):
                    return True
                return None  # not yet

            def exited() -> int | None:
                found = pod()
                return -1 if found is None else exit_code(found)
            try:
                return await wait_ready(
                    serving, what=host, exited=exited, first=READY_POLLS[0],
                    longest=READY_POLLS[1],
                    timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
            except NotReady:
                return False
