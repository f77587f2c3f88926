"""Calling another service's actions over its internal channel (mutual TLS).

Idempotent calls are retried with back-off on connection failures and 503s; other calls are
retried only when the connection was refused, i.e. when the request certainly never arrived.
A service with replicas is given as a comma-separated list of URLs: a call or link that cannot
reach one goes on to the next (failing over), and stays there while it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson

from twinstack.logs import request_id
from twinstack.wire.errors import ActionError, ServiceUnavailable
from twinstack.wire.identity import PeerIdentity

_RETRY_DELAYS = (0.1, 0.3, 1.0)
CONNECT_TIMEOUT = 5.0


class WrongPeer(ActionError):
    """The peer's certificate names another service or session than the one we meant to reach."""

    def __init__(self, url: str, expected: PeerIdentity, found: PeerIdentity) -> None:
        super().__init__(502, "wrong_peer", f"{url} presented {found}, not {expected}")
        self.expected = expected
        self.found = found


@contextlib.asynccontextmanager
async def streamed_get(http: aiohttp.ClientSession, url: str, *, headers: dict[str, str]
                       ) -> AsyncIterator[aiohttp.ClientResponse]:
    """A `GET` whose body the caller streams; ServiceUnavailable when the peer is unreachable.
    (A small body may be read whole before the caller sees the response, its connection gone:
    the peer is asked to check that it is the one meant, instead of its certificate here.)"""
    limit = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=60)
    try:
        async with http.get(url, headers=headers, timeout=limit) as resp:
            yield resp
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        raise ServiceUnavailable(f"{url}: {exc or type(exc).__name__}") from exc


class Replicas:
    """The URLs of a service's replicas (a comma-separated list) and the one in use: a random
    one at first, so that many callers spread over the replicas."""

    def __init__(self, urls: str) -> None:
        self.urls = [url.strip().rstrip("/") for url in urls.split(",") if url.strip()]
        if not self.urls:
            raise ValueError(f"no URL in {urls!r}")
        self._current = random.randrange(len(self.urls))

    @property
    def url(self) -> str:
        return self.urls[self._current]

    def fail_over(self, failed: str) -> None:
        """Move on from `failed` to the next replica (if it is still the one in use)."""
        if self.url == failed:
            self._current = (self._current + 1) % len(self.urls)

    def each(self) -> Iterator[tuple[str, bool]]:
        """Every replica once, from the one in use on: its URL, and whether it is the last to
        try. The caller calls fail_over(url) on a failure to move on."""
        for left in reversed(range(len(self.urls))):
            yield self.url, left == 0


class ServiceClient:
    """`url`: one URL, or several (replicas, comma-separated) to fail over between.
    `max_message_bytes` bounds what a reply or pushed message may be (default: 64 MiB)."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext, *, timeout: float = 30.0,
                 max_message_bytes: int = 64 * 2**20) -> None:
        self.replicas = Replicas(url)
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)

    @property
    def url(self) -> str:
        """The replica calls go to now."""
        return self.replicas.url

    async def __aenter__(self) -> ServiceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.ssl_context)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _headers(self) -> dict[str, str]:
        rid = request_id.get()
        return {"X-Request-Id": rid} if rid else {}

    async def call(self, action: str, params: dict[str, Any] | None = None, *,
                   idempotent: bool = False, timeout: float | None = None) -> Any:
        """Run `action` and return its result; raise ActionError with the service's error."""
        body = {"action": action, "params": params or {}}
        # A peer that silently drops packets must fail fast, however long the action may run.
        total = timeout or self.timeout
        limit = aiohttp.ClientTimeout(total=total, sock_connect=min(CONNECT_TIMEOUT, total))
        first = self.url
        for attempt in itertools.count():
            url = self.url
            try:
                async with self._http().post(
                        f"{url}/execute", data=orjson.dumps(body), timeout=limit,
                        headers={**self._headers(), "Content-Type": "application/json"}) as resp:
                    payload = await self._payload(resp)
                    if resp.status == 503 and idempotent and attempt < len(_RETRY_DELAYS):
                        await asyncio.sleep(_RETRY_DELAYS[attempt])
                        continue
                    if not isinstance(payload, dict):
                        raise ServiceUnavailable(f"{url} {action}: not a TwinStack reply")
                    if resp.status >= 400:
                        raise ActionError.from_json(resp.status, payload.get("error", {}))
                    return payload.get("result")
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                refused = isinstance(exc, aiohttp.ClientConnectorError)
                if (idempotent or refused) and attempt < len(_RETRY_DELAYS):
                    self.replicas.fail_over(url)  # another replica is tried at once; after
                    if self.url == first:  # all of them, again after a pause
                        await asyncio.sleep(_RETRY_DELAYS[attempt])
                    continue
                raise ServiceUnavailable(f"{url} {action}: {exc or type(exc).__name__}") \
                    from exc
        raise AssertionError("unreachable")

    async def connect(self, *, expect: PeerIdentity | None = None) -> Link:
        """A WebSocket to the service carrying many calls and streams at once; with `expect`,
        refused (WrongPeer) unless the peer's certificate names that service and session."""
        ws = await self.websocket(expect=expect)
        return Link(ws, self.url)

    async def websocket(self, *, expect: PeerIdentity | None = None,
                        headers: dict[str, str] | None = None
                        ) -> aiohttp.ClientWebSocketResponse:
        """The service's `/ws` as a bare WebSocket, its peer checked as for `connect`; every
        replica is tried once, from the current one on."""
        for url, last in self.replicas.each():
            try:
                return await self._websocket(url, expect, headers)
            except ServiceUnavailable:
                if last:
                    raise
                self.replicas.fail_over(url)
        raise AssertionError("unreachable")

    async def _websocket(self, url: str, expect: PeerIdentity | None,
                         headers: dict[str, str] | None) -> aiohttp.ClientWebSocketResponse:
        timeout = aiohttp.ClientWSTimeout(ws_close=5.0)
        try:
            ws = await self._http().ws_connect(
                f"{url}/ws", headers={**self._headers(), **(headers or {})}, heartbeat=15,
                timeout=timeout,
                max_msg_size=self.max_message_bytes)
        except aiohttp.WSServerHandshakeError as exc:
            raise ActionError(exc.status, "refused", f"{url}/ws refused: {exc.message}") \
                from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServiceUnavailable(f"{url}/ws: {exc or type(exc).__name__}") from exc
        if expect is not None:
            found = PeerIdentity.from_peercert(ws.get_extra_info("peercert") or {})
            if found != expect:
                await ws.close()
                raise WrongPeer(url, expect, found)
        return ws

    async def _payload(self, resp: aiohttp.ClientResponse) -> Any:
        """The reply's JSON, refusing one over `max_message_bytes` before holding it all."""
        size, chunks = 0, []
        if (resp.content_length or 0) <= self.max_message_bytes:
            async for chunk in resp.content.iter_chunked(2**20):
                size += len(chunk)
                if size > self.max_message_bytes:
                    break
                chunks.append(chunk)
        size = max(size, resp.content_length or 0)
        if size > self.max_message_bytes:
            raise ActionError(502, "too_large", f"{self.url} answered {size:,} bytes, over the "
                              f"{self.max_message_bytes:,}-byte limit")
        return orjson.loads(b"".join(chunks) or b"null")

    @contextlib.asynccontextmanager
    async def link(self) -> AsyncIterator[Link]:
        """A link for the duration of a block."""
        link = await self.connect()
        try:
            yield link
        finally:
            await link.close()

    async def stream(self, action: str, params: dict[str, Any] | None = None
                     ) -> AsyncIterator[Any]:
        """Run a streaming action over its own WebSocket and yield each event it pushes."""
        async with self.link() as link:
            async for event in link.stream(action, params):
                yield event


class ClientPool:
    """One client per endpoint, made on first use: calls to many peers with one identity."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self.ssl_context = ssl_context
        self.clients: dict[str, ServiceClient] = {}

    def __getitem__(self, endpoint: str) -> ServiceClient:
        if endpoint not in self.clients:
            self.clients[endpoint] = ServiceClient(f"https://{endpoint}", self.ssl_context)
        return self.clients[endpoint]

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


_END = object()
# Our services write a reply's `id` first; matching that prefix routes a reply without parsing
# what may be megabytes of result (a relayed reply is passed on as it came).
_ID_PREFIX = re.compile(r'\{"id":(-?\d+|"(?:[^"\\]|\\.)*"|null)[,}]')


def reply_id(text: str) -> Any:
    """The `id` a reply answers (raises orjson.JSONDecodeError for what is not JSON)."""
    match = _ID_PREFIX.match(text)
    if match is not None:
        return orjson.loads(match.group(1))
    reply = orjson.loads(text)
    return reply.get("id") if isinstance(reply, dict) else None


class Link:
    """Calls and streams multiplexed over one WebSocket, matched to replies by `id`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, url: str) -> None:
        self.ws = ws
        self.url = url
        self._ids = itertools.count(1)
        self._waiting: dict[Any, asyncio.Queue[Any]] = {}
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _read(self) -> None:
        """Route every reply to its caller until the socket closes; then fail what waits."""
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                queue = self._waiting.get(reply_id(msg.data))
                if queue is not None:
                    queue.put_nowait(msg.data)
        except (orjson.JSONDecodeError, TypeError):
            pass  # not our protocol: end the link like a drop
        finally:
            self.closed.set()
            for queue in self._waiting.values():
                queue.put_nowait(_END)

    async def _send(self, call_id: int, text: str) -> asyncio.Queue[Any]:
        if self.closed.is_set():
            raise ServiceUnavailable(f"{self.url}/ws is closed")
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._waiting[call_id] = queue
        try:
            await self.ws.send_str(text)
        except (ConnectionError, RuntimeError) as exc:
            self._waiting.pop(call_id, None)
            raise ServiceUnavailable(f"{self.url}/ws: {exc}") from exc
        return queue

    async def _start(self, action: str, params: dict[str, Any] | None
                     ) -> tuple[int, asyncio.Queue[Any]]:
        call_id = next(self._ids)
        rid = request_id.get()
        text = orjson.dumps({"id": call_id, "action": action, "params": params or {},
                             **({"request": rid} if rid else {})}).decode()
        return call_id, await self._send(call_id, text)

    def _unwrap(self, action: str, text: Any) -> Any:
        if text is _END:
            raise ServiceUnavailable(f"{self.url}/ws closed during {action}")
        reply = orjson.loads(text)
        if "error" in reply:
            raise ActionError.from_message(reply["error"])
        return reply

    async def _wait(self, call_id: Any, queue: asyncio.Queue[Any], what: str,
                    timeout: float) -> Any:
        try:
            return await asyncio.wait_for(queue.get(), timeout)
        except TimeoutError as exc:
            raise ServiceUnavailable(f"{self.url} {what}: no answer in {timeout:g} s") from exc
        finally:
            self._waiting.pop(call_id, None)

    async def call(self, action: str, params: dict[str, Any] | None = None, *,
                   timeout: float = 30.0) -> Any:
        """Run `action`; if it times out or the caller is cancelled, the peer is told to stop
        it."""
        call_id, queue = await self._start(action, params)
        try:
            reply = await self._wait(call_id, queue, action, timeout)
        except (asyncio.CancelledError, ActionError):
            await self._cancel(call_id)
            raise
        return self._unwrap(action, reply)["result"]

    async def stream(self, action: str, params: dict[str, Any] | None = None
                     ) -> AsyncIterator[Any]:
        call_id, queue = await self._start(action, params)
        try:
            while True:
                reply = self._unwrap(action, await queue.get())
                if "event" not in reply:
                    return
                yield reply["event"]
        finally:
            self._waiting.pop(call_id, None)
            await self._cancel(call_id)

    async def _cancel(self, call_id: int) -> None:
        """Tell the peer to stop a call (harmless once it has answered)."""
        if not self.closed.is_set():
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(orjson.dumps({"id": call_id, "cancel": True}).decode())


class LinkKeeper:
    """One link to a service, opened on first use and reopened after it drops."""

    def __init__(self, client: ServiceClient, expect: PeerIdentity | None = None) -> None:
        self.client = client
        self.expect = expect
        self._link: Link | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Link:
        async with self._lock:
            if self._link is None or self._link.closed.is_set():
                self._link = await self.client.connect(expect=self.expect)
            return self._link

    async def close(self) -> None:
        if self._link is not None:
            await self._link.close()
        await self.client.close()
