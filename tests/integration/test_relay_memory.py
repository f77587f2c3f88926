"""The relay's and the kriging service's memory stay under their budget (512 MB) for the
largest requests and replies they accept: a message at max_message_bytes going in, a reply at
the limit coming out, both through the relay."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.platform_fixtures import running_platform, session_processes
from tests.probes import RawSocket, run

LIMIT = 16 * 2**20  # max_message_bytes
BUDGET = 512 * 2**20  # compute_memory_mb, and the relay's documented peak


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def largest_points_message(call_id: int) -> str:
    """As many points as fit in one message, kriged with neighbours at one target."""
    rng = random.Random(7)
    head = {"id": call_id, "service": "kriging", "action": "interpolate"}
    point = json.dumps([round(rng.random(), 9), round(rng.random(), 9)])
    per_point = len(point) + len(", ") + len("0.123456789, ")
    count = (LIMIT - 2_000) // per_point
    params = {"points": [[round(rng.random(), 9), round(rng.random(), 9)] for _ in range(count)],
              "values": [round(rng.random(), 9) for _ in range(count)],
              "targets": [[0.5, 0.5]], "neighbours": 16,
              "variogram": {"model": "exponential", "psill": 1.0, "range": 0.3, "nugget": 0.0}}
    text = json.dumps({**head, "params": params})
    assert LIMIT * 0.9 < len(text) <= LIMIT, len(text)
    return text


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    with running_platform(tmp_path_factory.mktemp("memory"), "ada") as platform:
        tw = platform.client("ada")
        yield platform, tw, tw.open_session(tw.create_project("big", "data analysis")["id"])


def test_the_largest_accepted_calls_stay_within_budget(session):
    platform, tw, opened = session
    relay = f"wss://127.0.0.1:{platform.port + 2}/session?id={opened.id}"

    async def scenario() -> tuple[dict, dict, dict]:
        sock = await RawSocket.open(relay, platform.ca, tw.token)
        try:
            limits = await sock.call({"id": 0, "service": "kriging", "action": "limits"})
            big_in = await sock.call(json.loads(largest_points_message(1)))
            grid = int(limits["result"]["max_targets"] ** 0.5)
            big_out = await sock.call({"id": 2, "service": "kriging", "action": "interpolate",
                                       "params": {
                                           "points": [[0, 0], [1, 0], [0, 1], [1, 1]],
                                           "values": [1, 2, 3, 4],
                                           "grid": {"x": [0, 1, grid], "y": [0, 1, grid]},
                                           "variogram": {"model": "linear", "slope": 1.0,
                                                         "nugget": 0.0}}})
            return limits, big_in, big_out
        finally:
            await sock.close()
    limits, big_in, big_out = run(scenario())
    assert big_in["result"]["shape"] == [1], big_in.get("error")
    side = int(limits["result"]["max_targets"] ** 0.5)
    assert big_out["result"]["shape"] == [side, side], big_out.get("error")
    relay_pid = platform.pid("relay")
    (kriging_pid,) = session_processes(opened.id)
    assert peak_rss(relay_pid) < BUDGET, f"relay peaked at {peak_rss(relay_pid) / 2**20:.0f} MB"
    assert peak_rss(kriging_pid) < BUDGET, \
        f"kriging peaked at {peak_rss(kriging_pid) / 2**20:.0f} MB"

