"""The relay: one WebSocket per client session, routed to that session's compute services.

`GET /session?id=SESSION` on the public channel, with `Authorization: Bearer TOKEN`. Messages
are `{"id", "service", "action", "params"}`; replies `{"id", "result"}` or `{"id", "error"}`;
session events (progress, restarts, failure) and the session's log records (`type: log`)
arrive as `{"event": {...}}`. Every call is checked
again with the GSS (token still valid, user still allowed, service part of *this* session), so
nothing else in the private tier is reachable through the relay, whatever a client writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from aiohttp import WSMsgType, web

from twinstack.exitcodes import ExitCode, FatalError
from twinstack.wire.client import ClientPool, ServiceClient
from twinstack.wire.errors import ActionError, malformed
from twinstack.wire.runtime import Ports, ServiceBase, bearer_token, error_response

log = logging.getLogger(__name__)


class RelayService(ServiceBase):
    name: ClassVar[str] = "relay"
    ports: ClassVar[Ports] = Ports(internal=7440, health=7441, public=7402)

    async def start(self) -> None:
        if self.settings.gss_url is None:
            raise FatalError(ExitCode.CONFIG_ERROR, "the relay needs --gss-url")
        self.tls_client = self.runtime.tls.client()
        self.gss = ServiceClient(self.settings.gss_url, self.tls_client, timeout=10)
        self.compute = ClientPool(self.tls_client)
        self.logger = (ServiceClient(self.settings.logger_url, self.tls_client)
                       if self.settings.logger_url else None)

    async def stop(self) -> None:
        await self.compute.close()
        for client in [self.gss, *([self.logger] if self.logger else [])]:
            await client.close()

    def public_routes(self) -> list[web.RouteDef]:
        return [web.get("/session", self._session_socket)]

    async def _access(self, token: str, session: str) -> dict[str, Any]:
        return await self.gss.call("session_access", {"token": token, "session": session},
                                   idempotent=True)

    async def _session_socket(self, request: web.Request) -> web.StreamResponse:
        session = request.query.get("id", "")
        try:
            token = bearer_token(request)
            if not session:
                raise malformed("give the session: /session?id=SESSION")
            access = await self._access(token, session)
        except ActionError as err:
            log.warning("refused relay connection to session %s: %s", session, err.message)
            return error_response(err)
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        log.info("client %s attached to session %s", access["user"], session)
        pushers = [asyncio.create_task(self._push(ws, self.gss, "session_events",
                                                  {"session": session}, lambda e: e))]
        if self.logger is not None:
            pushers.append(asyncio.create_task(self._push(
                ws, self.logger, "follow", {"session": session, "level": "info"},
                lambda rec: {"type": "log", **rec})))
        calls: set[asyncio.Task[None]] = set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                task = asyncio.create_task(self._forward(ws, token, session, msg.data))
                calls.add(task)
                task.add_done_callback(calls.discard)
        finally:
            for task in [*pushers, *calls]:
                task.cancel()
        return ws

    async def _push(self, ws: web.WebSocketResponse, source: ServiceClient, action: str,
                    params: dict[str, Any], as_event: Callable[[Any], dict[str, Any]]) -> None:
        """Forward a stream (session events, session logs) to the client as events; follow
        the source through its restarts."""
        delay = 0.1
        while not ws.closed:
            try:
                async for item in source.stream(action, params):
                    delay = 0.1
                    await ws.send_json({"event": as_event(item)})
            except ActionError as exc:
                log.debug("%s stream for %s: %s", action, params, exc.message)
            except (ConnectionError, RuntimeError):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _forward(self, ws: web.WebSocketResponse, token: str, session: str,
                       data: str) -> None:
        call_id = None
        try:
            try:
                message = json.loads(data)
            except json.JSONDecodeError as exc:
                raise malformed(f"message is not valid JSON: {exc}") from exc
            if not isinstance(message, dict):
                raise malformed("a message is {\"id\", \"service\", \"action\", \"params\"}")
            call_id = message.get("id")
            service, action = message.get("service"), message.get("action")
            if not isinstance(service, str) or not isinstance(action, str):
                raise ActionError(400, "malformed_request",
                                  "'service' and 'action' must be strings", "service")
            access = await self._access(token, session)
            endpoint = access["services"].get(service, {}).get("endpoint")
            if endpoint is None:
                raise ActionError(404, "unknown_service",
                                  f"session {session} has no service {service!r}; it has "
                                  f"{', '.join(sorted(access['services'])) or 'none yet'}",
                                  "service")
            if access["state"] != "ready":
                raise ActionError(409, "session_not_ready", f"session {session} is "
                                  f"{access['state']}")
            params = message.get("params") or {}
            if access["services"][service].get("via") == "lss":  # behind NAT: through its LSS
                result = await self.gss.call("tunnel_call", {
                    "session": session, "service": service, "action": action,
                    "params": params}, timeout=600)
            else:
                result = await self.compute[endpoint].call(action, params, timeout=600)
            reply: dict[str, Any] = {"id": call_id, "result": result}
        except ActionError as err:
            reply = {"id": call_id, "error": err.in_message()}
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_json(reply)
