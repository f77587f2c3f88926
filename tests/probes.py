"""Raw probes of the public channels: bytes in, status and body out, with nothing in between.

The Python client refuses to send malformed input, so tests of what the platform does with
such input talk HTTP and WebSocket directly, as an attacker would.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

LONG = 60.0  # a hang guard, never the thing tested


def tls(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error(self) -> dict[str, Any]:
        return self.body["error"] if isinstance(self.body, dict) else {}


async def post(url: str, ca: Path, body: bytes | AsyncIterator[bytes], *,
               token: str | None = None) -> Reply:
    """POST `body` as it is to `url` (an async iterator is sent chunked, without a length)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls(ca))) as http, \
            http.post(url, data=body, headers=headers,
                      timeout=aiohttp.ClientTimeout(total=LONG)) as resp:
        text = await resp.text()
        try:
            parsed: Any = json.loads(text)
        except json.JSONDecodeError:
            parsed = text
        return Reply(resp.status, parsed, dict(resp.headers))


class RawSocket:
    """A WebSocket that sends text as given and reads replies and events as they come."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws

    @classmethod
    async def open(cls, url: str, ca: Path, token: str | None = None) -> RawSocket:
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls(ca)))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            ws = await http.ws_connect(url, headers=headers, max_msg_size=64 * 2**20,
                                       timeout=aiohttp.ClientWSTimeout(ws_close=10))
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def reply(self, call_id: Any = None, *, any_id: bool = False) -> dict[str, Any]:
        """The next reply with this id (events and other replies are skipped)."""
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), LONG)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"socket ended: {msg.type.name} {self.ws.close_code} "
                                      f"{msg.extra}")
            data = json.loads(msg.data)
            if "event" in data:
                continue
            if any_id or data.get("id") == call_id:
                return data

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.send(json.dumps(message))
        return await self.reply(message.get("id"))

    async def ended(self) -> tuple[int | None, str]:
        """Read until the server closes; its close code and reason."""
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), LONG)
            if msg.type == aiohttp.WSMsgType.CLOSE:  # the code the server sent
                return int(msg.data), str(msg.extra or "")
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.ERROR):
                return self.ws.close_code, str(msg.extra or "")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def serve_fake_relay(files: Any, execute: Any, session: Any
                           ) -> tuple[web.AppRunner, str]:
    """A stand-in for gss and relay on 127.0.0.1 (server TLS only): `execute` answers POST
    /execute, `session` the WebSocket at /session. Returns its runner and URL."""
    from twinstack.pki.tls import server_context

    app = web.Application()
    app.router.add_post("/execute", execute)
    app.router.add_get("/session", session)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0,
                       ssl_context=server_context(files, require_client_cert=False))
    await site.start()
    return runner, f"https://127.0.0.1:{runner.addresses[0][1]}"
