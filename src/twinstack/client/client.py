"""A blocking client over the platform's public channels (gss, auth, relay).

    with Client("https://gss:7400", ca="ca.pem") as tw:
        tw.login("ada", password)
        project = tw.create_project("survey", "data analysis")
        with tw.open_session(project["id"]) as session:   # leaving the block detaches;
            result = session.call("kriging", "interpolate", points=..., values=..., grid=...)
        # the session keeps running for everyone else in it; session.close() stops it

The network work runs on a private event loop in a background thread, so the API is plain
blocking calls and session events keep arriving while the caller does something else.

Errors say what is at fault: a CA file that is missing or unreadable raises FileNotFoundError /
PermissionError, one without a certificate ValueError, each naming the path (before any network
traffic); a platform that cannot be reached raises ServiceUnavailable naming the URL and the cause
(retrying later may help); a certificate that does not verify raises ActionError with code
`certificate_rejected` (status 495), naming the URL, the reason and the CA file (retrying will not
help: the trust configuration is wrong).

A session survives faults on the way to its services: after a drop of its relay connection it
re-attaches by itself (`reconnecting` / `reconnected` events, `Session.state`), calls marked
`idempotent=True` are sent again across a drop or a compute service restart, and every call
has a timeout (300 s unless given), after which the server is told to cancel it. Calls raise
only ActionError subclasses: ConnectionDropped (the connection dropped while a call that is
not idempotent was in flight: it may or may not have run) and CallTimeout (also a
TimeoutError) among them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import WSCloseCode

from twinstack.client.credentials import Credentials, load_credentials
from twinstack.client.model import Geochemistry, Meshing, Model, Modeling, Solver, Visualization
from twinstack.pki.tls import TLS12_CIPHERS
from twinstack.wire.client import Replicas
from twinstack.wire.errors import ActionError, ServiceUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

# WebSocket close codes the relay uses to end a client's connection for good, and the state the
# session then has for this client (it may go on running for others).
CLOSE_STATES = {4401: "revoked", 4403: "revoked"}
ENDED_STATES = ("failed", "lost", "closed", "revoked")
RECONNECTING = "reconnecting"  # this client's connection to the relay is being re-made

# After a drop the relay did not decide on, a session re-attaches first after 0.1 s, then twice
# as long each time up to 5 s. Idempotent calls wait the same way for a service to come back.
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 5.0
DEFAULT_CALL_TIMEOUT = 300.0  # Session.call's default: then it gives up and cancels the call
CANCEL_ANSWER_TIMEOUT = 2.0  # how long a timed-out call waits for the relay to confirm cancel
HEARTBEAT = 15.0  # a silent connection (no pong) counts as dropped after this
MAX_MESSAGE_BYTES = 256 * 2**20  # the relay bounds its messages; this only guards against a bug
# Actions that do no harm when they run twice: sent to the next replica when the connection to
# one fails with the request perhaps delivered (one whose connection was refused always is).
REPEATABLE = frozenset({"info", "login", "list_projects", "project_history", "list_sessions",
                        "open_session", "close_session", "list_nodes", "accounts"})


def tls_context(ca: str | Path | None) -> ssl.SSLContext:
    """A verifying client context trusting `ca` (or the system store), with the platform's
    TLS policy (1.2+, AEAD suites only); errors name the file."""
    if ca is None:
        return _policy(ssl.create_default_context())
    path = Path(ca).expanduser()
    where = f"CA file {path.resolve()}" + ("" if path.is_absolute() else f" (given as {ca!r})")
    try:
        return _policy(ssl.create_default_context(cafile=str(path)))
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            raise ValueError(f"{where} holds no usable PEM certificate: "
                             f"{exc.reason or exc}") from exc
        raise type(exc)(exc.errno, f"{where}: {exc.strerror or exc}") from exc


def _policy(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    return ctx


def connection_error(url: str, exc: BaseException, ca: str | Path | None) -> ActionError:
    """The client's error for a failed connection: the URL, the cause, and whom we trusted."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        why = getattr(cert_error, "verify_message", None) or str(cert_error)
        trusted = f"CA file {Path(ca).resolve()}" if ca is not None else "the system CA store"
        return ActionError(495, "certificate_rejected",
                           f"the certificate of {url} does not verify: {why} (trusting {trusted})")
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, socket.gaierror) or not os_error.errno:
            why = os_error.strerror or str(os_error)  # resolver errors have their own numbers
        else:
            why = os.strerror(os_error.errno)
        return ServiceUnavailable(f"cannot reach {url}: {why}")
    if isinstance(exc, TimeoutError):
        return ServiceUnavailable(f"{url} did not answer in time")
    return ServiceUnavailable(f"{url}: {exc or type(exc).__name__}")


def close_error(session: str, code: int | None, reason: str) -> ActionError:
    """What a call fails with once the relay has closed the session's connection."""
    message = (f"the relay closed the connection to session {session}: "
               f"{reason or 'no reason given'} (close code {code})")
    status = (code or 0) - 4000
    if 400 <= status < 500:
        return ActionError(status, {401: "unauthorized", 403: "forbidden"}.get(status, "closed"),
                           message)
    return ServiceUnavailable(message)


class SessionFailed(Exception):
    """The session could not start or stopped for good; carries the platform's reason."""

    def __init__(self, event: dict[str, Any]) -> None:
        detail = f" (exit code {event['exit_code']})" if event.get("exit_code") is not None else ""
        super().__init__(f"session {event.get('session')} {event.get('state', 'failed')}: "
                         f"{event.get('reason')}{detail}")
        self.event = event
        self.exit_code = event.get("exit_code")
        self.output: list[str] = event.get("output") or []


class _Loop:
    """An event loop in a daemon thread that blocking methods hand coroutines to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="twinstack-client")
        self.thread.start()

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self.closed:
            coro.close()
            raise RuntimeError("this client is closed: make a new one")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Client:
    """The platform at `url` (gss's public address; with replicas, their addresses
    comma-separated: a call that cannot reach one goes on to the next), trusting the CA file
    `ca`.

    `token` resumes a login made elsewhere (`twinstack login` stores one: see
    `Client.from_credentials`).
    """

    def __init__(self, url: str, ca: str | Path | None = None, timeout: float = 60.0,
                 token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.front_door = Replicas(url)
        self.timeout = timeout
        self.ca = ca
        self.ssl = tls_context(ca)
        self.token = token
        self.user: dict[str, Any] | None = None
        self._loop = _Loop()
        self._http: aiohttp.ClientSession = self._loop.run(self._new_http())
        self._info: dict[str, Any] | None = None
        self._auth: Replicas | None = None
        self.attached: list[Session] = []  # sessions whose WebSocket is open

    @classmethod
    def from_credentials(cls, path: Path | None = None, timeout: float = 60.0) -> Client:
        """A client logged in with what `twinstack login` stored (LookupError if nothing)."""
        credentials: Credentials | None = load_credentials(path)
        if credentials is None:
            raise LookupError("log in first: twinstack login NAME")
        client = cls(credentials.url, ca=credentials.ca, timeout=timeout,
                     token=credentials.token)
        client.user = {"name": credentials.user}
        return client

    async def _new_http(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop every session connection (the sessions keep running) and the HTTP pool; a
        second call does nothing."""
        if self._loop.closed:
            return
        for session in list(self.attached):
            session.detach()
        self._loop.run(self._http.close())
        self._loop.close()

    # plumbing -------------------------------------------------------------------------------

    async def _post(self, replicas: Replicas, action: str, params: dict[str, Any]) -> Any:
        """Call `action` on one replica; on the next if that one cannot be reached and the
        call may be repeated."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        for url, last in replicas.each():
            try:
                async with self._http.post(
                        f"{url}/execute", json={"action": action, "params": params},
                        headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)) as r:
                    body = await r.json(content_type=None)
                break
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = connection_error(url, exc, self.ca)
                refused = isinstance(exc, aiohttp.ClientConnectorError)
                if error.status != 503 or last or not (refused or action in REPEATABLE):
                    raise error from exc
                log.info("%s; trying %s there", error.message, action)
                replicas.fail_over(url)
        if r.status >= 400:
            raise ActionError.from_json(r.status, (body or {}).get("error", {}))
        return body["result"]

    def _call(self, replicas: Replicas, action: str, **params: Any) -> Any:
        return self._loop.run(self._post(replicas, action, {k: v for k, v in params.items()
                                                            if v is not None}))

    def gss(self, action: str, **params: Any) -> Any:
        """Any public action of the global session service."""
        return self._call(self.front_door, action, **params)

    def auth(self, action: str, **params: Any) -> Any:
        """Any public action of the auth service."""
        if self._auth is None:
            self._auth = Replicas(self.info()["auth_url"])
        return self._call(self._auth, action, **params)

    # the platform ------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = self.gss("info")
        return self._info

    def login(self, user: str, password: str) -> dict[str, Any]:
        reply = self.auth("login", user=user, password=password)
        self.token, self.user = reply["token"], reply["user"]
        return reply

    def logout(self) -> None:
        self.auth("logout")
        self.token = None

    def create_project(self, name: str, session_type: str) -> dict[str, Any]:
        return self.gss("create_project", name=name, session_type=session_type)

    def projects(self) -> list[dict[str, Any]]:
        return self.gss("list_projects")["projects"]

    def rename_project(self, project_id: str, name: str) -> dict[str, Any]:
        return self.gss("rename_project", project=project_id, name=name)

    def project_history(self, project_id: str) -> dict[str, Any]:
        """The project's model states (branches too), oldest first, with head and tip ids;
        readable whether or not a session is open."""
        return dict(self.gss("project_history", project=project_id))

    def delete_project(self, project_id: str) -> None:
        self.gss("delete_project", project=project_id)

    def share(self, project_id: str, *, user: str | None = None, group: str | None = None,
              role: str = "viewer") -> None:
        self.gss("share_project", project=project_id, user=user, group=group, role=role)

    def unshare(self, project_id: str, *, user: str | None = None,
                group: str | None = None) -> None:
        self.gss("unshare_project", project=project_id, user=user, group=group)

    def sessions(self) -> list[dict[str, Any]]:
        return self.gss("list_sessions")["sessions"]

    def session_types(self) -> dict[str, list[str]]:
        """Each session type a project can have, with the compute services it starts."""
        return dict(self.info()["session_types"])

    def accounts(self) -> dict[str, list[dict[str, Any]]]:
        """Every user and group (with its members). Administrators only."""
        return dict(self.auth("accounts"))

    def nodes(self) -> list[dict[str, Any]]:
        """The session nodes (LSS): state, capacity, live sessions, load. Administrators only."""
        return self.gss("list_nodes")["nodes"]

    def open_session(self, project_id: str, timeout: float = 900.0) -> Session:
        """Open (or join) the project's session and wait until its services are ready.

        While every session node is full the session waits in the platform's queue (state
        `queued`; a `queued` event tells its place and an ETA whenever the place changes; the
        platform gives up after its queue timeout, 600 s by default). `timeout` covers the
        wait in the queue and the start; a session still queued then keeps its place: opening
        it again waits on. Use it in a `with` block to detach at its end: the session goes on
        for the other participants; `Session.close()` stops it for everyone.
        """
        record = self.gss("open_session", project=project_id)
        if record["state"] in ENDED_STATES:  # e.g. it could not be placed at all
            raise SessionFailed({"session": record["id"], "state": record["state"],
                                 "reason": record["reason"]})
        session = Session(self, record)
        try:
            session.wait_ready(timeout)
        except BaseException:
            session.detach()
            raise
        return session


class ConnectionDropped(ServiceUnavailable):
    """The connection to the relay dropped while a call was in flight, so it may or may not
    have run. Calls not marked idempotent end so (idempotent ones are sent again)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"the connection to the relay dropped while {what} was in flight; it "
                         "may or may not have run (the session is re-attaching)")
        self.code = "connection_dropped"


class CallTimeout(ActionError, TimeoutError):
    """A call gave no answer within its timeout, so the client asked the relay to cancel it.
    `cancelled` says whether the relay confirmed that it told the service to stop."""

    def __init__(self, what: str, timeout: float, cancelled: bool) -> None:
        outcome = "it was cancelled" if cancelled else "it was asked to stop (not confirmed)"
        super().__init__(504, "timeout", f"{what} gave no answer in {timeout:g} s; {outcome}")
        self.cancelled = cancelled


class Session:
    """A live session as one participant sees it: call its compute services, read its events.

    `with session:` detaches at the end of the block (the session keeps running for everyone
    else); `close()` stops it for all. `state` follows the session (starting, ready, failed, lost,
    closed); it becomes `revoked` when the relay ends this client's connection because its token
    was revoked (close code 4401) or its access removed (4403): pending and later calls then fail
    with an ActionError carrying the relay's reason, and a `disconnected` event is queued. Any
    close code 4000-4999 (the relay's own decision, such as 4408 for a client that does not read
    its events) is final in the same way.

    Any other drop (a relay restart, a network fault) is not: the session re-attaches by itself,
    first after 0.1 s, then waiting twice as long each time up to 5 s, for as long as it is
    attached. Meanwhile `state` is `reconnecting` and a `reconnecting` event is queued; once back,
    `state` is the session's again, a `reconnected` event (with `attempts` and `after_s`) is
    queued, and events flow again: the relay first sends the session's state, since events
    sent while the client was away are not replayed. Calls made while away wait for the
    connection (within their timeout).
    """

    def __init__(self, client: Client, record: dict[str, Any]) -> None:
        self.client = client
        self.id: str = record["id"]
        self.project_id: str = record["project"]
        self.state: str = record["state"]
        self.services: dict[str, Any] = record.get("services") or {}
        self.model = Model(self)
        self.modeling = Modeling(self)
        self.meshing = Meshing(self)
        self.visualization = Visualization(self)
        self.solver = Solver(self)
        self.geochemistry = Geochemistry(self)
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._ids = itertools.count(1)
        self._replies: dict[int, tuple[asyncio.Future[dict[str, Any]], str]] = {}
        self._cancelled: set[int] = set()  # calls the relay confirmed it cancelled
        self._state_changed = threading.Condition()
        self._last_failure: dict[str, Any] | None = None
        self._disconnected: ActionError | None = None  # why calls cannot go through any more
        self._detaching = False
        self._up = asyncio.Event()  # set while attached, and once calls can never go through
        self._news = asyncio.Event()  # set (and renewed) when a service restarts or state moves
        # here, not on the loop: info() blocks on it
        self._relays = Replicas(client.info()["relay_url"])
        self._ws: aiohttp.ClientWebSocketResponse = client._loop.run(self._connect())
        self._keeper: asyncio.Task[None] = client._loop.run(self._start_keeper())
        client.attached.append(self)

    async def _start_keeper(self) -> asyncio.Task[None]:
        self._up.set()
        return asyncio.create_task(self._keep(), name=f"session {self.id}")

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        """Attach through the relay in use, or, if it cannot be reached, the next replica."""
        for relay, last in self._relays.each():
            try:
                async with asyncio.timeout(self.client.timeout):
                    return await self.client._http.ws_connect(
                        f"{relay}/session?id={self.id}", heartbeat=HEARTBEAT,
                        max_msg_size=MAX_MESSAGE_BYTES,
                        headers={"Authorization": f"Bearer {self.client.token}"})
            except aiohttp.WSServerHandshakeError as exc:
                raise ActionError(exc.status, "refused", f"relay refused session {self.id}: "
                                  f"{exc.message}") from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = connection_error(relay, exc, self.client.ca)
                if error.status != 503 or last:
                    raise error from exc
                self._relays.fail_over(relay)
        raise AssertionError("unreachable")

    async def _keep(self) -> None:
        """Read from the relay; after a drop the relay did not decide on, attach again."""
        try:
            while True:
                code, reason = await self._read(self._ws)
                if self._over(code, reason) or not await self._reattach(code, reason):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a fault here must not leave calls waiting for ever
            log.exception("the connection to session %s failed", self.id)
            reason = f"the connection to session {self.id} failed: {type(exc).__name__}: {exc}"
            self._finish(ServiceUnavailable(reason), "failed",
                         {"type": "disconnected", "session": self.id, "code": None,
                          "reason": reason})

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
        """Hand replies to their calls and events to the queue until the connection ends; how
        it ended (close code, reason)."""
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._on_message(msg.json())
            elif msg.type != aiohttp.WSMsgType.BINARY:
                break
        if msg.type == aiohttp.WSMsgType.CLOSE:
            return msg.data, msg.extra or ""
        reason = str(msg.data) if msg.type == aiohttp.WSMsgType.ERROR else "connection lost"
        return ws.close_code, reason

    def _on_message(self, data: dict[str, Any]) -> None:
        if "event" in data:
            self._on_event(data["event"])
            return
        call_id = data.get("id")
        waiting = self._replies.pop(call_id, None) if isinstance(call_id, int) else None
        if waiting is not None and not waiting[0].done():
            waiting[0].set_result(data)

    def _over(self, code: int | None, reason: str) -> bool:
        """Settle a drop that ends the session for this client (we detached, or the relay
        closed with a 4xxx code); False for any other drop."""
        if self._detaching:
            self._finish(ServiceUnavailable(f"detached from session {self.id}"))
            return True
        if code is not None and 4000 <= code < 5000:  # the relay ended it on purpose
            self._finish(close_error(self.id, code, reason), CLOSE_STATES.get(code, "closed"),
                         {"type": "disconnected", "session": self.id, "code": code,
                          "reason": reason})
            return True
        return False

    def _finish(self, error: ActionError, state: str | None = None,
                event: dict[str, Any] | None = None) -> None:
        """No call goes through any more: say why to the calls waiting and to come, and set
        the state (and queue the event) the user sees."""
        self._disconnected = error
        if state is not None:
            with self._state_changed:
                self.state = state
                self._last_failure = {"session": self.id, "state": state,
                                      "reason": error.message}
                self._state_changed.notify_all()
        if event is not None:
            self._events.put(event)
        self._fail_pending(lambda what: error)
        self._up.set()  # calls waiting for the connection now see `_disconnected`

    def _fail_pending(self, error: Callable[[str], ActionError]) -> None:
        for future, what in self._replies.values():
            if not future.done():
                future.set_exception(error(what))
        self._replies.clear()

    async def _reattach(self, code: int | None, reason: str) -> bool:
        """Attach again, with back-off, until it works (True) or the relay refuses this client
        for good (False)."""
        self._up.clear()
        if code == WSCloseCode.MESSAGE_TOO_BIG:  # sending such a call again would not help
            self._fail_pending(lambda what: ActionError(413, "too_large", f"{what}: {reason}"))
        self._fail_pending(ConnectionDropped)
        with self._state_changed:
            resume, self.state = self.state, RECONNECTING
            self._state_changed.notify_all()
        self._events.put({"type": "reconnecting", "session": self.id, "code": code,
                          "reason": reason})
        log.info("connection to session %s dropped (%s: %s); re-attaching", self.id, code,
                 reason)
        started, delay, attempts = time.monotonic(), RECONNECT_FIRST, 0
        while True:
            await asyncio.sleep(delay)
            attempts += 1
            try:
                self._ws = await self._connect()
                break
            except ActionError as err:
                if 400 <= err.status < 500 and err.status not in (408, 429):
                    self._finish(ActionError(err.status, err.code, err.message),
                                 "revoked" if err.status in (401, 403) else "closed",
                                 {"type": "disconnected", "session": self.id, "code": None,
                                  "status": err.status, "reason": err.message})
                    return False
                log.debug("re-attaching to session %s: %s", self.id, err.message)
            delay = min(delay * 2, RECONNECT_MAX)
        with self._state_changed:
            if self.state == RECONNECTING:
                self.state = resume
            self._state_changed.notify_all()
        self._events.put({"type": "reconnected", "session": self.id, "attempts": attempts,
                          "after_s": round(time.monotonic() - started, 3)})
        log.info("re-attached to session %s after %d attempts", self.id, attempts)
        self._up.set()
        return True

    def _on_event(self, event: dict[str, Any]) -> None:
        self._events.put(event)
        state = event.get("state")
        if event.get("type") == "restarted" or state is not None:
            self._news.set()  # wakes idempotent calls waiting to try again
            self._news = asyncio.Event()
        if state is None:
            return
        with self._state_changed:
            self.state = state
            if event.get("services"):
                self.services = event["services"]
            if state in ENDED_STATES:
                self._last_failure = event
            self._state_changed.notify_all()

    def wait_ready(self, timeout: float = 900.0) -> None:
        """Wait through `queued` and `starting` until `ready`; SessionFailed if it ends."""
        deadline = time.monotonic() + timeout
        with self._state_changed:
            while self.state != "ready":
                if self._last_failure is not None or self.state in ENDED_STATES:
                    raise SessionFailed(self._last_failure or {"session": self.id,
                                                               "state": self.state})
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"session {self.id} not ready after {timeout:g} s "
                                       f"(state {self.state})")
                self._state_changed.wait(min(left, 0.5))

    async def _link(self) -> aiohttp.ClientWebSocketResponse:
        """The connection to send on, once attached; the final error if that cannot be."""
        await self._up.wait()
        if self._disconnected is not None:
            raise ActionError(self._disconnected.status, self._disconnected.code,
                              self._disconnected.message)
        return self._ws

    async def _attempt(self, call_id: int, service: str, what: str, text: str) -> Any:
        """Send the call once and wait for its reply; ask the relay to cancel it if the caller
        stops waiting (timeout) while it is still out there."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        while True:
            ws = await self._link()
            self._replies[call_id] = (future, what)
            try:
                await ws.send_str(text)
                break
            except (ConnectionError, RuntimeError):  # not sent: send it on the next link
                self._replies.pop(call_id, None)
                if self._ws is ws:
                    self._up.clear()  # the reader sees the drop at once and re-attaches
        try:
            reply = await future
        except asyncio.CancelledError:
            if call_id in self._replies and self._ws is ws and not ws.closed \
                    and await self._cancel(ws, call_id, service, what):
                self._cancelled.add(call_id)
            raise
        finally:
            self._replies.pop(call_id, None)
        if "error" in reply:
            raise ActionError.from_message(reply["error"])
        return reply["result"]

    async def _cancel(self, ws: aiohttp.ClientWebSocketResponse, call_id: int, service: str,
                      what: str) -> bool:
        """Ask the relay to cancel a call, and wait (briefly) for its answer: once it has
        answered `cancelled`, the service has been told (True)."""
        answered: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[call_id] = (answered, what)
        with contextlib.suppress(ConnectionError, RuntimeError, ActionError, TimeoutError):
            await ws.send_str(json.dumps({"id": call_id, "service": service, "cancel": True}))
            reply = await asyncio.wait_for(answered, CANCEL_ANSWER_TIMEOUT)
            return bool((reply.get("error") or {}).get("code") == "cancelled")
        return False

    async def _request(self, service: str, action: str, params: dict[str, Any],
                       timeout: float | None, idempotent: bool) -> Any:
        what = f"{service}.{action}"
        call_id = next(self._ids)
        text = json.dumps({"id": call_id, "service": service, "action": action,
                           "params": params})
        limit = asyncio.timeout(timeout)
        try:
            async with limit:
                delay = RECONNECT_FIRST
                while True:
                    news = self._news
                    try:
                        return await self._attempt(call_id, service, what, text)
                    except ActionError as err:
                        if not idempotent or err.status != 503 or self._disconnected:
                            raise
                        log.debug("%s: %s; trying again", what, err.message)
                        if isinstance(err, ConnectionDropped):
                            continue  # it waits for the new connection
                    # The service may be restarting: again when it is back, or after back-off.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(news.wait(), delay)
                    delay = min(delay * 2, RECONNECT_MAX)
        except TimeoutError:
            if not limit.expired():
                raise
            raise CallTimeout(what, timeout or 0.0, call_id in self._cancelled) from None
        finally:
            self._cancelled.discard(call_id)

    @property
    def in_flight(self) -> int:
        """How many calls have gone out on the current connection and await their reply."""
        return len(self._replies)

    def call(self, service: str, action: str, *, timeout: float | None = DEFAULT_CALL_TIMEOUT,
             idempotent: bool = False, **params: Any) -> Any:
        """Run `action` of one of this session's compute services (through the relay).

        Waits at most `timeout` seconds (default 300; None: as long as it takes); then it
        raises CallTimeout (an ActionError and a TimeoutError) and the call is cancelled on
        the server. Errors are ActionError with a message for the user.

        `idempotent=True` says that running the call twice does no harm (a computation, a
        read): it is then sent again when the connection to the relay drops while it is in
        flight, and when its service is not available (503, e.g. restarting after a crash),
        as soon as the service is back (its `restarted` event) or after back-off (0.1 s
        doubling to 5 s), until the timeout. Other calls in flight when the connection drops
        fail with ConnectionDropped: they may or may not have run. Calls made while the
        session re-attaches wait for the connection, whichever they are.
        """
        return self.client._loop.run(self._request(service, action, params, timeout,
                                                   idempotent))

    def blob(self, digest: str) -> bytes:
        """A blob of the session's project by its hash (a mesh, a picture, an exported file),
        fetched with a plain `GET` through the relay and checked against the hash."""
        chunks: list[bytes] = []
        self.client._loop.run(self._fetch_blob(digest, chunks.append))
        return b"".join(chunks)

    def save_blob(self, digest: str, path: str | Path) -> Path:
        """Stream a blob to a file (written whole or not at all, checked against the hash)."""
        target = Path(path)
        partial = target.with_name(f".{target.name}.part")
        try:
            with partial.open("wb") as out:
                self.client._loop.run(self._fetch_blob(digest, out.write))
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    async def _fetch_blob(self, digest: str, write: Callable[[bytes], Any]) -> None:
        url = f"{self._relays.url}/blobs/{digest}"
        check = hashlib.sha256()
        try:
            async with self.client._http.get(
                    url, params={"session": self.id},
                    headers={"Authorization": f"Bearer {self.client.token}"},
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=self.client.timeout)
            ) as r:
                if r.status >= 400:
                    body = await r.json(content_type=None)
                    raise ActionError.from_json(r.status, (body or {}).get("error", {}))
                async for chunk in r.content.iter_chunked(1 << 20):
                    check.update(chunk)
                    write(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise connection_error(url, exc, self.client.ca) from exc
        if check.hexdigest() != digest:
            raise ActionError(502, "corrupt_blob", f"blob {digest} arrived with other bytes")

    def events(self, timeout: float = 0.0) -> Iterator[dict[str, Any]]:
        """Events received so far; with a timeout, also those arriving within it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                yield self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return

    def wait_for_event(self, match: Callable[[dict[str, Any]], bool],
                       timeout: float = 60.0) -> dict[str, Any]:
        for event in self.events(timeout):
            if match(event):
                return event
        raise TimeoutError(f"no matching event within {timeout:g} s")

    def detach(self) -> None:
        """Leave the session running (others may be in it) and drop this connection."""
        if self in self.client.attached:
            self.client.attached.remove(self)
            self.client._loop.run(self._detach())

    async def _detach(self) -> None:
        self._detaching = True
        await self._ws.close()  # the keeper reads the close and finishes
        self._keeper.cancel()  # or stops waiting to re-attach
        await asyncio.gather(self._keeper, return_exceptions=True)
        if not self._ws.closed:  # attached again just before it stopped
            await self._ws.close()
        if self._disconnected is None:
            self._finish(ServiceUnavailable(f"detached from session {self.id}"))

    def close(self) -> None:
        """Close the session for everyone: its services stop. Only ever done explicitly."""
        try:
            self.client.gss("close_session", session=self.id)
        finally:
            self.detach()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        """Detach: the session goes on for its other participants (close() ends it)."""
        self.detach()
