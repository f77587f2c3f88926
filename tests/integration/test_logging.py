"""Log records travel from services to the logger and back out through `twinstack logs`."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import Pki, ServiceProcess, Services
from twinstack.pki.tls import TlsFiles, client_context
from twinstack.wire.client import ServiceClient
from twinstack.wire.errors import ActionError

KRIGING = {"points": [[0, 0], [1, 0], [0, 1], [1, 1]], "values": [1.0, 2.0, 3.0, 4.0],
           "targets": [[0.5, 0.5]],
           "variogram": {"model": "linear", "slope": 1.0, "nugget": 0.0}}


def call(service: ServiceProcess, identity: TlsFiles, action: str, params: dict) -> object:
    async def go() -> object:
        async with ServiceClient(service.url(), client_context(identity), timeout=10) as client:
            return await client.call(action, params)
    return asyncio.run(go())


def twinstack_logs(logger: ServiceProcess, admin: TlsFiles, *args: str,
                   **popen: object) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "twinstack", "logs", "--logger-url", logger.url(),
           "--cert", str(admin.cert), "--key", str(admin.key), "--ca", str(admin.ca), *args]
    if popen:
        return subprocess.Popen(cmd, text=True, **popen)  # type: ignore[call-overload]
    return subprocess.run(cmd, text=True, capture_output=True, timeout=30)


def wait_for_records(logger: ServiceProcess, admin: TlsFiles, *args: str, count: int = 1,
                     timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        done = twinstack_logs(logger, admin, "--json", *args)
        assert done.returncode == 0, done.stderr
        records = [json.loads(line) for line in done.stdout.splitlines()]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def start_platform(services: Services, pki: Pki, *sessions: str, logger_args: tuple[str, ...] = ()
                   ) -> tuple[ServiceProcess, list[ServiceProcess]]:
    logger = services.start("logger", pki.identity("logger"), *logger_args)
    krigings = [services.start("kriging", pki.identity("kriging", session=s), "--session", s,
                               "--logger-url", logger.url(), "--logger-required")
                for s in sessions]
    return logger, krigings


def test_records_from_two_services_come_back_through_twinstack_logs(services, pki):
    logger, (k1, k2) = start_platform(services, pki, "s-one", "s-two")
    admin = pki.identity("admin")
    for service, session in ((k1, "s-one"), (k2, "s-two")):
        call(service, pki.identity("relay", session=session), "interpolate", KRIGING)

    kriged = wait_for_records(logger, admin, "--service", "kriging", count=4)
    assert {(r["session"], r["msg"].split()[0]) for r in kriged} >= {
        ("s-one", "kriging"), ("s-one", "kriged"), ("s-two", "kriging"), ("s-two", "kriged")}
    assert all(r["request"] for r in kriged if r["msg"].startswith("kriged"))
    own = wait_for_records(logger, admin, "--service", "logger")
    assert any(r["msg"] == "logger ready" for r in own)  # the logger's own records too

    only_two = wait_for_records(logger, admin, "--session", "s-two", count=2)
    assert only_two and {r["session"] for r in only_two} == {"s-two"}

    with pytest.raises(ActionError) as refused:  # logged as a warning by the service called
        call(k1, pki.identity("gss"), "interpolate", KRIGING)
    assert refused.value.status == 403
    warnings = wait_for_records(logger, admin, "--level", "warning", "--service", "kriging")
    assert warnings and all(r["level"] in ("warning", "error") for r in warnings)
    assert any("may not call 'interpolate'" in r["msg"] for r in warnings)

    text = twinstack_logs(logger, admin, "--service", "kriging")  # the human form
    assert text.returncode == 0 and "kriging[s-one]: kriged 4 points" in text.stdout


def test_twinstack_logs_follow_shows_new_records(services, pki):
    logger, (kriging,) = start_platform(services, pki, "s-f")
    admin = pki.identity("admin")
    follower = twinstack_logs(logger, admin, "--follow", "--json", "--limit", "1",
                              "--service", "kriging", stdout=subprocess.PIPE)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in follower.stdout], daemon=True).start()
    try:
        lines.get(timeout=30)  # the newest past record: the follow stream opens after it
        lss = pki.identity("lss", session="s-f")
        # Records made from now on did not exist when the past was queried; the follow stream
        # may take a moment to open, so call again (with a new point count) until one shows.
        for extra in range(1, 40):
            points = [[i, i % 3] for i in range(4 + extra)]
            call(kriging, lss, "interpolate", {**KRIGING, "points": points,
                                               "values": [float(i) for i in range(4 + extra)]})
            try:
                while True:
                    record = json.loads(lines.get(timeout=1.0))
                    if record["msg"].startswith(f"kriged {4 + extra} points"):
                        assert record["session"] == "s-f"
                        return
            except queue.Empty:
                continue
        raise AssertionError("follow never showed a new record")
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=10)


def test_a_dead_or_hung_logger_neither_stops_nor_slows_its_senders(services, pki):
    disk = str(services.tmp / "logger-disk")
    logger, (kriging,) = start_platform(services, pki, "s-d", logger_args=("--data-dir", disk))
    relay = pki.identity("relay", session="s-d")

    def timed_calls(n: int) -> list[float]:
        times = []
        for _ in range(n):
            started = time.monotonic()
            assert call(kriging, relay, "interpolate", KRIGING)["estimates"] == [2.5]
            times.append(time.monotonic() - started)
        return times

    timed_calls(3)
    logger.proc.send_signal(signal.SIGSTOP)  # hung: connections open but nothing answers
    try:
        hung = timed_calls(10)
    finally:
        logger.proc.send_signal(signal.SIGCONT)
    logger.proc.kill()  # dead: connections refused
    logger.proc.wait()
    dead = timed_calls(10)
    # A sender that waited on the logger would take its 5 s forwarding timeout per call.
    assert max(hung + dead) < 4.0, (hung, dead)  # well under 5 s, even on a loaded machine
    assert kriging.proc.poll() is None

    # A logger back on the same address and disk receives what was buffered: nothing lost.
    revived = services.start("logger", pki.identity("logger"), "--bind",
                             logger.addresses["internal"], "--data-dir", disk)
    deadline = time.monotonic() + 30
    kriged: list[dict] = []
    while len(kriged) < 23 and time.monotonic() < deadline:
        records = wait_for_records(revived, pki.identity("admin"), "--service", "kriging")
        kriged = [r for r in records if "kriged" in r["msg"]]
    assert len(kriged) >= 23
