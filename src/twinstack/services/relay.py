"""The relay: one WebSocket per client session, routed to that session's compute services.

`GET /session?id=SESSION` on the public channel, with `Authorization: Bearer TOKEN`. Messages
are `{"id", "service", "action", "params"}`; replies `{"id", "result"}` or `{"id", "error"}`;
`{"id", "service", "cancel": true}` cancels a call (answered 409 `cancelled` once the service
was told). Session events (progress, restarts, failure) and the session's log records
(`type: log`) arrive as `{"event": {...}}`, the session's current state first (a client that
re-attaches after a drop learns what changed meanwhile).

Access is decided once per socket (gss `session_access`) and kept until gss says that something
changed (`access_changes`: a logout, a new password, a disabled user, a group, a share, a deleted
project); then the sockets concerned are asked about again and closed with a code and a reason
if refused (4401 token, 4403 access). A socket also closes when its token expires.

Calls go only to the services of the socket's own session, each over a link whose certificate
must name that service and that session, whatever endpoint was recorded for it. A relayed
message and its reply travel as they are, not re-encoded. One link to gss and one to the logger
carry every subscription, and each user has caps on sockets, calls in flight and bytes held, so
one user cannot starve another.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp
import orjson
from aiohttp import WSMsgType, web

from twinstack.exitcodes import ExitCode, FatalError
from twinstack.metrics import RelayMetrics
from twinstack.store.blobs import is_sha256
from twinstack.wire.actions import PARTICIPANT_HEADERS, call_key
from twinstack.wire.blobhttp import CHUNK, REQUEST_HEADERS, RESPONSE_HEADERS
from twinstack.wire.client import LinkKeeper, ServiceClient, WrongPeer, reply_id, streamed_get
from twinstack.wire.errors import ActionError, ServiceUnavailable, malformed
from twinstack.wire.identity import PeerIdentity
from twinstack.wire.limits import decode, encode, leading_id
from twinstack.wire.runtime import (
    Ports,
    ServiceBase,
    bearer_token,
    error_response,
    internal_fault,
    websocket_for,
)

log = logging.getLogger(__name__)

SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CLOSE_TOKEN = 4401  # the token was revoked or has expired
CLOSE_ACCESS = 4403  # the user may no longer use this session
CLOSE_SLOW = 4408  # the client does not read its events
CALL_TIMEOUT = 600.0
EVENT_BACKLOG = 1000  # events waiting for one slow client before it is let go


@dataclass
class Usage:
    """What one user holds on this relay right now."""

    sockets: int = 0
    calls: int = 0
    bytes: int = 0


@dataclass(eq=False)
class Attached:
    """One client socket and the access gss granted it."""

    ws: web.WebSocketResponse
    token: str
    session: str
    user: str
    token_id: str
    project: str
    role: str
    events: asyncio.Queue[str] = field(
        default_factory=lambda: asyncio.Queue(maxsize=EVENT_BACKLOG))
    links: dict[str, ServiceLink] = field(default_factory=dict)  # by service
    tunnels: dict[Any, asyncio.Task[None]] = field(default_factory=dict)  # calls behind NAT


@dataclass(eq=False)
class Feed:
    """One session as this relay follows it, shared by the sockets attached to it here."""

    session: str
    state: str
    services: dict[str, dict[str, Any]]
    reason: str | None = None  # why it ended (or last changed state), for late joiners
    sockets: set[Attached] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    model: tuple[str, asyncio.Task[None]] | None = None  # following its model service's changes
    model_head: dict[str, Any] | None = None  # the model's head as last heard, for late joiners

    def running(self) -> list[asyncio.Task[None]]:
        """Every task that follows this session for its sockets."""
        return [*self.tasks, *([self.model[1]] if self.model else [])]


INTERNAL_KEYS = frozenset({"endpoint", "listening", "publish", "pid", "url"})
_ADDRESS = re.compile(  # IPv4 (and a port), [IPv6]:port, as URLs too
    r"(?:https?://)?(?:\b\d{1,3}(?:\.\d{1,3}){3}\b(?::\d{1,5})?|\[[0-9A-Fa-f:.]+\]:\d{1,5})")


def _scrub(value: Any) -> Any:
    """Drop keys that locate services and mask addresses inside text."""
    if isinstance(value, str):
        return _ADDRESS.sub("<internal address>", value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in INTERNAL_KEYS}
    return value


def public_event(event: dict[str, Any]) -> dict[str, Any]:
    """An event (or log record) as users see it: which services there are, never where they
    run."""
    shown = _scrub(event)
    if isinstance(event.get("services"), dict):
        shown["services"] = sorted(event["services"])
    return shown


def _is_error(reply: str) -> bool:
    """Whether a relayed reply is an error (our services write `id` first, then this key)."""
    return reply.find('"error":', 0, 512) >= 0


class RelayService(ServiceBase):
    name: ClassVar[str] = "relay"
    ports: ClassVar[Ports] = Ports(internal=7440, health=7441, public=7402)

    async def start(self) -> None:
        s = self.settings
        if s.gss_url is None:
            raise FatalError(ExitCode.CONFIG_ERROR, "the relay needs --gss-url")
        self.tls_client = self.runtime.tls.client()
        self.stats = RelayMetrics(self.runtime.metrics.registry)
        self.gss = LinkKeeper(self._client(s.gss_url))
        self.logger = LinkKeeper(self._client(s.logger_url)) if s.logger_url else None
        self.feeds: dict[str, Feed] = {}
        self.usage: dict[str, Usage] = collections.defaultdict(Usage)
        self.buffer = s.relay_buffer_mb * 2**20
        self.user_buffer = max(s.max_message_bytes, self.buffer // 4)
        self.bytes_held = 0
        self.rechecks: set[asyncio.Task[None]] = set()
        self.watcher = asyncio.create_task(self._watch_access())
        self.blob_http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.tls_client, limit=64))

    def _client(self, url: str) -> ServiceClient:
        return ServiceClient(url, self.tls_client, timeout=10,
                             max_message_bytes=self.settings.max_message_bytes + 4096)

    async def stop(self) -> None:
        tasks = [self.watcher, *self.rechecks,
                 *(t for feed in self.feeds.values() for t in feed.running())]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for keeper in [self.gss, *([self.logger] if self.logger else [])]:
            await keeper.close()
        await self.blob_http.close()

    def public_routes(self) -> list[web.RouteDef]:
        return [web.get("/session", self._session_socket), web.get("/blobs/{digest}", self._blob)]

    # blobs -----------------------------------------------------------------------------------

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        """`GET /blobs/HASH?session=ID` with the session's bearer token: a blob of the
        session's project, streamed from its model service (ETag, Range, cached forever)."""
        session = request.query.get("session", "")
        digest = request.match_info["digest"]
        try:
            if not SESSION_ID.fullmatch(session):
                raise malformed("give the session: /blobs/HASH?session=SESSION")
            if not is_sha256(digest):
                raise malformed(f"{digest[:80]!r} is not a sha256 hash (64 lower-case hex "
                                "digits)")
            access = await self._access(bearer_token(request), session)
            model = (access.get("services") or {}).get("model") or {}
            endpoint = model.get("endpoint")
            if access["state"] != "ready" or not isinstance(endpoint, str):
                raise ActionError(409, "session_not_ready", f"session {session} is "
                                  f"{access['state']}" + ("" if endpoint or access["state"]
                                                         != "ready" else
                                                         " and keeps no project data"))
            if model.get("via"):
                raise ActionError(501, "not_implemented", "blobs of a session that runs "
                                  "behind a tunnel cannot be downloaded yet")
            usage = self.usage[access["user"]]
            self._hold(usage, CHUNK)
        except ActionError as err:
            return error_response(err)
        try:
            return await self._pass_blob(request, endpoint, session, digest)
        finally:
            self._release(access["user"], CHUNK)

    async def _pass_blob(self, request: web.Request, endpoint: str, session: str,
                         digest: str) -> web.StreamResponse:
        headers = {k: request.headers[k] for k in REQUEST_HEADERS if k in request.headers}
        response: web.StreamResponse | None = None
        try:
            async with streamed_get(self.blob_http, f"https://{endpoint}/blobs/{digest}"
                                    f"?session={session}", headers=headers) as upstream:
                if upstream.status == 421:  # that endpoint is another session's model now
                    raise WrongPeer(endpoint, PeerIdentity("model", session),
                                    PeerIdentity("model", None))
                if upstream.status >= 500:
                    raise ActionError(upstream.status, "upstream", await upstream.text())
                response = web.StreamResponse(status=upstream.status, headers={
                    k: upstream.headers[k] for k in RESPONSE_HEADERS if k in upstream.headers})
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except ActionError as err:
            if response is not None:  # already streaming: all we can do is stop
                raise ConnectionResetError(f"blob {digest}: {err.message}") from err
            failure = self._unreachable("model", err) if err.status >= 500 else err
            return error_response(failure)

    # access ----------------------------------------------------------------------------------

    async def _access(self, token: str, session: str) -> dict[str, Any]:
        link = await self.gss.get()
        return await link.call("session_access", {"token": token, "session": session},
                               timeout=10)

    async def _admit(self, request: web.Request
                     ) -> tuple[web.WebSocketResponse, str, dict[str, Any]]:
        session = request.query.get("id", "")
        token = bearer_token(request)
        if not SESSION_ID.fullmatch(session):
            raise malformed("give the session: /session?id=SESSION (1 to 64 letters, digits, "
                            "'-' or '_')")
        access = await self._access(token, session)
        cap = self.settings.relay_sockets_per_user
        if self.usage[access["user"]].sockets >= cap:
            raise ActionError(429, "too_many_sockets",
                              f"{access['user']} already has {cap} relay connections open "
                              "(relay_sockets_per_user); close one first", retry_after=5)
        return websocket_for(request, self.settings.max_message_bytes), token, access

    async def _session_socket(self, request: web.Request) -> web.StreamResponse:
        try:
            ws, token, access = await self._admit(request)
        except ActionError as err:
            log.info("refused a relay connection: %s", err.message)
            return error_response(err)
        usage = self.usage[access["user"]]
        usage.sockets += 1  # no await since the check in _admit: the cap holds
        self.stats.sockets.inc()
        client = Attached(ws, token, request.query["id"], access["user"], access["token_id"],
                          access["project"], access["role"])
        feed = self._join(client, access)
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, access["expires_at"] - time.time()),
            lambda: self._spawn_close(client, CLOSE_TOKEN, "your token has expired; log in "
                                      "again"))
        background: set[asyncio.Task[None]] = set()
        try:
            await ws.prepare(request)
            # First what the session is now: a client re-attaching after a drop learns what
            # happened while it was away (events are not kept for it).
            client.events.put_nowait(encode({"event": public_event(
                {"type": "state", "session": feed.session, "state": feed.state,
                 "services": feed.services,
                 **({"reason": feed.reason} if feed.reason else {})})}).decode())
            if feed.model_head is not None:  # and where its model stands
                client.events.put_nowait(encode({"event": feed.model_head}).decode())
            background.update({asyncio.create_task(self._write_events(client)),
                               asyncio.create_task(self._expire_calls(client))})
            log.info("%s attached to session %s", client.user, client.session)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self.stats.passed("from_client", msg.data)
                    await self._accept(client, msg.data, background)
        finally:
            expiry.cancel()
            for task in background:
                task.cancel()
            self._leave(client, feed)
            for link in client.links.values():
                await link.close()
            usage.sockets -= 1
            self.stats.sockets.dec()
            self._tidy(client.user)
        return ws

    def _tidy(self, user: str) -> None:
        usage = self.usage.get(user)
        if usage is not None and not (usage.sockets or usage.calls or usage.bytes):
            del self.usage[user]

    async def _watch_access(self) -> None:
        """Follow gss's access changes; after each (re)subscription check every socket, since
        changes may have been missed while the link was down."""
        await self._follow(self.gss, "access_changes", {}, self._on_access_change)

    def _on_access_change(self, change: dict[str, Any]) -> None:
        kind, ident = change.get("kind"), change.get("id")
        key: Callable[[Attached], str] | None = {
            "token": lambda c: c.token_id, "user": lambda c: c.user,
            "project": lambda c: c.project}.get(str(kind))
        for feed in list(self.feeds.values()):
            for client in list(feed.sockets):
                if key is None or key(client) == ident:
                    task = asyncio.create_task(self._recheck(client))
                    self.rechecks.add(task)
                    task.add_done_callback(self.rechecks.discard)

    async def _recheck(self, client: Attached) -> None:
        try:
            access = await self._access(client.token, client.session)
        except ActionError as err:
            if err.status == 401:
                await self._close(client, CLOSE_TOKEN, "your token was revoked or has "
                                  "expired; log in again")
            elif err.status in (403, 404):
                await self._close(client, CLOSE_ACCESS, "you no longer have access to "
                                  f"session {client.session}")
            else:  # gss cannot say now; the next change or reconnection asks again
                log.warning("could not re-check %s on session %s: %s", client.user,
                            client.session, err.message)
            return
        if client.role != access["role"]:  # links tell services the role: open them anew
            client.role = access["role"]
            links, client.links = list(client.links.values()), {}
            for link in links:
                await link.close()

    async def _close(self, client: Attached, code: int, reason: str) -> None:
        log.info("closing %s's socket to session %s: %s", client.user, client.session, reason)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await client.ws.close(code=code, message=reason.encode()[:123])

    def _spawn_close(self, client: Attached, code: int, reason: str) -> None:
        task = asyncio.create_task(self._close(client, code, reason))
        self.rechecks.add(task)
        task.add_done_callback(self.rechecks.discard)

    # session feeds ---------------------------------------------------------------------------

    def _join(self, client: Attached, access: dict[str, Any]) -> Feed:
        feed = self.feeds.get(client.session)
        if feed is None:
            feed = self.feeds[client.session] = Feed(client.session, access["state"],
                                                     access["services"], access.get("reason"))
            feed.tasks.append(asyncio.create_task(self._follow(
                self.gss, "session_events", {"session": feed.session},
                lambda event: self._on_session_event(feed, event))))
            if self.logger is not None:
                feed.tasks.append(asyncio.create_task(self._follow(
                    self.logger, "follow", {"session": feed.session, "level": "info"},
                    lambda record: self._broadcast(feed, public_event(
                        {"type": "log", **record})))))
            self._follow_model(feed)
        feed.sockets.add(client)
        return feed

    def _follow_model(self, feed: Feed) -> None:
        """Pass the changes of the session's model (if it has one) to every client of the
        session as `model_changed` events; follow it anew when it moves."""
        model = feed.services.get("model") or {}
        endpoint = model.get("endpoint")
        if not isinstance(endpoint, str) or model.get("via"):  # not (yet) reachable from here
            return
        if feed.model is not None:
            if feed.model[0] == endpoint:
                return
            feed.model[1].cancel()
        keeper = LinkKeeper(self._client(f"https://{endpoint}"),
                            PeerIdentity("model", feed.session))
        feed.model = (endpoint, asyncio.create_task(self._follow_changes(feed, keeper)))

    async def _follow_changes(self, feed: Feed, keeper: LinkKeeper) -> None:
        try:
            await self._follow(keeper, "changes", {},
                               lambda event: self._on_model_event(feed, event))
        finally:
            await keeper.close()

    def _leave(self, client: Attached, feed: Feed) -> None:
        feed.sockets.discard(client)
        if not feed.sockets and self.feeds.get(feed.session) is feed:
            del self.feeds[feed.session]
            for task in feed.running():
                task.cancel()

    def _on_model_event(self, feed: Feed, event: dict[str, Any]) -> None:
        if isinstance(event, dict) and "head" in event:
            feed.model_head = {"type": "model_head", "project": event.get("project"),
                               "head": event["head"]}
        self._broadcast(feed, public_event(event))

    def _on_session_event(self, feed: Feed, event: dict[str, Any]) -> None:
        if isinstance(event.get("state"), str):
            feed.state = event["state"]
            feed.reason = event.get("reason") if isinstance(event.get("reason"), str) else None
        if isinstance(event.get("services"), dict) and event["services"]:
            feed.services = event["services"]
            self._follow_model(feed)
        self._broadcast(feed, public_event(event))

    def _broadcast(self, feed: Feed, event: dict[str, Any]) -> None:
        text = encode({"event": event}).decode()
        for client in list(feed.sockets):
            try:
                client.events.put_nowait(text)
            except asyncio.QueueFull:
                feed.sockets.discard(client)
                self._spawn_close(client, CLOSE_SLOW, f"{EVENT_BACKLOG} events were waiting "
                                  "for you to read them")

    async def _write_events(self, client: Attached) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                text = await client.events.get()
                await client.ws.send_str(text)
                self.stats.passed("to_client", text)

    async def _follow(self, keeper: LinkKeeper, action: str, params: dict[str, Any],
                      on_item: Callable[[Any], None]) -> None:
        """Feed every item of a stream to `on_item`, resubscribing after drops with back-off."""
        delay = 0.1
        while True:
            try:
                link = await keeper.get()
                async for item in link.stream(action, params):
                    delay = 0.1
                    on_item(item)
            except ActionError as exc:
                log.debug("%s %s: %s", action, params, exc.message)
            except Exception:
                log.exception("%s %s failed; subscribing again", action, params)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # calls -----------------------------------------------------------------------------------

    def _hold(self, usage: Usage, size: int) -> None:
        """Count a call and its bytes against the user's caps and the relay's, or refuse (429)."""
        if usage.calls >= self.settings.relay_calls_per_user:
            raise ActionError(429, "too_many_calls", f"you have "
                              f"{self.settings.relay_calls_per_user} calls in flight "
                              "(relay_calls_per_user); wait for answers", retry_after=1)
        if usage.bytes + size > self.user_buffer:
            raise ActionError(429, "too_much_in_flight",
                              f"your calls in flight through the relay hold {usage.bytes:,} "
                              f"bytes; this one would pass your {self.user_buffer:,}-byte "
                              "share (relay_buffer_mb / 4): wait for answers", retry_after=1)
        if self.bytes_held + size > self.buffer:
            raise ActionError(429, "relay_busy",
                              f"the relay holds its whole {self.buffer:,}-byte budget for all "
                              "users (relay_buffer_mb); try again shortly", retry_after=1)
        usage.calls += 1
        usage.bytes += size
        self.bytes_held += size

    def _release(self, user: str, size: int) -> None:
        usage = self.usage[user]
        usage.calls -= 1
        usage.bytes -= size
        self.bytes_held -= size
        self._tidy(user)

    async def _send(self, client: Attached, text: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):  # gone: its handler cleans up
            await client.ws.send_str(text)
            self.stats.passed("to_client", text)

    async def _refuse(self, client: Attached, call_id: Any, err: ActionError) -> None:
        await self._send(client, encode({"id": call_id, "error": err.in_message()}).decode())

    async def _accept(self, client: Attached, data: str,
                      background: set[asyncio.Task[None]]) -> None:
        """One client message: checked, counted against the user's caps and sent on. The reply
        comes back through the service's link (`ServiceLink`), so nothing waits here."""
        call_id: Any = None
        try:
            try:
                message = decode(data, self.runtime.limits)
            except ActionError:
                call_id = leading_id(data)
                raise
            if not isinstance(message, dict):
                raise malformed('a message is {"id", "service", "action", "params"}')
            call_id = call_key(message.get("id"))
            service = message.get("service")
            if message.get("cancel"):
                await self._cancel(client, service, call_id)
                return
            if call_id is None:
                raise ActionError(400, "malformed_request",
                                  "give each call an 'id' to match its reply", "id")
            if not isinstance(message.get("action"), str):
                raise ActionError(400, "malformed_request", "'action' must be a string",
                                  "action")
            target = self._target(client, service)
            assert isinstance(service, str)
            if target.get("via") == "lss":  # behind NAT: through its LSS's own link to gss
                if call_id in client.tunnels:
                    raise ActionError(409, "duplicate_id", f"a call with id {call_id!r} is "
                                      "still running; give each call in flight its own id", "id")
                task = asyncio.create_task(self._tunnel(client, service, message, len(data)))
                background.add(task)
                client.tunnels[call_id] = task
                task.add_done_callback(background.discard)
                task.add_done_callback(lambda done: client.tunnels.pop(call_id, None)
                                       if client.tunnels.get(call_id) is done else None)
                return
            link = await self._link(client, service, target["endpoint"])
            await link.send(call_id, data)
        except ActionError as err:
            await self._refuse(client, call_id, err)
        except Exception as exc:
            fault = internal_fault("relaying a call", exc, f"{client.user}/{call_id}")
            await self._refuse(client, call_id, fault)

    async def _tunnel(self, client: Attached, service: str, message: dict[str, Any],
                      size: int) -> None:
        """A call to a service behind NAT: through gss and its LSS's own link, and back."""
        call_id = message["id"]
        try:
            self._hold(self.usage[client.user], size)
        except ActionError as err:
            await self._refuse(client, call_id, err)
            return
        try:
            link = await self.gss.get()
            result = await link.call("tunnel_call", {
                "session": client.session, "service": service, "action": message["action"],
                "params": message.get("params") or {}}, timeout=CALL_TIMEOUT)
            reply = encode({"id": call_id, "result": result}).decode()
        except ActionError as err:
            reply = encode({"id": call_id,
                            "error": self._for_user(service, err).in_message()}).decode()
        finally:
            self._release(client.user, size)
        await self._send(client, reply)

    def _target(self, client: Attached, service: Any) -> dict[str, Any]:
        feed = self.feeds[client.session]
        if not isinstance(service, str) or service not in feed.services:
            raise ActionError(404, "unknown_service",
                              f"session {client.session} has no service {service!r}; it has "
                              f"{', '.join(sorted(feed.services)) or 'none yet'}", "service")
        if feed.state != "ready":
            raise ActionError(409, "session_not_ready",
                              f"session {client.session} is {feed.state}")
        return feed.services[service]

    def _for_user(self, service: str, err: ActionError) -> ActionError:
        """A service's error as the user may see it: a fault inside the platform is logged
        with its details (hosts, ports) and reported without them."""
        if err.status < 500 or err.code == "internal":  # the latter names a log reference
            return ActionError(err.status, err.code, _scrub(err.message), err.field,
                               retry_after=err.retry_after)
        log.warning("%s failed: %s", service, err.message)
        return self._unavailable(service)

    def _unreachable(self, service: str, err: ActionError) -> ActionError:
        """Why a call could not be sent to the service, without where the service runs."""
        if isinstance(err, WrongPeer):
            log.error("refused to call %s: %s", service, err.message)
            return ActionError(502, "wrong_peer", f"{service} of this session could not be "
                               "verified, so the call was not sent; the operator was told")
        log.warning("cannot reach %s: %s", service, err.message)
        return self._unavailable(service)

    @staticmethod
    def _unavailable(service: str) -> ActionError:
        return ActionError(503, "unavailable", f"{service} is not available right now (it "
                           "may be restarting); try again", retry_after=1)

    async def _link(self, client: Attached, service: str, endpoint: str) -> ServiceLink:
        """This socket's link to a service of its session, verified to be that service."""
        link = client.links.get(service)
        if link is not None and (link.endpoint != endpoint or not link.open):
            client.links.pop(service)
            await link.close()  # it moved or dropped: calls still on it are answered 503
            link = None
        if link is None:
            link = ServiceLink(self, client, service, endpoint)
            try:
                await link.connect()
            except ActionError as err:
                await link.close()
                raise self._unreachable(service, err) from err
            client.links[service] = link
        return link

    async def _cancel(self, client: Attached, service: Any, call_id: Any) -> None:
        """Pass a cancellation on to the service and answer the cancelled call at once."""
        tunnel = client.tunnels.pop(call_id, None)
        link = client.links.get(service) if isinstance(service, str) else None
        if tunnel is not None:
            tunnel.cancel()  # its link to gss tells gss to stop it
        if tunnel is not None or (link is not None and await link.cancel(call_id)):
            await self._refuse(client, call_id,
                               ActionError(409, "cancelled", f"call {call_id!r} was cancelled",
                                           "id"))

    async def _expire_calls(self, client: Attached) -> None:
        """Answer calls that outlived CALL_TIMEOUT (and tell their services to stop)."""
        while True:
            await asyncio.sleep(CALL_TIMEOUT / 20)
            for link in list(client.links.values()):
                await link.expire(time.monotonic() - CALL_TIMEOUT)


@dataclass(slots=True)
class Pending:
    size: int
    started: float


class ServiceLink:
    """One client socket's link to one service of its session.

    Messages go out as the client wrote them and replies come back as the service wrote them,
    matched by the client's own ids (the link is the client's alone): nothing is re-encoded and
    no task waits per call, so the relay adds little to a call's cost.
    """

    def __init__(self, relay: RelayService, client: Attached, service: str,
                 endpoint: str) -> None:
        self.relay = relay
        self.client = client
        self.service = service
        self.endpoint = endpoint
        self.pending: dict[Any, Pending] = {}
        self.http = relay._client(f"https://{endpoint}")
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        return self.ws is not None and not self.ws.closed

    async def connect(self) -> None:
        user, role = PARTICIPANT_HEADERS
        self.ws = await self.http.websocket(
            expect=PeerIdentity(self.service, self.client.session),
            headers={user: self.client.user, role: self.client.role})
        self.reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)
        await self.http.close()

    async def send(self, call_id: Any, text: str) -> None:
        if call_id in self.pending:
            raise ActionError(409, "duplicate_id", f"a call with id {call_id!r} is still "
                              "running; give each call in flight its own id", "id")
        self.relay._hold(self.relay.usage[self.client.user], len(text))
        self.pending[call_id] = Pending(len(text), time.monotonic())
        try:
            await self.ws.send_str(text)
        except (ConnectionError, RuntimeError) as exc:
            self._forget(call_id)
            raise self.relay._unreachable(self.service, ServiceUnavailable(
                f"{self.endpoint}: {exc}")) from exc

    def _forget(self, call_id: Any) -> bool:
        pending = self.pending.pop(call_id, None)
        if pending is None:
            return False
        self.relay._release(self.client.user, pending.size)
        return True

    async def _answer(self, call_id: Any, err: ActionError) -> None:
        if self._forget(call_id):
            await self.relay._refuse(self.client, call_id, err)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.TEXT:
                    break
                call_id = reply_id(msg.data)
                if not self._forget(call_id):
                    continue  # cancelled or expired: already answered
                reply = msg.data
                if _is_error(reply):
                    error = orjson.loads(reply).get("error") or {}
                    if int(error.get("status", 500)) >= 500:
                        shown = self.relay._for_user(self.service,
                                                     ActionError.from_message(error))
                        reply = encode({"id": call_id, "error": shown.in_message()}).decode()
                await self.relay._send(self.client, reply)
        except (orjson.JSONDecodeError, TypeError) as exc:
            log.error("%s of session %s answered what is not a reply: %s", self.service,
                      self.client.session, exc)
        finally:
            if self.pending:
                log.warning("the link to %s of session %s at %s closed with %d calls in "
                            "flight", self.service, self.client.session, self.endpoint,
                            len(self.pending))
            dropped = ActionError(503, "interrupted", f"the connection to {self.service} "
                                  "dropped while the call was running (it may be "
                                  "restarting): it may or may not have run", retry_after=1)
            for call_id in list(self.pending):
                await self._answer(call_id, dropped)

    async def cancel(self, call_id: Any) -> bool:
        if call_id not in self.pending:
            return False
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(encode({"id": call_id, "cancel": True}).decode())
        return self._forget(call_id)

    async def expire(self, before: float) -> None:
        for call_id, pending in list(self.pending.items()):
            if pending.started < before:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.ws.send_str(encode({"id": call_id, "cancel": True}).decode())
                await self._answer(call_id, ActionError(
                    504, "timeout", f"{self.service} gave no answer in {CALL_TIMEOUT:g} s; the "
                    "call was cancelled"))
