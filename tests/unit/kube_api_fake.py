"""A fake Kubernetes API *transport*: an aiohttp server on loopback speaking enough of /api/v1.

The code under test talks to it through the real kubernetes_asyncio client (CoreV1Api over
ApiClient, host http://127.0.0.1:PORT), so the reflector and spawner run unchanged. It serves
pods (list, watch as JSON lines, create, delete, log, and a JSON merge patch of their labels
that honours a resourceVersion precondition with 409 Conflict, as the API server does),
Secrets (create, list, delete, a merge patch of their data and labels) and Services
(create, list, delete), keeps one resourceVersion counter and a history
of pod events, and can misbehave the way an API server does: compact its history (watches from
older versions get 410 Gone), drop watch connections, hang a watch, hold lists back, or answer
503 to everything. With `kubelet` set, created and deleted pods are handed to it (a test's
stand-in for the node, e.g. one that runs them as processes) instead of turning ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web


def _container(ready: bool, state: dict[str, Any]) -> dict[str, Any]:
    return {"name": "main", "image": "twinstack-compute", "imageID": "sha256:0", "ready": ready,
            "restartCount": 0, "state": state}


RUNNING_READY = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                 "containerStatuses": [_container(True, {"running": {}})]}
PENDING = {"phase": "Pending"}


def exited(code: int) -> dict[str, Any]:
    return {"phase": "Failed" if code else "Succeeded",
            "containerStatuses": [_container(False, {"terminated": {"exitCode": code}})]}


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    kind: str  # pods, secrets, services
    name: str | None
    query: dict[str, str]

    @property
    def what(self) -> str:
        """list, watch, create, delete, get, or log."""
        if self.method == "GET":
            return ("watch" if self.query.get("watch", "").lower() == "true" else
                    "list" if self.name is None else "get")
        return {"POST": "create", "DELETE": "delete", "PATCH": "patch"}.get(self.method,
                                                                             self.method)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _matches(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selectors (`a=b,c=d`), the only kind the reflector sends."""
    wanted = (term.split("=", 1) for term in selector.split(",") if term)
    return all(labels.get(key) == value for key, value in wanted)


class FakeKubeApi:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {
            "pods": {}, "secrets": {}, "services": {}}
        self.version = 1
        self.history: list[tuple[int, dict[str, Any]]] = []  # (version, pod watch event)
        self.compacted = 0  # watches from a version below this are answered 410 Gone
        self.seen: list[Seen] = []
        self.down = False  # answer 503 to every request
        self.forbidden: set[tuple[str, str]] = set()  # (method, kind) answered 403
        self.hang = False  # new watches send nothing and never end
        self.hung_closed = 0  # hung watches the client gave up on
        self.lists_held: asyncio.Event | None = None  # lists wait for it to be set
        self.ready_on_create = True  # a created pod becomes ready right after its ADDED
        self.kubelet: Any = None  # created(pod), deleted(name), secret_changed(name): runs pods
        self._watchers: set[asyncio.Queue[Any]] = set()
        self._changed = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_route("*", "/api/v1/namespaces/{ns}/{kind}", self._handle)
        self.app.router.add_route("*", "/api/v1/namespaces/{ns}/{kind}/{name}", self._handle)
        self.app.router.add_route("*", "/api/v1/namespaces/{ns}/{kind}/{name}/log",
                                  self._handle)
        self.runner = web.AppRunner(self.app, handler_cancellation=True,
                                  shutdown_timeout=0.01)  # 0 would mean no limit

    # --- what tests call -------------------------------------------------------------------

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait until predicate() holds, re-checked after each request and each change."""
        while True:
            changed = self._changed
            if predicate():
                return
            await changed.wait()

    @property
    def watching(self) -> bool:
        """A watch is open and streaming (hung watches do not count)."""
        return bool(self._watchers)

    def requests(self, what: str, kind: str = "pods", after: int = 0) -> list[Seen]:
        return [s for s in self.seen[after:] if s.what == what and s.kind == kind]

    def add_pod(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        pod = copy.deepcopy(pod)
        pod["status"] = copy.deepcopy(status)
        self._emit("ADDED", pod)

    def set_status(self, name: str, status: dict[str, Any], quietly: bool = False) -> None:
        """Change a pod's status; quietly: no watch event (only a list shows it)."""
        pod = copy.deepcopy(self.objects["pods"][name])
        pod["status"] = copy.deepcopy(status)
        if quietly:
            self._store(pod)
        else:
            self._emit("MODIFIED", pod)

    def forget(self, name: str) -> None:
        """Delete a pod without a watch event, as if its DELETED had been compacted away."""
        del self.objects["pods"][name]
        self.version += 1

    def compact(self, tell_watchers: bool = True) -> None:
        """Drop the event history: watches from older versions now get 410 Gone."""
        self.compacted = self.version
        self.history.clear()
        if tell_watchers:
            self._broadcast("gone")

    def bookmark(self) -> None:
        """Tell open watches the current version (no object changed since theirs)."""
        self.version += 1
        self._broadcast({"type": "BOOKMARK", "object": {
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self.version)}}})

    async def go_away(self) -> None:
        """Stop serving: open connections are cut and new ones refused."""
        await self.runner.cleanup()

    def drop_watches(self) -> None:
        """Cut every open watch connection mid-stream."""
        self._broadcast("drop")

    # --- the API ---------------------------------------------------------------------------

    def _store(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.objects["pods"][obj["metadata"]["name"]] = obj

    def _emit(self, kind: str, pod: dict[str, Any]) -> None:
        if kind == "DELETED":
            self.version += 1
            pod["metadata"]["resourceVersion"] = str(self.version)
            del self.objects["pods"][pod["metadata"]["name"]]
        else:
            self._store(pod)
        event = {"type": kind, "object": copy.deepcopy(pod)}
        self.history.append((self.version, event))
        self._broadcast(event)

    def _broadcast(self, item: Any) -> None:
        for queue in self._watchers:
            queue.put_nowait(item)
        self._notify()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind, name = request.match_info["kind"], request.match_info.get("name")
        seen = Seen(request.method, kind, name, dict(request.query))
        if request.path.endswith("/log"):
            seen.method = "LOG"
        self.seen.append(seen)
        self._notify()
        if self.down:
            return web.json_response(_status(503, "ServiceUnavailable", "etcd is down"),
                                     status=503)
        if (request.method, kind) in self.forbidden:
            return web.json_response(_status(403, "Forbidden", f"may not {request.method}"),
                                     status=403)
        if seen.what == "watch":
            return await self._watch(request, seen.query)
        if seen.what == "list":
            if self.lists_held is not None:
                await self.lists_held.wait()
            selector = seen.query.get("labelSelector", "")
            items = [o for o in self.objects[kind].values()
                     if _matches(o["metadata"].get("labels") or {}, selector)]
            return web.json_response({"kind": "PodList", "apiVersion": "v1",
                                      "metadata": {"resourceVersion": str(self.version)},
                                      "items": items})
        if seen.method == "LOG":
            return web.Response(text="starting\nready\n")
        return self._write(request.method, kind, name, await request.read())

    def _write(self, method: str, kind: str, name: str | None,
               body: bytes) -> web.Response:
        store = self.objects[kind]
        if method == "POST":
            obj = json.loads(body)
            name = obj["metadata"]["name"]
            if name in store:
                return web.json_response(_status(409, "AlreadyExists", f"{name} exists"),
                                         status=409)
            if kind == "pods":
                self.add_pod(obj, PENDING)
                if self.kubelet is not None:
                    self.kubelet.created(copy.deepcopy(obj))
                elif self.ready_on_create:
                    asyncio.get_running_loop().call_soon(self.set_status, name, RUNNING_READY)
            else:
                store[name] = obj
            return web.json_response(obj, status=201)
        if method == "DELETE" and name is not None:
            if name not in store:
                return web.json_response(_status(404, "NotFound", f"{name} not found"),
                                         status=404)
            obj = store[name]
            if kind == "pods":
                self._emit("DELETED", copy.deepcopy(obj))
                if self.kubelet is not None:
                    self.kubelet.deleted(name)
            else:
                del store[name]
            return web.json_response(obj)
        if method == "PATCH" and kind == "pods" and name is not None:
            return self._patch(name, json.loads(body))
        if method == "PATCH" and kind == "secrets" and name is not None:
            if name not in store:
                return web.json_response(_status(404, "NotFound", f"{name} not found"),
                                         status=404)
            changes = json.loads(body)
            store[name]["metadata"].setdefault("labels", {}).update(
                changes.get("metadata", {}).get("labels", {}))
            if "stringData" in changes:
                store[name].setdefault("stringData", {}).update(changes["stringData"])
                if self.kubelet is not None:
                    self.kubelet.secret_changed(name)
            return web.json_response(store[name])
        return web.json_response(_status(405, "MethodNotAllowed", method), status=405)

    def _patch(self, name: str, patch: dict[str, Any]) -> web.Response:
        """A JSON merge patch of a pod's labels (what the warm pool sends)."""
        if name not in self.objects["pods"]:
            return web.json_response(_status(404, "NotFound", f"{name} not found"), status=404)
        pod = copy.deepcopy(self.objects["pods"][name])
        metadata = patch.get("metadata", {})
        wanted = metadata.get("resourceVersion")
        if wanted is not None and wanted != pod["metadata"]["resourceVersion"]:
            return web.json_response(_status(409, "Conflict", f"the object has been modified; "
                                             f"{name} is at another resourceVersion"), status=409)
        labels = pod["metadata"].setdefault("labels", {})
        for key, value in (metadata.get("labels") or {}).items():
            if value is None:
                labels.pop(key, None)
            else:
                labels[key] = value
        self._emit("MODIFIED", pod)
        return web.json_response(pod)

    async def _watch(self, request: web.Request, query: dict[str, str]) -> web.StreamResponse:
        since = int(query.get("resourceVersion") or 0)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)

        async def send(event: dict[str, Any]) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        if self.hang:
            try:
                await asyncio.Event().wait()  # until the client hangs up (handler cancelled)
            finally:
                self.hung_closed += 1
                self._notify()
        if since < self.compacted:
            await send({"type": "ERROR", "object": _status(410, "Expired", "too old")})
            return response
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._watchers.add(queue)
        self._notify()
        try:
            for version, event in list(self.history):
                if version > since:
                    await send(event)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(float(query.get("timeoutSeconds", 3600))):
                    while True:
                        item = await queue.get()
                        if item == "drop":
                            assert request.transport is not None
                            request.transport.abort()
                            return response
                        if item == "gone":
                            await send({"type": "ERROR",
                                        "object": _status(410, "Expired", "compacted")})
                            break
                        await send(item)
        finally:
            self._watchers.discard(queue)
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def fake_kube_api() -> AsyncIterator[tuple[FakeKubeApi, Any]]:
    """The fake on a free loopback port, and a real CoreV1Api pointed at it."""
    from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api

    fake = FakeKubeApi()
    await fake.runner.setup()
    site = web.TCPSite(fake.runner, "127.0.0.1", 0)
    await site.start()
    port = fake.runner.addresses[0][1]
    try:
        async with ApiClient(Configuration(host=f"http://127.0.0.1:{port}")) as api:
            yield fake, CoreV1Api(api)
    finally:
        await fake.go_away()
