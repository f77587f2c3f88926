"""Calling another service's actions over its internal channel (mutual TLS).

Idempotent calls are retried with back-off on connection failures and 503s; other calls are
retried only when the connection was refused, i.e. when the request certainly never arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from twinstack.logs import request_id
from twinstack.wire.errors import ActionError, ServiceUnavailable

_RETRY_DELAYS = (0.1, 0.3, 1.0)
CONNECT_TIMEOUT = 5.0


class ServiceClient:
    def __init__(self, url: str, ssl_context: ssl.SSLContext, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.ssl_context = ssl_context
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)

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
        for attempt in itertools.count():
            try:
                async with self._http().post(f"{self.url}/execute", json=body, timeout=limit,
                                             headers=self._headers()) as resp:
                    payload = await resp.json(content_type=None)
                    if resp.status == 503 and idempotent and attempt < len(_RETRY_DELAYS):
                        await asyncio.sleep(_RETRY_DELAYS[attempt])
                        continue
                    if resp.status >= 400:
                        raise ActionError.from_json(resp.status, (payload or {}).get("error", {}))
                    return payload["result"]
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
                refused = isinstance(exc, aiohttp.ClientConnectorError)
                if (idempotent or refused) and attempt < len(_RETRY_DELAYS):
                    await asyncio.sleep(_RETRY_DELAYS[attempt])
                    continue
                raise ServiceUnavailable(f"{self.url} {action}: {exc or type(exc).__name__}") \
                    from exc
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def link(self) -> AsyncIterator[Link]:
        """A WebSocket to the service carrying many calls and streams at once."""
        try:
            ws = await self._http().ws_connect(f"{self.url}/ws", headers=self._headers(),
                                               heartbeat=15)
        except aiohttp.WSServerHandshakeError as exc:
            raise ActionError(exc.status, "refused", f"{self.url}/ws refused: {exc.message}") \
                from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServiceUnavailable(f"{self.url}/ws: {exc or type(exc).__name__}") from exc
        link = Link(ws, self.url)
        reader = asyncio.create_task(link.read())
        try:
            yield link
        finally:
            await ws.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

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


class Link:
    """Calls and streams multiplexed over one WebSocket, matched to replies by `id`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, url: str) -> None:
        self.ws = ws
        self.url = url
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Queue[Any]] = {}
        self.closed = asyncio.Event()

    async def read(self) -> None:
        """Route every reply to its caller until the socket closes; then fail what waits."""
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                reply = json.loads(msg.data)
                queue = self._waiting.get(reply.get("id"))
                if queue is not None:
                    queue.put_nowait(reply)
        finally:
            self.closed.set()
            for queue in self._waiting.values():
                queue.put_nowait(_END)

    async def _send(self, action: str, params: dict[str, Any] | None) -> tuple[int, Any]:
        if self.closed.is_set():
            raise ServiceUnavailable(f"{self.url}/ws is closed")
        call_id = next(self._ids)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._waiting[call_id] = queue
        try:
            await self.ws.send_json({"id": call_id, "action": action, "params": params or {},
                                     **({"request": request_id.get()} if request_id.get()
                                        else {})})
        except (ConnectionError, RuntimeError) as exc:
            self._waiting.pop(call_id, None)
            raise ServiceUnavailable(f"{self.url}/ws: {exc}") from exc
        return call_id, queue

    def _unwrap(self, action: str, reply: Any) -> Any:
        if reply is _END:
            raise ServiceUnavailable(f"{self.url}/ws closed during {action}")
        if "error" in reply:
            raise ActionError.from_message(reply["error"])
        return reply

    async def call(self, action: str, params: dict[str, Any] | None = None, *,
                   timeout: float = 30.0) -> Any:
        call_id, queue = await self._send(action, params)
        try:
            reply = await asyncio.wait_for(queue.get(), timeout)
        except TimeoutError as exc:
            raise ServiceUnavailable(f"{self.url} {action}: no answer in {timeout:g} s") from exc
        finally:
            self._waiting.pop(call_id, None)
        return self._unwrap(action, reply)["result"]

    async def stream(self, action: str, params: dict[str, Any] | None = None
                     ) -> AsyncIterator[Any]:
        call_id, queue = await self._send(action, params)
        try:
            while True:
                reply = self._unwrap(action, await queue.get())
                if "event" not in reply:
                    return
                yield reply["event"]
        finally:
            self._waiting.pop(call_id, None)
            if not self.closed.is_set():
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.ws.send_json({"id": call_id, "cancel": True})
