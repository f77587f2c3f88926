"""Relay overhead: TwinStack's relay against configurable-http-proxy (JupyterHub's proxy).

Five paths, all measured in one run by the same WebSocket client loop, on 127.0.0.1 only:

  relay      client -> relay (public TLS, bearer token, /session?id=S) -> kriging's `info`
  direct     client -> the same kriging service's internal mTLS /ws (the admin identity)
  chp        client -> configurable-http-proxy (TLS) -> echo service (TLS)
  echo       client -> the echo service directly (TLS)
  forwarder  client -> an aiohttp WebSocket forwarder on uvloop that checks nothing -> echo

so "what the relay adds" is relay - direct, "what CHP adds" is chp - echo, and what the
framework the relay is built on adds by itself is forwarder - echo. Per path: the round-trip
latency of single calls (one in flight; p50, p95, mean) and pipelined throughput (`--window`
calls in flight on one WebSocket; 32 by default, the relay's per-user cap
relay_calls_per_user, and the same window on every path). Paths take turns in `--rounds`
rounds, in a rotating order, after a warm-up each, so drift on a busy machine hits all alike.

Install configurable-http-proxy with npm (the script runs `npm install --prefix CACHE` into
`--chp-cache` when it is neither given with `--chp` nor on PATH). Run from the repository root:

    .venv/bin/python benchmarks/relay.py > relay.json          # full run, a few minutes
    .venv/bin/python benchmarks/relay.py --quick               # smoke run, under a minute

The JSON result goes to stdout, progress to stderr. Every process the script starts (the
platform, CHP, the echo service) is stopped on the way out, on errors and Ctrl-C too.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from aiohttp import web
from session_start import (
    PASSWORD,
    SESSION_TYPE,
    START_TIMEOUT,
    USER,
    add_twinstack_user,
    free_port,
    log,
    running,
    twinstack_up,
    wait_until,
)

from twinstack.client import Client
from twinstack.launcher import admin_identity, pki_dir
from twinstack.pki.authority import CA_CERT
from twinstack.pki.identity import issue_identity
from twinstack.pki.tls import TlsFiles, client_context, server_context

ECHO_PATH = "/user/bench/ws"  # a JupyterHub-like route: CHP forwards /user/bench/ to the echo
REPLY_TIMEOUT = 60.0
DEFAULT_CHP_CACHE = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                     / "twinstack-bench" / "chp")
FULL = {"latency_samples": 2000, "pipelined_messages": 20000, "window": 32, "rounds": 10,
        "warmup": 200}
QUICK = {"latency_samples": 100, "pipelined_messages": 500, "window": 32, "rounds": 2,
         "warmup": 20}


# the measuring client: one code path for every route ----------------------------------------


@dataclass
class Route:
    """Where one path's WebSocket goes and what its messages look like."""

    name: str
    hops: str  # what a message passes through, for the reader of the result
    url: str
    ssl: ssl.SSLContext
    envelope: dict[str, Any]  # every message is {"id": N, **envelope}
    headers: dict[str, str] = field(default_factory=dict)
    latency_rounds_ns: list[list[int]] = field(default_factory=list)  # one list per round
    pipelined: list[tuple[int, int]] = field(default_factory=list)  # (messages, elapsed ns)
    events: int = 0  # pushed messages without an id (the relay's session events): skipped
    reply_bytes: int = 0
    tls: str = ""


class Connection:
    """One WebSocket to a route; ids count up across the whole run.

    A reader task takes every message off the socket all the time, as a real client does:
    that answers the server's heartbeat pings while other paths have their turn (the server
    closes a socket whose pings go unanswered within a minute), and skips session events.
    """

    def __init__(self, route: Route, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.route = route
        self.ws = ws
        self.next_id = 0
        self.replies: asyncio.Queue[int | Exception] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if data.get("id") is None:
                    self.route.events += 1
                elif "result" not in data:
                    self.replies.put_nowait(
                        RuntimeError(f"{self.route.name}: call {data['id']} failed: {data}"))
                else:
                    self.route.reply_bytes = len(msg.data)
                    self.replies.put_nowait(int(data["id"]))
            end: Exception = RuntimeError(f"{self.route.name}: the server closed the "
                                          f"connection ({self.ws.close_code})")
        except Exception as exc:  # handed to the measuring loop, which raises it
            end = exc
        self.replies.put_nowait(end)

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()

    async def send(self) -> int:
        self.next_id += 1
        await self.ws.send_str(json.dumps({"id": self.next_id, **self.route.envelope}))
        return self.next_id

    async def reply(self) -> int:
        """The id of the next reply; a failed call or a closed connection raises."""
        async with asyncio.timeout(REPLY_TIMEOUT):
            item = await self.replies.get()
        if isinstance(item, Exception):
            raise item
        return item

    async def latency(self, samples: int, record: bool = True) -> None:
        """`samples` calls one after the other, each timed from send to its reply."""
        if record:
            self.route.latency_rounds_ns.append([])
        for _ in range(samples):
            started = time.perf_counter_ns()
            call_id = await self.send()
            if await self.reply() != call_id:
                raise RuntimeError(f"{self.route.name}: a reply to another call arrived")
            if record:
                self.route.latency_rounds_ns[-1].append(time.perf_counter_ns() - started)

    async def pipeline(self, messages: int, window: int, record: bool = True) -> None:
        """`messages` calls with up to `window` in flight: a new one goes out per reply."""
        started = time.perf_counter_ns()
        in_flight = {await self.send() for _ in range(min(window, messages))}
        sent, done = len(in_flight), 0
        while done < messages:
            call_id = await self.reply()
            if call_id not in in_flight:
                raise RuntimeError(f"{self.route.name}: reply to unknown call {call_id}")
            in_flight.remove(call_id)
            done += 1
            if sent < messages:
                in_flight.add(await self.send())
                sent += 1
        if record:
            self.route.pipelined.append((messages, time.perf_counter_ns() - started))


def tls_description(ws: aiohttp.ClientWebSocketResponse) -> str:
    ssl_object = ws.get_extra_info("ssl_object")
    if ssl_object is None:
        return "none"
    return f"{ssl_object.version()} {ssl_object.cipher()[0]}"


async def measure(routes: list[Route], args: argparse.Namespace) -> None:
    """Warm up every route, then take turns: a latency chunk and a pipelined chunk per round."""
    async with contextlib.AsyncExitStack() as stack:
        connections = []
        for route in routes:
            http = await stack.enter_async_context(aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=route.ssl)))
            ws = await http.ws_connect(route.url, headers=route.headers, max_msg_size=0)
            route.tls = tls_description(ws)
            conn = Connection(route, ws)
            stack.push_async_callback(conn.close)
            connections.append(conn)
        for conn in connections:
            await conn.latency(args.warmup, record=False)
            await conn.pipeline(2 * args.window, args.window, record=False)
            log(f"{conn.route.name}: warmed up ({conn.route.tls})")
        latency_chunks = split(args.latency_samples, args.rounds)
        pipelined_chunks = split(args.pipelined_messages, args.rounds)
        for rnd in range(args.rounds):
            turn = connections[rnd % len(connections):] + connections[:rnd % len(connections)]
            for conn in turn:
                await conn.latency(latency_chunks[rnd])
                await conn.pipeline(pipelined_chunks[rnd], args.window)
            log(f"round {rnd + 1}/{args.rounds}: " + ", ".join(
                f"{c.route.name} {statistics.median(c.route.latency_rounds_ns[-1]) / 1e6:.3f} ms"
                for c in connections))


def split(total: int, parts: int) -> list[int]:
    """`total` in `parts` near-equal chunks."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# statistics -----------------------------------------------------------------------------------


def route_result(route: Route) -> dict[str, Any]:
    ms = [ns / 1e6 for chunk in route.latency_rounds_ns for ns in chunk]
    messages = sum(m for m, _ in route.pipelined)
    elapsed_s = sum(ns for _, ns in route.pipelined) / 1e9
    per_round = [m / (ns / 1e9) for m, ns in route.pipelined]
    return {"hops": route.hops, "url": route.url, "tls": route.tls,
            "latency_ms": {"p50": round(statistics.median(ms), 4),
                           "p95": round(percentile(ms, 95), 4),
                           "mean": round(statistics.fmean(ms), 4),
                           "min": round(min(ms), 4), "max": round(max(ms), 4),
                           "samples": len(ms), "p50_per_round": round_p50s_ms(route)},
            "pipelined": {"calls_per_s": round(messages / elapsed_s, 1),
                          "calls_per_s_per_round": [round(x, 1) for x in per_round],
                          "messages": messages},
            "reply_bytes": route.reply_bytes, "events_skipped": route.events}


def round_p50s_ms(route: Route) -> list[float]:
    return [round(statistics.median(chunk) / 1e6, 4) for chunk in route.latency_rounds_ns]


def percentile(samples: list[float], pct: int) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[pct - 1]


def comparison(paths: dict[str, dict[str, Any]], routes: dict[str, Route]) -> dict[str, Any]:
    """What each proxy adds over its direct path, and the two goals.

    The latency ratio is also taken round by round (each round's p50s): its spread shows how
    much machine noise there is in the overall figure.
    """
    def added(proxied: str, direct: str) -> dict[str, float]:
        return {k: round(paths[proxied]["latency_ms"][k] - paths[direct]["latency_ms"][k], 4)
                for k in ("p50", "p95", "mean")}

    def throughput(proxied: str, direct: str) -> float:
        return round(float(paths[proxied]["pipelined"]["calls_per_s"]
                           / paths[direct]["pipelined"]["calls_per_s"]), 3)

    relay, chp = added("relay", "direct"), added("chp", "echo")
    floor = added("forwarder", "echo")
    ratio = round(relay["p50"] / chp["p50"], 3) if chp["p50"] > 0 else None
    per_round = [(r - d) / (c - e) for r, d, c, e in zip(
        *(round_p50s_ms(routes[name]) for name in ("relay", "direct", "chp", "echo")),
        strict=True) if c > e]
    relay_throughput = throughput("relay", "direct")
    return {"added_latency_ms": {"relay": relay, "chp": chp, "forwarder": floor},
            "ratios": {
                "relay_added_over_chp_added_p50": ratio,
                "relay_added_over_chp_added_mean":
                    round(relay["mean"] / chp["mean"], 3) if chp["mean"] > 0 else None,
                "relay_added_over_chp_added_p50_rounds": {
                    "min": round(min(per_round), 3), "median":
                    round(statistics.median(per_round), 3), "max": round(max(per_round), 3)}
                if per_round else None,
                "forwarder_added_over_chp_added_p50":
                    round(floor["p50"] / chp["p50"], 3) if chp["p50"] > 0 else None,
                "relay_over_direct_pipelined": relay_throughput,
                "forwarder_over_echo_pipelined": throughput("forwarder", "echo"),
                "chp_over_echo_pipelined": throughput("chp", "echo")},
            "goals": {"relay_added_over_chp_added_p50 <= 1.5":
                      None if ratio is None else ratio <= 1.5,
                      "relay_over_direct_pipelined >= 0.5": relay_throughput >= 0.5}}


def machine(chp: str | None) -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform(),
            "openssl_python": ssl.OPENSSL_VERSION,
            "aiohttp": aiohttp.__version__, "twinstack": importlib.metadata.version("twinstack"),
            "node": command_output(["node", "--version"]),
            "openssl_node": command_output(["node", "-p", "process.versions.openssl"]),
            "chp": command_output([chp, "--version"]) if chp else None}


def command_output(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


# the echo service (run by this same file in a child process) ---------------------------------


async def echo_socket(request: web.Request) -> web.WebSocketResponse:
    """Answer each message with {"id", "result": <the message>}."""
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            body = json.loads(msg.data)
            await ws.send_str(json.dumps({"id": body.get("id"), "result": body}))
    return ws


async def serve_echo(cert: Path, key: Path, ca: Path) -> None:
    await listen("echo", echo_socket, cert, key, ca)


async def serve_forwarder(cert: Path, key: Path, ca: Path, echo: int) -> None:
    """The framework's floor: an aiohttp WebSocket forwarder on uvloop, as the relay runs,
    that checks and changes nothing (client -TLS-> it -TLS-> echo)."""
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(ca=ca)))

    async def forward(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        upstream = await http.ws_connect(f"wss://127.0.0.1:{echo}{ECHO_PATH}", max_msg_size=0)

        async def back() -> None:
            async for msg in upstream:
                await ws.send_str(msg.data)
        replies = asyncio.create_task(back())
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await upstream.send_str(msg.data)
        replies.cancel()
        await upstream.close()
        return ws

    await listen("forwarder", forward, cert, key, ca)
    await http.close()


async def listen(name: str, handler: Any, cert: Path, key: Path, ca: Path) -> None:
    """Serve `handler` at ECHO_PATH on a free loopback port, say which, until SIGTERM/SIGINT."""
    app = web.Application()
    app.router.add_get(ECHO_PATH, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    tls = server_context(TlsFiles(cert, key, ca), require_client_cert=False)
    await web.SockSite(runner, sock, ssl_context=tls).start()
    print(f"{name} listening on 127.0.0.1:{sock.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def said_port(name: str, log_file: Path) -> int | None:
    """The port a child service said it listens on, once it has."""
    found = re.search(rf"{name} listening on [\d.]+:(\d+)",
                      log_file.read_text(errors="replace"))
    return int(found.group(1)) if found else None


@contextlib.contextmanager
def child_service(workdir: Path, name: str, *args: str) -> Iterator[int]:
    """This file run as the echo service or the forwarder; the port it listens on."""
    log_file = workdir / f"{name}.log"
    cmd = [sys.executable, __file__, f"--serve-{name}", *args]
    with running(cmd, log_file) as proc:
        wait_until(lambda: said_port(name, log_file) is not None, name, proc, log_file)
        port = said_port(name, log_file)
        assert port is not None
        yield port


# configurable-http-proxy ----------------------------------------------------------------------


def find_chp(given: str | None, cache: Path) -> str:
    """The CHP executable: --chp, else PATH, else the cache dir (npm-installed there if new)."""
    if given:
        return given
    on_path = shutil.which("configurable-http-proxy")
    if on_path:
        return on_path
    cached = cache / "node_modules" / ".bin" / "configurable-http-proxy"
    if not cached.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("configurable-http-proxy not found and npm is missing: install "
                               "Node.js and npm, or pass --chp PATH")
        log(f"installing configurable-http-proxy into {cache}")
        subprocess.run([npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund",
                        "configurable-http-proxy"], check=True, stdout=sys.stderr)
    return str(cached)


def chp_api(port: int, token: str, method: str, path: str,
            body: dict[str, Any] | None = None) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return int(reply.status)


def chp_up(port: int, token: str) -> bool:
    try:
        return chp_api(port, token, "GET", "/routes") == 200
    except OSError:
        return False


@contextlib.contextmanager
def chp_proxy(workdir: Path, chp: str, tls: TlsFiles, echo_port: int) -> Iterator[int]:
    """CHP with TLS on its public side and a route to the echo service (TLS, CA-verified),
    added through its REST API as JupyterHub does."""
    port, api_port, token = free_port(), free_port(), secrets.token_hex(32)
    cmd = [chp, "--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1",
           "--api-port", str(api_port), "--ssl-cert", str(tls.cert), "--ssl-key", str(tls.key),
           "--client-ssl-ca", str(tls.ca)]
    log_file = workdir / "chp.log"
    env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": token}
    with running(cmd, log_file, env=env) as proc:
        wait_until(lambda: chp_up(api_port, token), "configurable-http-proxy", proc, log_file)
        prefix = ECHO_PATH.rsplit("/", 1)[0]
        chp_api(api_port, token, "POST", f"/routes{prefix}",
                {"target": f"https://127.0.0.1:{echo_port}"})
        yield port


# the platform ---------------------------------------------------------------------------------


@dataclass
class Platform:
    data_dir: Path
    relay_url: str
    token: str
    session: str
    endpoint: str  # the session's kriging service, internal mTLS


@contextlib.contextmanager
def twinstack_session(workdir: Path) -> Iterator[Platform]:
    """`twinstack up`, a user, a "data analysis" project and its open session (closed after)."""
    data_dir = workdir / "twinstack"
    data_dir.mkdir()
    log_file = workdir / "twinstack-up.log"
    with twinstack_up(data_dir, log_file) as (port, up_s):
        log(f"twinstack: platform up on port {port} in {up_s:.1f} s")
        add_twinstack_user(data_dir)
        with Client(f"https://127.0.0.1:{port}", ca=data_dir / "pki" / CA_CERT) as tw:
            tw.login(USER, PASSWORD)
            project = tw.create_project("relay-bench", SESSION_TYPE)
            session = tw.open_session(project["id"], timeout=START_TIMEOUT)
            try:
                session.detach()  # the benchmark's own WebSocket is the only one on the relay
                kriging = compute_endpoints(data_dir, session.id)["kriging"]
                if kriging.get("via") == "lss":
                    raise RuntimeError("kriging is reachable only through its LSS: no direct path")
                assert tw.token is not None
                yield Platform(data_dir, tw.info()["relay_url"], tw.token, session.id,
                               kriging["endpoint"])
            finally:
                session.close()


def compute_endpoints(data_dir: Path, session: str) -> dict[str, Any]:
    """Where a session's services run, as the operator reads it from the platform database
    (users are never shown internal endpoints)."""
    from twinstack.store import Database, projects, sqlite_url

    db = Database(sqlite_url(data_dir))
    try:
        with db.transaction() as s:
            return dict(projects.get_session(s, session).services)
    finally:
        db.dispose()


def wss(url: str) -> str:
    return "wss://" + url.removeprefix("https://")


# main -----------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    chp = find_chp(args.chp, args.chp_cache)
    result: dict[str, Any] = {"settings": {k: getattr(args, k) for k in FULL},
                              "machine": machine(chp)}
    with contextlib.ExitStack() as stack:
        ts = stack.enter_context(twinstack_session(workdir))
        pki = pki_dir(ts.data_dir)
        public = client_context(ca=pki / CA_CERT)
        proxy_tls = issue_identity(pki, "chp", workdir / "chp", hosts=["127.0.0.1"])
        echo_tls = issue_identity(pki, "echo", workdir / "echo", hosts=["127.0.0.1"])
        tls_args = [str(echo_tls.cert), str(echo_tls.key), str(echo_tls.ca)]
        echo = stack.enter_context(child_service(workdir, "echo", *tls_args))
        forwarder = stack.enter_context(child_service(workdir, "forwarder", *tls_args,
                                                      str(echo)))
        chp_port = stack.enter_context(chp_proxy(workdir, chp, proxy_tls, echo))
        call = {"service": "kriging", "action": "info", "params": {}}
        routes = [
            Route("relay", "client -TLS+bearer-> relay -mTLS-> kriging info",
                  f"{wss(ts.relay_url)}/session?id={ts.session}", public, call,
                  {"Authorization": f"Bearer {ts.token}"}),
            Route("direct", "client -mTLS (admin certificate)-> kriging /ws info",
                  f"{wss(ts.endpoint)}/ws", client_context(admin_identity(ts.data_dir)),
                  {"action": "info", "params": {}}),
            Route("chp", "client -TLS-> configurable-http-proxy -TLS-> echo",
                  f"wss://127.0.0.1:{chp_port}{ECHO_PATH}", public, call),
            Route("echo", "client -TLS-> echo", f"wss://127.0.0.1:{echo}{ECHO_PATH}",
                  public, call),
            Route("forwarder", "client -TLS-> aiohttp forwarder on uvloop -TLS-> echo",
                  f"wss://127.0.0.1:{forwarder}{ECHO_PATH}", public, call),
        ]
        asyncio.run(measure(routes, args))
    paths = {route.name: route_result(route) for route in routes}
    result.update(paths=paths, **comparison(paths, {route.name: route for route in routes}))
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    parser.add_argument("--latency-samples", type=int,
                        help=f"timed single calls per path ({FULL['latency_samples']})")
    parser.add_argument("--pipelined-messages", type=int,
                        help=f"pipelined calls per path ({FULL['pipelined_messages']})")
    parser.add_argument("--window", type=int,
                        help=f"pipelined calls in flight per WebSocket ({FULL['window']})")
    parser.add_argument("--rounds", type=int,
                        help=f"turns the paths take; the samples are split over them "
                             f"({FULL['rounds']})")
    parser.add_argument("--warmup", type=int,
                        help=f"untimed single calls per path before measuring, plus a "
                             f"pipelined burst ({FULL['warmup']})")
    parser.add_argument("--chp", help="configurable-http-proxy executable (default: PATH, "
                                      "else --chp-cache)")
    parser.add_argument("--chp-cache", type=Path, default=DEFAULT_CHP_CACHE,
                        help=f"where npm installs configurable-http-proxy ({DEFAULT_CHP_CACHE})")
    parser.add_argument("--serve-echo", nargs=3, metavar=("CERT", "KEY", "CA"),
                        help=argparse.SUPPRESS)  # internal: the echo service's process
    parser.add_argument("--serve-forwarder", nargs=4, metavar=("CERT", "KEY", "CA", "ECHO"),
                        help=argparse.SUPPRESS)  # internal: the forwarder's process
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds < 1 or args.warmup < 0 or args.window < 1 or \
            min(args.latency_samples, args.pipelined_messages) < args.rounds:
        parser.error("need --rounds ≥ 1, --window ≥ 1, --warmup ≥ 0, and at least one latency "
                     "sample and pipelined message per round")
    return args


def main() -> int:
    args = parse_args()
    if args.serve_echo:
        asyncio.run(serve_echo(*map(Path, args.serve_echo)))
        return 0
    if args.serve_forwarder:
        cert, key, ca, echo = args.serve_forwarder
        uvloop.run(serve_forwarder(Path(cert), Path(key), Path(ca), int(echo)))
        return 0
    # SIGTERM unwinds like Ctrl-C, so every started process is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        with tempfile.TemporaryDirectory(prefix="twinstack-relay-bench-") as tmp:
            result = run(args, Path(tmp))
    except KeyboardInterrupt:
        log("interrupted: everything this run started has been stopped")
        return 128 + signal.SIGINT
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
