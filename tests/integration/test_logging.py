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
from collections.abc import Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Pki, ServiceProcess, Services
from twinstack.pki.tls import TlsFiles, client_context
from twinstack.wire.client import ServiceClient
from twinstack.wire.errors import ActionError

KRIGING = {"points": [[0, 0], [1, 0], [0, 1], [1, 1]], "values": [1.0, 2.0, 3.0, 4.0],
           "targets": [[0.5, 0.5]],
           "variogram": {"model": "linear", "slope": 1.0, "nugget": 0.0}}


HANG_GUARD = 60.0  # seconds: only so that a hung service fails the test instead of stalling it


def call(service: ServiceProcess, identity: TlsFiles, action: str, params: dict) -> object:
    async def go() -> object:
        async with ServiceClient(service.url(), client_context(identity),
                                 timeout=HANG_GUARD) as client:
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
                     until: Callable[[list[dict]], bool] = lambda records: True,
                     timeout: float = HANG_GUARD) -> list[dict]:
    """The records matching `args` once there are `count` of them and `until` holds (or what
    there is at the hang guard, for the caller's assertion to show): services ship their
    records in batches, each on its own schedule."""
    deadline = time.monotonic() + timeout
    while True:
        done = twinstack_logs(logger, admin, "--json", *args)
        assert done.returncode == 0, done.stderr
        records = [json.loads(line) for line in done.stdout.splitlines()]
        if (len(records) >= count and until(records)) or time.monotonic() > deadline:
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

    wanted = {("s-one", "kriging"), ("s-one", "kriged"), ("s-two", "kriging"),
              ("s-two", "kriged")}

    def pairs(records: list[dict]) -> set[tuple[str, str]]:
        return {(r["session"], r["msg"].split()[0]) for r in records}
    kriged = wait_for_records(logger, admin, "--service", "kriging", count=4,
                              until=lambda records: pairs(records) >= wanted)
    assert pairs(kriged) >= wanted
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
    """Records made after the follow stream opened are printed as they arrive.

    No timing is involved: the stream is known to be open once a marker appended after the
    past records were printed comes through it; only then is the record under test made.
    """
    logger, (kriging,) = start_platform(services, pki, "s-f")
    admin, own = pki.identity("admin"), pki.identity("kriging", session="s-f")
    append(logger, own, "before the follow")  # so that `--limit 1` has a past record to print
    follower = twinstack_logs(logger, admin, "--follow", "--json", "--limit", "1",
                              "--service", "kriging", stdout=subprocess.PIPE)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in follower.stdout], daemon=True).start()
    try:
        past = next_record(lines, timeout=HANG_GUARD)  # the past query is answered
        assert past is not None and past["service"] == "kriging", past
        # Markers appended from now on are not in the past query's answer, which was printed
        # already, so the first one shown came through the follow stream: it is open.
        deadline = time.monotonic() + HANG_GUARD
        marker, opened = 0, False
        while not opened:
            assert time.monotonic() < deadline, "the follow stream never opened"
            marker += 1
            append(logger, own, f"marker {marker}")
            opened = next_message(lines, timeout=0.5) is not None  # re-append until one shows
        lss = pki.identity("lss", session="s-f")
        call(kriging, lss, "interpolate", {**KRIGING, "points": [[i, i % 3] for i in range(7)],
                                           "values": [float(i) for i in range(7)]})
        deadline = time.monotonic() + HANG_GUARD
        while True:  # later markers may still arrive first
            left = deadline - time.monotonic()
            record = next_record(lines, timeout=left)
            assert record is not None, "follow never showed the new record"
            if record["msg"].startswith("kriged 7 points"):
                assert record["session"] == "s-f" and record["service"] == "kriging"
                break
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=HANG_GUARD)


def append(logger: ServiceProcess, identity: TlsFiles, msg: str) -> None:
    """Store one record as the service of `identity` (the logger names the sender itself)."""
    record = {"ts": time.time(), "level": "info", "service": "ignored", "msg": msg}
    call(logger, identity, "append", {"records": [record]})


def next_record(lines: queue.Queue[str], timeout: float) -> dict | None:
    try:
        return json.loads(lines.get(timeout=max(timeout, 0.0)))
    except queue.Empty:
        return None


def next_message(lines: queue.Queue[str], timeout: float) -> str | None:
    record = next_record(lines, timeout)
    return None if record is None else record["msg"]


def test_a_dead_or_hung_logger_neither_stops_nor_slows_its_senders(services, pki):
    """Calls do not wait for the logger, whether it hangs (stopped) or is gone (killed).

    The signal is the service's own action-time histogram, not the test's clock: a handler
    that waited on the logger would take its 5 s forwarding timeout, so every `interpolate`
    must sit in the `le=5.0` bucket. A 4-point kriging takes milliseconds, so the bound has
    a margin of about a thousand times; client-side time (process start, TLS, scheduling on
    a loaded machine) does not enter it.
    """
    disk = str(services.tmp / "logger-disk")
    logger, (kriging,) = start_platform(services, pki, "s-d", logger_args=("--data-dir", disk))
    relay = pki.identity("relay", session="s-d")

    def calls(n: int) -> None:
        for _ in range(n):
            assert call(kriging, relay, "interpolate", KRIGING)["estimates"] == [2.5]

    calls(3)
    logger.proc.send_signal(signal.SIGSTOP)  # hung: connections open but nothing answers
    try:
        calls(10)
    finally:
        logger.proc.send_signal(signal.SIGCONT)
    logger.proc.kill()  # dead: connections refused
    logger.proc.wait()
    calls(10)
    assert kriging.proc.poll() is None
    buckets = action_buckets(kriging, pki, "interpolate")
    assert buckets["+Inf"] == 23, buckets
    assert buckets["5.0"] == 23, buckets  # none waited for the forwarding timeout

    # A logger back on the same address and disk receives what was buffered: nothing lost.
    revived = services.start("logger", pki.identity("logger"), "--bind",
                             logger.addresses["internal"], "--data-dir", disk)
    deadline = time.monotonic() + HANG_GUARD
    kriged: list[dict] = []
    while len(kriged) < 23 and time.monotonic() < deadline:
        records = wait_for_records(revived, pki.identity("admin"), "--service", "kriging")
        kriged = [r for r in records if "kriged" in r["msg"]]
    assert len(kriged) >= 23


def action_buckets(service: ServiceProcess, pki: Pki, action: str) -> dict[str, float]:
    """The service's histogram of successful `action` times: cumulative count per bucket."""
    async def fetch() -> str:
        async with aiohttp.ClientSession() as http, http.get(
                f"{service.url('health')}/metrics", ssl=client_context(ca=pki.ca)) as resp:
            assert resp.status == 200
            return await resp.text()

    buckets = {}
    for family in text_string_to_metric_families(asyncio.run(fetch())):
        for sample in family.samples:
            if sample.name == "twinstack_action_seconds_bucket" and \
                    sample.labels["action"] == action and sample.labels["outcome"] == "ok":
                buckets[sample.labels["le"]] = sample.value
    return buckets
