"""The client's Session against a scripted relay: drops, refusals, restarts and time-outs.

The relay here is a fake at the edge (real TLS from the test PKI, a real aiohttp WebSocket)
that plays one script per connection, so each fault lands exactly where the test wants it;
the client is the thing under test. The real relay is exercised in
tests/integration/test_client_reconnect.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiohttp import WSCloseCode, WSMsgType, web

from tests.probes import serve_fake_relay
from twinstack.client import ActionError, CallTimeout, Client, ConnectionDropped

Play = Callable[["FakeRelay", web.WebSocketResponse, web.Request], Awaitable[None]]
Script = Callable[["FakeRelay", web.Request], Awaitable[web.StreamResponse]]
LONG = 30.0  # a hang guard, never the thing tested


class FakeRelay:
    """gss and relay in one: `info` and `open_session`, then one script per WebSocket."""

    def __init__(self, pki: Any, scripts: list[Script]) -> None:
        self.files = pki.identity("gss", name="fake-relay")
        self.scripts = scripts  # the last one plays for every later connection
        self.url = ""
        self.received: list[dict[str, Any]] = []
        self.connections = 0

    async def _execute(self, request: web.Request) -> web.Response:
        action = (await request.json())["action"]
        if action == "info":
            return web.json_response({"result": {"auth_url": self.url, "relay_url": self.url,
                                                 "session_types": {}}})
        return web.json_response({"result": {"id": "s-1", "project": "p-1", "state": "ready",
                                              "services": {"kriging": {}}}})

    async def _session(self, request: web.Request) -> web.StreamResponse:
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        return await script(self, request)

    async def call(self, ws: web.WebSocketResponse) -> dict[str, Any]:
        """The next message the client sends (recorded)."""
        msg = await ws.receive()
        assert msg.type == WSMsgType.TEXT, msg
        message = json.loads(msg.data)
        self.received.append(message)
        return message

    async def serve(self) -> web.AppRunner:
        runner, self.url = await serve_fake_relay(self.files, self._execute, self._session)
        return runner


def websocket(play: Play) -> Script:
    """A connection accepted, then played by `play`."""
    async def script(relay: FakeRelay, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await play(relay, ws, request)
        return ws
    return script


def refuse(status: int) -> Script:
    async def script(relay: FakeRelay, request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"code": "refused", "message": "no"}},
                                 status=status)
    return script


async def answer(relay: FakeRelay, ws: web.WebSocketResponse, request: web.Request) -> None:
    """A working relay: every call answered with the connection it came on."""
    number = relay.connections
    while True:
        msg = await ws.receive()
        if msg.type != WSMsgType.TEXT:
            return
        message = json.loads(msg.data)
        relay.received.append(message)
        await ws.send_json({"id": message["id"], "result": {"connection": number}})


def cut_after(calls: int) -> Script:
    """Calls arrive, then the connection is cut (no close frame), as when a relay dies."""
    async def play(relay: FakeRelay, ws: web.WebSocketResponse, request: web.Request) -> None:
        for _ in range(calls):
            await relay.call(ws)
        assert request.transport is not None
        request.transport.abort()
    return websocket(play)


ANSWER = websocket(answer)


def run_client(pki: Any, scripts: list[Script],
               as_a_user: Callable[[Client, FakeRelay], None]) -> FakeRelay:
    relay = FakeRelay(pki, scripts)

    def user() -> None:
        with Client(relay.url, ca=pki.ca, token="t") as tw:
            as_a_user(tw, relay)

    async def main() -> None:
        runner = await relay.serve()
        try:
            await asyncio.wait_for(asyncio.to_thread(user), LONG)
        finally:
            await runner.cleanup()

    asyncio.run(main())
    return relay


def test_a_cut_connection_is_made_again_and_idempotent_calls_go_through(pki: Any):
    def as_a_user(tw: Client, relay: FakeRelay) -> None:
        session = tw.open_session("p-1")
        with ThreadPoolExecutor(2) as pool:
            once = pool.submit(session.call, "kriging", "interpolate", timeout=LONG)
            again = pool.submit(session.call, "kriging", "interpolate", timeout=LONG,
                                idempotent=True)
            with pytest.raises(ConnectionDropped, match="may or may not have run"):
                once.result(LONG)
            assert again.result(LONG) == {"connection": 2}  # sent again on the new one
        back = session.wait_for_event(lambda e: e["type"] == "reconnected", LONG)
        assert back["attempts"] == 1 and session.state == "ready"
        assert session.call("kriging", "interpolate") == {"connection": 2}

    relay = run_client(pki, [cut_after(2), ANSWER], as_a_user)
    assert relay.connections == 2
    sent = [m["id"] for m in relay.received]
    assert len(sent) == 4 and sent.count(sent[-2]) == 2  # the idempotent call, twice


def test_the_state_says_reconnecting_while_away(pki: Any):
    """The second handshake is held until the test has looked at the session; a refused
    one (503) before it only makes the client try again."""
    let_in = threading.Event()

    async def held(relay: FakeRelay, request: web.Request) -> web.StreamResponse:
        await asyncio.to_thread(let_in.wait, LONG)
        return await ANSWER(relay, request)

    def as_a_user(tw: Client, relay: FakeRelay) -> None:
        session = tw.open_session("p-1")
        with pytest.raises(ConnectionDropped):
            session.call("kriging", "interpolate")
        away = session.wait_for_event(lambda e: e["type"] == "reconnecting", LONG)
        assert away["code"] == WSCloseCode.ABNORMAL_CLOSURE
        assert session.state == "reconnecting"
        let_in.set()
        back = session.wait_for_event(lambda e: e["type"] == "reconnected", LONG)
        assert back["attempts"] == 2  # the refusal, then in
        assert session.state == "ready"

    run_client(pki, [cut_after(1), refuse(503), held], as_a_user)


def test_a_refused_reattach_is_final(pki: Any):
    def as_a_user(tw: Client, relay: FakeRelay) -> None:
        session = tw.open_session("p-1")
        with pytest.raises(ConnectionDropped):
            session.call("kriging", "interpolate")
        gone = session.wait_for_event(lambda e: e["type"] == "disconnected", LONG)
        assert gone["status"] == 403
        assert session.state == "revoked"
        with pytest.raises(ActionError) as refused:  # at once, no waiting
            session.call("kriging", "interpolate", idempotent=True)
        assert refused.value.status == 403

    relay = run_client(pki, [cut_after(1), refuse(403)], as_a_user)
    assert relay.connections == 2  # no third try


def test_a_message_too_big_is_not_sent_again(pki: Any):
    async def too_big(relay: FakeRelay, ws: web.WebSocketResponse, request: web.Request) -> None:
        await relay.call(ws)
        await ws.close(code=WSCloseCode.MESSAGE_TOO_BIG, message=b"over the limit")

    def as_a_user(tw: Client, relay: FakeRelay) -> None:
        session = tw.open_session("p-1")
        with pytest.raises(ActionError, match="over the limit") as failed:
            session.call("kriging", "interpolate", idempotent=True)
        assert failed.value.status == 413
        session.wait_for_event(lambda e: e["type"] == "reconnected", LONG)

    relay = run_client(pki, [websocket(too_big), ANSWER], as_a_user)
    assert len(relay.received) == 1


def test_an_idempotent_call_waits_for_its_service_to_restart(pki: Any):
    async def restarting(relay: FakeRelay, ws: web.WebSocketResponse,
                         request: web.Request) -> None:
        """503 to the first two calls; then the `restarted` event; then answers."""
        for _ in range(2):
            message = await relay.call(ws)
            await ws.send_json({"id": message["id"], "error": {
                "status": 503, "code": "unavailable", "message": "kriging is not available "
                "right now (it may be restarting); try again"}})
        await ws.send_json({"event": {"type": "restarted", "service": "kriging"}})
        await answer(relay, ws, request)

    def as_a_user(tw: Client, relay: FakeRelay) -> None:
        session = tw.open_session("p-1")
        with pytest.raises(ActionError, match="restarting") as plain:
            session.call("kriging", "interpolate")
        assert plain.value.status == 503
        # Woken by the event, not by back-off: a 60 s back-off would outlast LONG.
        assert session.call("kriging", "interpolate", idempotent=True) == {"connection": 1}

    relay = run_client(pki, [websocket(restarting)], as_a_user)
    assert len(relay.received) == 3


def test_a_call_that_times_out_is_cancelled(pki: Any):
    async def silent(relay: FakeRelay, ws: web.WebSocketResponse, request: web.Request) -> None:
        """Never answers a call; confirms a cancel as the relay does."""
        call = await relay.call(ws)
        cancel = await relay.call(ws)
        assert cancel == {"id": call["id"], "service": "kriging", "cancel": True}
        await ws.send_json({"id": call["id"], "error": {
            "status": 409, "code": "cancelled", "message": "cancelled"}})
        await answer(relay, ws, request)

    def as_a_user(tw: Client, relay: FakeRelay) -> None:
        session = tw.open_session("p-1")
        with pytest.raises(CallTimeout) as timed_out:
            session.call("kriging", "interpolate", timeout=0.1)
        assert isinstance(timed_out.value, TimeoutError) and timed_out.value.cancelled
        assert timed_out.value.message == ("kriging.interpolate gave no answer in 0.1 s; it "
                                           "was cancelled")
        assert session.call("kriging", "interpolate") == {"connection": 1}

    relay = run_client(pki, [websocket(silent)], as_a_user)
    assert len(relay.received) == 3


def test_a_client_closed_twice_stays_closed(pki: Any):
    tw = Client("https://127.0.0.1:9", ca=pki.ca)
    tw.close()
    tw.close()  # as a `with` block's exit after an explicit close
    with pytest.raises(RuntimeError, match="this client is closed"):
        tw.projects()
