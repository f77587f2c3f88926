"""Turns a service's declared actions into a running process with three listeners.

- internal: mutual TLS; the peer's identity comes from its verified certificate and is checked
  against each action's allow-list (and against this service's session, for compute services);
- public: one-way TLS + bearer token, only for services with a public port;
- health: one-way TLS, no authentication: /healthz, /readyz, /metrics.

Each listener serves `POST /execute` with `{"action", "params"}` (health excepted) and `GET /ws`,
a WebSocket carrying the same envelope plus an `id`, with pushed events for streaming actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import functools
import json
import logging
import os
import signal
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel

from twinstack import __version__
from twinstack.config import Settings, join_host_port, published_address, split_host_port
from twinstack.exitcodes import ExitCode, FatalError
from twinstack.logs import LogForwarder, request_id, service_id
from twinstack.metrics import ServiceMetrics
from twinstack.pki.identity import follow_identity
from twinstack.pki.tls import ReloadingContexts, TlsFiles
from twinstack.supervision import hold_lease
from twinstack.wire.actions import (
    PARTICIPANT_HEADERS,
    Action,
    Call,
    Participant,
    action,
    call_key,
    collect_actions,
    lookup,
    parse_envelope,
)
from twinstack.wire.client import ServiceClient
from twinstack.wire.errors import ActionError, malformed, unauthorized
from twinstack.wire.identity import PeerIdentity
from twinstack.wire.limits import InputLimits, decode, encode, leading_id, too_large
from twinstack.wire.openapi import document_route, service_document

log = logging.getLogger(__name__)
Channel = Literal["internal", "public"]


@dataclass(frozen=True)
class Ports:
    internal: int
    health: int
    public: int | None = None


class NoParams(BaseModel):
    model_config = {"extra": "forbid"}


class ServiceBase:
    """What every service is: a name, default ports, `@action` methods and optional hooks."""

    name: ClassVar[str]
    ports: ClassVar[Ports]
    forwards_logs: ClassVar[bool] = True

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings

    @staticmethod
    def warm_up() -> object:
        """Work of no session's that a waiting child of the forked spawner's pool does before
        a session claims it, so that start() finds it done (a cached function); none here."""
        return None

    async def start(self) -> None:
        """Open what the service needs; raise FatalError to refuse to start."""

    async def stop(self) -> None:
        """Release what start() opened; called once on the way out."""

    def is_ready(self) -> bool:
        return True

    async def refresh_metrics(self) -> None:
        """Bring gauges that are read, not counted, up to date: before each /metrics scrape."""

    def essential_tasks(self) -> dict[str, asyncio.Task[Any]]:
        """Background loops the service is useless without, by name: /healthz fails once
        one of them has ended, so whatever supervises the process restarts it."""
        return {}

    async def authenticate(self, token: str) -> Any | None:
        """Public channel: the principal a bearer token stands for, or None to refuse it."""
        return None

    def public_routes(self) -> list[web.RouteDef]:
        """Extra routes on the public listener, for protocols other than the action envelope."""
        return []

    def internal_routes(self) -> list[web.RouteDef]:
        """Extra routes on the internal (mutual TLS) listener; `peer_of` names the caller."""
        return []

    @action()
    async def info(self, call: Call, params: NoParams) -> dict[str, Any]:
        """Who this service is and where it can be reached."""
        return {"service": self.name, "version": __version__, "session": self.settings.session,
                "uptime_s": time.monotonic() - self.runtime.started,
                "peer": str(call.peer) if call.peer else None}


def _inherited_listener(fd: int) -> socket.socket:
    """The listening TCP socket this process was given as descriptor `fd`."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise FatalError(ExitCode.CONFIG_ERROR, f"--bind-fd {fd}: {exc.strerror}") from exc
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET,
                                                               socket.SO_ACCEPTCONN):
        sock.detach()
        raise FatalError(ExitCode.CONFIG_ERROR, f"--bind-fd {fd} is not a listening socket")
    return sock


def _listen(address: str) -> socket.socket:
    host, port = split_host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=512)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise FatalError(ExitCode.PORT_IN_USE, f"cannot bind {address}: already in use") \
                from exc
        raise FatalError(ExitCode.CONFIG_ERROR, f"cannot bind {address}: {exc.strerror}") from exc


def _stop_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM us when the parent (an LSS) dies, so no orphan outlives it."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent_pid:
        raise FatalError(ExitCode.DEPENDENCY_UNREACHABLE, f"parent {parent_pid} is already gone")


def peer_of(request: web.Request) -> PeerIdentity:
    """The verified identity of an internal-channel caller (401 without a certificate)."""
    peercert = request.transport.get_extra_info("peercert") if request.transport else None
    if not peercert:
        raise unauthorized("a client certificate is required")
    return PeerIdentity.from_peercert(peercert)


def _request_id(value: Any, default: str | None = None) -> str:
    """A caller's request id for the logs if it is a short printable string, else a new one."""
    if isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable():
        return value
    return default or uuid.uuid4().hex[:16]


def _participant(request: web.Request, peer: PeerIdentity) -> Participant | None:
    """Whom a relay link's calls are for (see PARTICIPANT_HEADERS); None from anyone else."""
    user, role = (request.headers.get(h) for h in PARTICIPANT_HEADERS)
    if peer.service != "relay" or not user or not role:
        return None
    return Participant(user, role)


def _forget_call(running: dict[Any, asyncio.Task[None]], call_id: Any,
                 task: asyncio.Task[None]) -> None:
    if running.get(call_id) is task:  # not a later call that reused the id
        del running[call_id]


def _jsonable(result: Any) -> Any:
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result


# A browser cannot set headers on a WebSocket: its page offers the token as a subprotocol,
# `Sec-WebSocket-Protocol: twinstack.bearer.<token>`, which the answer echoes.
BEARER_PROTOCOL = "twinstack.bearer."


def offered_bearer_protocol(request: web.Request) -> str | None:
    offered = request.headers.get("Sec-WebSocket-Protocol", "").split(",")
    return next((p.strip() for p in offered if p.strip().startswith(BEARER_PROTOCOL)), None)


def bearer_token(request: web.Request) -> str:
    """The token of `Authorization: Bearer <token>` (or of a WebSocket's bearer
    subprotocol), or 401."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    protocol = offered_bearer_protocol(request)
    if not token and protocol is not None:
        scheme, token = "bearer", protocol.removeprefix(BEARER_PROTOCOL)
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("send 'Authorization: Bearer <token>' (a browser's WebSocket: "
                           f"the subprotocol {BEARER_PROTOCOL}<token>)")
    if not (token.isascii() and token.isprintable()):  # bytes >= 0x80 decode to surrogates
        raise unauthorized("a token is printable ASCII, as auth's login issues it")
    return token


class BoundedWebSocket(web.WebSocketResponse):
    """A server WebSocket that says which limit a too-large message broke: aiohttp closes with
    1009 (message too big) but gives no reason."""

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"",
                    drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message:
            message = f"a message was over the {self._max_msg_size:,}-byte limit " \
                      "(max_message_bytes)".encode()
        return await super().close(code=code, message=message, drain=drain)


def websocket_for(request: web.Request, max_bytes: int) -> BoundedWebSocket:
    """The WebSocket to answer `request` with, or 400 (as JSON) for a request that is not a
    WebSocket handshake."""
    protocol = offered_bearer_protocol(request)
    ws = BoundedWebSocket(heartbeat=30, max_msg_size=max_bytes,
                          protocols=(protocol,) if protocol else ())
    if not ws.can_prepare(request).ok:
        raise malformed(f"{request.path} is a WebSocket: connect with a WebSocket client "
                        "(GET with Upgrade: websocket)")
    return ws


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=encode(value), status=status, content_type="application/json")


def cross_origin_guard(origins: frozenset[str]) -> Middleware:
    """Answer a browser's CORS preflight, and refuse a WebSocket opened by a page of another
    origin (browsers do not apply CORS to WebSockets). Callers that send no Origin (the
    Python client, the CLI) pass as before."""

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        preflight = request.method == "OPTIONS" and \
            "Access-Control-Request-Method" in request.headers
        if origin is not None and origin not in origins and \
                (preflight or request.headers.get("Upgrade", "").lower() == "websocket"):
            return error_response(ActionError(
                403, "origin_not_allowed", f"pages from {origin} may not call this service; "
                f"allowed: {', '.join(sorted(origins)) or 'none'} (web_origins)"))
        if preflight:
            return web.Response(status=204, headers={
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": "authorization, content-type, range, "
                                                "if-none-match",
                "Access-Control-Max-Age": "600"})
        return await handler(request)
    return guard


async def allow_origin(origins: frozenset[str], request: web.Request,
                       response: web.StreamResponse) -> None:
    """Let a page of an allowed origin read the answer (set before any answer is sent)."""
    origin = request.headers.get("Origin")
    if origin in origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "etag, content-range, retry-after"
    response.headers.add("Vary", "Origin")


def error_response(err: ActionError) -> web.Response:
    headers = {"Retry-After": str(max(1, round(err.retry_after)))} \
        if err.retry_after is not None else None
    response = json_response({"error": err.to_json()}, status=err.status)
    if headers:
        response.headers.update(headers)
    return response


async def read_json(request: web.Request, limits: InputLimits) -> Any:
    """The request's JSON body within `limits`; a body too large is refused before it is read."""
    if request.content_length is not None and request.content_length > limits.max_bytes:
        raise too_large(request.content_length, limits.max_bytes)
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise too_large(limits.max_bytes + 1, limits.max_bytes) from exc
    return decode(data, limits)


def internal_fault(what: str, exc: BaseException, request: str) -> ActionError:
    """A real fault: one log line (the traceback only at debug), a reference for the user."""
    log.error("%s failed: %s: %s (request %s)", what, type(exc).__name__, exc, request)
    log.debug("%s failed", what, exc_info=exc)
    return ActionError(500, "internal", f"{what} failed inside the service; the operator can "
                       f"find it in the logs under request {request}")


class Runtime:
    """One running service: its listeners, TLS, metrics, log forwarding and life cycle."""

    def __init__(self, service_cls: type[ServiceBase], settings: Settings) -> None:
        self.settings = settings
        self.service_cls = service_cls
        self.metrics = ServiceMetrics()
        self.started = time.monotonic()
        self.addresses: dict[str, str] = {}
        self.publish = ""
        self.exit_code = ExitCode.OK
        self._stopping = asyncio.Event()
        self._runners: list[web.AppRunner] = []
        self._sockets: set[web.WebSocketResponse] = set()  # open /ws connections, closed on stop
        self._tasks: list[asyncio.Task[Any]] = []
        self._forwarder: LogForwarder | None = None
        self._logger_client: ServiceClient | None = None
        self.service: ServiceBase | None = None
        self.actions: dict[str, Action] = {}
        self.limits = InputLimits(settings.max_message_bytes, settings.max_json_depth)

    # life cycle -----------------------------------------------------------------------------

    def request_stop(self, code: ExitCode = ExitCode.OK, reason: str = "") -> None:
        """Ask the service to stop; the first non-zero code wins."""
        if code != ExitCode.OK and self.exit_code == ExitCode.OK:
            self.exit_code = code
            log.error("stopping: %s", reason)
        self._stopping.set()

    async def stop_requested(self) -> None:
        await self._stopping.wait()

    async def start(self) -> None:
        s = self.settings
        if s.parent_pid is not None:
            _stop_with_parent(s.parent_pid)
        if s.cert is None or s.key is None or s.ca is None:
            raise FatalError(ExitCode.CERTIFICATE_ERROR,
                             "a service needs --cert, --key and --ca (or TWINSTACK_CERT, ...)")
        self.tls = ReloadingContexts(TlsFiles(s.cert, s.key, s.ca, s.crl_dir))
        internal_ctx = self.tls.server(require_client_cert=True)
        plain_ctx = self.tls.server(require_client_cert=False)
        await self._connect_logger()

        service = self.service_cls(self)
        self.actions = collect_actions(service)
        ports = service.ports
        wanted = {"internal": s.bind or f"0.0.0.0:{ports.internal}",
                  "health": s.health_bind or f"0.0.0.0:{ports.health}"}
        if ports.public is not None:
            wanted["public"] = s.public_bind or f"0.0.0.0:{ports.public}"
        sockets: dict[str, socket.socket] = {}
        try:
            for channel, address in wanted.items():
                sockets[channel] = _inherited_listener(s.bind_fd) \
                    if channel == "internal" and s.bind_fd is not None else _listen(address)
            await service.start()
        except BaseException:
            for sock in sockets.values():
                sock.close()
            raise
        self.service = service
        internal, health, public = sockets["internal"], sockets["health"], sockets.get("public")

        await self._serve("internal", self._internal_app(), internal, internal_ctx)
        await self._serve("health", self._health_app(), health, plain_ctx)
        if public is not None:
            await self._serve("public", self._public_app(), public, plain_ctx)
        self.publish = s.publish or published_address(*split_host_port(self.addresses["internal"]))
        self._tasks.append(asyncio.create_task(self._watch_certificates()))
        if s.lease_file is not None:
            self._tasks.append(asyncio.create_task(hold_lease(
                s.lease_file, s.lease_seconds,
                functools.partial(self.request_stop, ExitCode.DEPENDENCY_UNREACHABLE))))
        self.metrics.ready.labels(service.name).set(1)
        log.info("%s ready", service.name, extra={"listening": self.addresses,
                                                  "publish": self.publish, "pid": os.getpid()})
        if s.ready_file is not None:
            self._write_ready_file()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Open WebSockets are closed first: else the listeners wait out their shutdown
        # timeout for handlers that only end when the peer hangs up.
        await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"stopping")
                               for ws in list(self._sockets)), return_exceptions=True)
        await asyncio.gather(*(runner.cleanup() for runner in reversed(self._runners)))
        if self.service is not None:
            await self.service.stop()
        if self._forwarder is not None:
            await self._forwarder.flush_now()
            logging.getLogger().removeHandler(self._forwarder)
        if self._logger_client is not None:
            await self._logger_client.close()

    # plumbing -------------------------------------------------------------------------------

    async def _connect_logger(self) -> None:
        s = self.settings
        if s.logger_url is None or not self.service_cls.forwards_logs:
            return
        self._logger_client = ServiceClient(s.logger_url, self.tls.client(), timeout=5.0)
        if s.logger_required:
            await self._wait_for(self._logger_client, "logger")

        async def send(records: list[dict[str, Any]]) -> None:
            assert self._logger_client is not None
            await self._logger_client.call("append", {"records": records}, timeout=5.0)

        self._forwarder = LogForwarder(send, service=self.service_cls.name)
        logging.getLogger().addHandler(self._forwarder)
        self._tasks.append(asyncio.create_task(self._forwarder.run()))

    async def _wait_for(self, client: ServiceClient, what: str) -> None:
        deadline = time.monotonic() + self.settings.dependency_timeout
        delay = 0.05
        while True:
            try:
                await client.call("info", idempotent=False, timeout=2.0)
                return
            except ActionError as exc:
                if time.monotonic() + delay > deadline:
                    raise FatalError(
                        ExitCode.DEPENDENCY_UNREACHABLE,
                        f"{what} at {client.url} did not answer within "
                        f"{self.settings.dependency_timeout:g} s: {exc.message}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _serve(self, channel: str, app: web.Application, sock: socket.socket,
                     ctx: ssl.SSLContext) -> None:
        # Open WebSockets (LSS control links, event streams) must not hold up a stop for long.
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runners.append(runner)
        await web.SockSite(runner, sock, ssl_context=ctx).start()
        self.addresses[channel] = join_host_port(*sock.getsockname()[:2])

    async def _watch_certificates(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(s.cert_reload_seconds)
            if s.identity_from is not None:
                await asyncio.to_thread(follow_identity, s.identity_from, self.tls.files,
                                        s.session)
            if self.tls.reload_if_changed():
                self.metrics.certificate_reloads.labels(self.service_cls.name).inc()

    def _write_ready_file(self) -> None:
        path = self.settings.ready_file
        assert path is not None
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"service": self.service_cls.name, "pid": os.getpid(),
                                   "publish": self.publish, **self.addresses}))
        os.replace(tmp, path)

    # the three apps ------------------------------------------------------------------------

    def _app(self) -> web.Application:
        return web.Application(client_max_size=self.limits.max_bytes)

    def _internal_app(self) -> web.Application:
        app = self._app()
        app.router.add_post("/execute", self._handler(self._execute, "internal"))
        app.router.add_get("/ws", self._handler(self._websocket, "internal"))
        assert self.service is not None
        app.router.add_routes(self.service.internal_routes())
        return app

    def _public_app(self) -> web.Application:
        app = self._app()
        origins = frozenset(o.strip().rstrip("/") for o in self.settings.web_origins.split(",")
                            if o.strip())
        app.middlewares.append(cross_origin_guard(origins))
        app.on_response_prepare.append(functools.partial(allow_origin, origins))
        app.router.add_post("/execute", self._handler(self._execute, "public"))
        app.router.add_post("/actions/{action}", self._handler(self._execute, "public"))
        app.router.add_get("/ws", self._handler(self._websocket, "public"))
        assert self.service is not None
        app.router.add_routes([document_route(service_document(self.service.name,
                                                               self.actions))])
        app.router.add_routes(self.service.public_routes())
        return app

    def _health_app(self) -> web.Application:
        async def healthz(request: web.Request) -> web.Response:
            dead = sorted(name for name, task in (
                self.service.essential_tasks() if self.service else {}).items() if task.done())
            if dead:
                return json_response({"status": "failing", "service": self.service_cls.name,
                                      "stopped": dead}, status=503)
            return json_response({"status": "ok", "service": self.service_cls.name})

        async def readyz(request: web.Request) -> web.Response:
            ready = self.service is not None and self.service.is_ready() \
                and not self._stopping.is_set()
            return json_response({"ready": ready}, status=200 if ready else 503)

        async def metrics(request: web.Request) -> web.Response:
            if self.service is not None:
                try:
                    await self.service.refresh_metrics()
                except Exception as exc:  # what was counted is still worth a scrape
                    log.warning("metrics not refreshed: %s", exc)
            if self._forwarder is not None:
                self.metrics.log_records_dropped.labels(self.service_cls.name).set(
                    self._forwarder.dropped)
            return web.Response(body=self.metrics.exposition(),
                                content_type="text/plain", charset="utf-8")

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)
        return app

    def _handler(self, fn: Callable[..., Any], channel: Channel) -> Callable[..., Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await fn(request, channel)
        return handle

    # calls ---------------------------------------------------------------------------------

    async def _caller(self, request: web.Request, channel: Channel, rid: str) -> Call:
        if channel == "internal":
            peer = peer_of(request)
            return Call("internal", rid, peer=peer, on_behalf=_participant(request, peer))
        assert self.service is not None
        principal = await self.service.authenticate(bearer_token(request))
        if principal is None:
            raise unauthorized("the token is invalid, expired or revoked")
        return Call("public", rid, principal=principal, remote=request.remote)

    def _refused(self, err: ActionError) -> None:
        if err.status in (401, 403):
            self.metrics.refused_calls.labels(self.service_cls.name, err.code).inc()
            log.warning("refused call: %s", err.message)

    def _resolve(self, call: Call, body: Any) -> tuple[Action, BaseModel]:
        name, raw_params = parse_envelope(body)
        found = lookup(self.actions, name, call.channel)
        found.permits(call, self.settings.session)
        return found, found.parse(raw_params)

    async def _run(self, found: Action, call: Call, params: BaseModel) -> Any:
        token = request_id.set(call.request_id)
        started, outcome = time.perf_counter(), "ok"
        try:
            return _jsonable(await found.handler(call, params))
        except ActionError:
            outcome = "error"
            raise
        except asyncio.CancelledError:  # a WebSocket caller cancelled it or went away
            outcome = "cancelled"
            raise
        except Exception as exc:
            outcome = "crash"
            raise internal_fault(found.name, exc, call.request_id) from exc
        finally:
            self.metrics.action_seconds.labels(self.service_cls.name, found.name, outcome) \
                .observe(time.perf_counter() - started)
            request_id.reset(token)

    def _reply(self, value: dict[str, Any]) -> bytes:
        """Encode a reply, refusing one larger than the message limit (no peer could take it)."""
        data = encode(value)
        if len(data) > self.limits.max_bytes:
            raise too_large(len(data), self.limits.max_bytes, "the result")
        return data

    async def _execute(self, request: web.Request, channel: Channel) -> web.StreamResponse:
        rid = _request_id(request.headers.get("X-Request-Id"))
        try:
            # The internal channel is gated by the TLS peer; the public one by a bearer token,
            # which anonymous actions (login, service info) do without.
            call = await self._caller(request, channel, rid) if channel == "internal" else None
            body = await read_json(request, self.limits)  # /actions/NAME: the body is params
            name, raw_params = (request.match_info["action"], body) \
                if "action" in request.match_info else parse_envelope(body)
            found = lookup(self.actions, name, channel)
            if call is None:
                call = Call("public", rid, remote=request.remote) if found.anonymous \
                    else await self._caller(request, channel, rid)
            found.permits(call, self.settings.session)
            params = found.parse(raw_params)
            if found.streams:
                raise ActionError(400, "streaming_action",
                                  f"{found.name} streams events: call it over the WebSocket /ws",
                                  "action")
            body = self._reply({"result": await self._run(found, call, params)})
            return web.Response(body=body, content_type="application/json")
        except ActionError as err:
            self._refused(err)
            return error_response(err)

    async def _websocket(self, request: web.Request, channel: Channel) -> web.StreamResponse:
        try:
            call = await self._caller(request, channel, uuid.uuid4().hex[:16])
            ws = websocket_for(request, self.limits.max_bytes)
        except ActionError as err:
            self._refused(err)
            return error_response(err)
        await ws.prepare(request)
        running: dict[Any, asyncio.Task[None]] = {}
        self._sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    body = decode(msg.data, self.limits)
                    if not isinstance(body, dict):
                        raise malformed("a message is an object {\"id\", \"action\", "
                                        "\"params\"}")
                    call_id = call_key(body.get("id"))
                except ActionError as err:
                    await self._ws_error(ws, leading_id(msg.data), err)
                    continue
                if body.get("cancel"):
                    task = running.pop(call_id, None)
                    if task is not None and task.cancel():
                        self._cancelled(task.get_name(), call_id)
                    continue
                rid = _request_id(body.get("request"), call.request_id)
                one = replace(call, request_id=str(rid))
                task = asyncio.create_task(self._ws_call(ws, call_id, one, body),
                                           name=str(body.get("action"))[:64])
                running[call_id] = task
                task.add_done_callback(functools.partial(_forget_call, running, call_id))
        finally:
            self._sockets.discard(ws)
            for task in running.values():
                task.cancel()
        return ws

    def _cancelled(self, name: str, call_id: Any) -> None:
        """Say that a call was dropped on request (ending a stream is routine: not said)."""
        found = self.actions.get(name)
        if found is not None and not found.streams:
            log.info("%s cancelled at its caller's request", name, extra={"call": call_id})

    async def _ws_error(self, ws: web.WebSocketResponse, call_id: Any, err: ActionError) -> None:
        self._refused(err)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(encode({"id": call_id, "error": err.in_message()}).decode())

    async def _ws_call(self, ws: web.WebSocketResponse, call_id: Any, call: Call,
                       body: Any) -> None:
        try:
            found, params = self._resolve(call, body)
            if not found.streams:
                result = await self._run(found, call, params)
                await ws.send_str(self._reply({"id": call_id, "result": result}).decode())
                return
            token = request_id.set(call.request_id)
            try:
                async for event in found.handler(call, params):
                    await ws.send_str(self._reply({"id": call_id, "event": _jsonable(event)})
                                      .decode())
            finally:
                request_id.reset(token)
            await ws.send_str(encode({"id": call_id, "result": None}).decode())
        except ActionError as err:
            await self._ws_error(ws, call_id, err)
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        except Exception as exc:
            await self._ws_error(ws, call_id, internal_fault("a stream", exc, call.request_id))


async def serve(service_cls: type[ServiceBase], settings: Settings) -> ExitCode:
    return await serve_together([(service_cls, settings)])


async def serve_together(services: list[tuple[type[ServiceBase], Settings]]) -> ExitCode:
    """Serve until SIGTERM/SIGINT or a request_stop(); return the first non-zero exit code.

    Several services in one process (`twinstack up --combined`) each keep their own runtime:
    listeners, certificate, metrics, and log records under their own name (each runs in a
    context of its own). They start in the order given and stop in reverse; one stopping
    stops them all, so that the process exits and its supervisor restarts it whole."""
    runtimes: list[tuple[Runtime, contextvars.Context]] = []
    for service_cls, settings in services:
        context = contextvars.copy_context()
        context.run(service_id.set, service_cls.name)
        runtimes.append((Runtime(service_cls, settings), context))

    def stop_all() -> None:
        for runtime, _ in runtimes:
            runtime.request_stop()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all)
    started: list[tuple[Runtime, contextvars.Context]] = []
    try:
        for runtime, context in runtimes:
            started.append((runtime, context))
            await asyncio.create_task(runtime.start(), context=context)
        waits = [asyncio.create_task(runtime.stop_requested()) for runtime, _ in runtimes]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
    finally:
        for runtime, context in reversed(started):
            await asyncio.create_task(runtime.stop(), context=context)
    return next((r.exit_code for r, _ in runtimes if r.exit_code != ExitCode.OK), ExitCode.OK)
