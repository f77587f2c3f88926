"""The web page's pure functions (parameter parsing, history lanes, CSV points, the colour
map, the solver form, samples files, input lines, plot ticks) and its session socket under
node's test runner: tests/js/*.test.mjs import the page's own modules, unbundled."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from aiohttp import WSMsgType, web

from tests.conftest import free_port
from tests.js_harness import tool

JS = Path(__file__).resolve().parents[1] / "js"
TESTS = JS / "page_functions.test.mjs"


def test_the_pages_functions_under_node():
    done = subprocess.run([tool("node"), "--test", str(TESTS)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# pass 12" in done.stdout and "# fail 0" in done.stdout



def _relay_that_restarts() -> web.Application:
    """Closes the first session socket once it is open (1012: service restart); answers
    every call on later ones with the action's name. Also answers POST /actions/NAME with
    the name, as auth does an action (for the page's failover between auth replicas)."""
    connections = 0

    async def session(request: web.Request) -> web.WebSocketResponse:
        nonlocal connections
        ws = web.WebSocketResponse(protocols=[request.headers["Sec-WebSocket-Protocol"]])
        await ws.prepare(request)
        connections += 1
        if connections == 1:
            await ws.close(code=1012, message=b"restarting")
            return ws
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                call = message.json()
                await ws.send_json({"id": call["id"], "result": {"answered": call["action"]}})
        return ws

    async def action(request: web.Request) -> web.Response:
        return web.json_response({"result": {"answered": request.match_info["name"]}})

    app = web.Application()
    app.router.add_get("/session", session)
    app.router.add_post("/actions/{name}", action)
    return app


async def _session_socket_tests() -> tuple[int | None, str]:
    runner = web.AppRunner(_relay_that_restarts())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    node = tool("node")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    flags = ["--experimental-websocket"] if int(version.lstrip("v").split(".")[0]) < 22 else []
    try:
        done = await asyncio.create_subprocess_exec(
            node, *flags, "--test", str(JS / "session_socket.test.mjs"),
            env={**os.environ, "RELAY_URL": f"ws://127.0.0.1:{port}",
                 "DEAD_URL": f"ws://127.0.0.1:{free_port()}"},  # nothing listens there
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = await asyncio.wait_for(done.communicate(), timeout=120)
        return done.returncode, out.decode()
    finally:
        await runner.cleanup()


def test_the_session_socket_under_node_against_a_relay_that_restarts():
    returncode, output = asyncio.run(_session_socket_tests())
    assert returncode == 0, output
    assert "# pass 3" in output and "# fail 0" in output
