"""Calling another service's actions over its internal channel (mutual TLS).

Idempotent calls are retried with back-off on connection failures and 503s; other calls are
retried only when the connection was refused, i.e. when the request certainly never arrived.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from twinstack.logs import request_id
from twinstack.wire.errors import ActionError, ServiceUnavailable

_RETRY_DELAYS = (0.1, 0.3, 1.0)


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
        limit = aiohttp.ClientTimeout(total=timeout or self.timeout)
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

    async def stream(self, action: str, params: dict[str, Any] | None = None
                     ) -> AsyncIterator[Any]:
        """Run a streaming action over the WebSocket and yield each event it pushes."""
        call_id = next(self._ids)
        try:
            async with self._http().ws_connect(f"{self.url}/ws", headers=self._headers(),
                                               heartbeat=30) as ws:
                await ws.send_json({"id": call_id, "action": action, "params": params or {}})
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    reply = json.loads(msg.data)
                    if "event" in reply:
                        yield reply["event"]
                    elif "error" in reply:
                        err = reply["error"]
                        raise ActionError.from_json(int(err.get("status", 400)), err)
                    else:
                        return
        except aiohttp.WSServerHandshakeError as exc:
            raise ActionError(exc.status, "refused", f"{self.url}/ws refused: {exc.message}") \
                from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServiceUnavailable(f"{self.url} {action}: {exc or type(exc).__name__}") from exc
