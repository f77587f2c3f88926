"""What an operator scrapes: every platform service's /metrics (health channel) during a
session, before and after logins (one wrong), a session's start, calls through the relay and
a compute service killed and restarted: the expected series move, and `promtool check
metrics` (Debian's prometheus package) finds nothing wrong with any exposition."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ci_skips import required_tool
from tests.platform_fixtures import Platform, running_platform, session_processes
from twinstack.client import ActionError
from twinstack.pki.tls import client_context
from twinstack.sessiontypes import SESSION_TYPE_NEEDS

POINTS = {"points": [[0, 0], [1, 0], [0, 1], [1, 1]], "values": [1, 2, 3, 4],
          "targets": [[0.5, 0.5]]}
PLATFORM_SERVICES = ("gss", "auth", "relay", "local")  # local: the platform's one LSS


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("metrics"), "ada") as running:
        yield running


def scrape(platform: Platform, service: str) -> str:
    """The service's /metrics, as Prometheus would fetch it (TLS, no client certificate)."""
    health = platform.info()["services"][service]["health"]
    context: ssl.SSLContext = client_context(ca=platform.ca)
    context.check_hostname = False
    with urllib.request.urlopen(f"https://{health}/metrics", context=context,
                                timeout=30) as reply:
        return reply.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_all(platform: Platform) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]],
                                                     float]]:
    return {service: samples(scrape(platform, service)) for service in PLATFORM_SERVICES}


def test_the_series_an_operator_watches_move_and_promtool_finds_nothing(platform: Platform):
    promtool = required_tool("promtool", install="apt-get install prometheus")
    before = scrape_all(platform)
    with pytest.raises(ActionError) as refused:
        platform.client().login("ada", "not her password")
    assert refused.value.status == 401
    tw = platform.client("ada")
    project = tw.create_project("watched", "data analysis")
    with tw.open_session(project["id"]) as session:
        assert session.call("kriging", "interpolate", **POINTS)["estimates"]
        [kriging] = session_processes(session.id)
        os.kill(kriging, signal.SIGKILL)
        session.wait_for_event(lambda e: e.get("type") == "restarted"
                               and e.get("service") == "kriging", 60)
        after = scrape_all(platform)
        texts = {service: scrape(platform, service) for service in PLATFORM_SERVICES}

    gss, auth, relay, lss = (after[s] for s in PLATFORM_SERVICES)
    for outcome, more in (("ok", 1), ("wrong_credentials", 1)):
        assert value(auth, "twinstack_logins_total", outcome=outcome) == \
            value(before["auth"], "twinstack_logins_total", outcome=outcome) + more

    assert value(gss, "twinstack_sessions", state="ready") >= 1
    assert value(gss, "twinstack_session_queue_length") == 0
    started = ("twinstack_session_start_seconds_count",
               {"session_type": "data analysis", "outcome": "ready"})
    assert value(gss, started[0], **started[1]) == value(before["gss"], started[0],
                                                         **started[1]) + 1
    assert value(gss, "twinstack_node_connected", node="local") == 1
    assert value(gss, "twinstack_node_capacity", node="local") == 8  # the tests' platform
    assert value(gss, "twinstack_node_sessions", node="local") >= 1
    assert value(gss, "twinstack_node_reserved_memory_bytes", node="local") >= \
        SESSION_TYPE_NEEDS["data analysis"].memory_mb * 2**20
    assert value(gss, "twinstack_node_session_memory_bytes", node="local") > 0

    assert value(relay, "twinstack_relay_sockets") >= 1
    for direction in ("from_client", "to_client"):
        for name in ("twinstack_relay_messages_total", "twinstack_relay_message_bytes_total"):
            assert value(relay, name, direction=direction) > \
                value(before["relay"], name, direction=direction)
    assert value(lss, "twinstack_compute_restarts_total", service="kriging") == \
        value(before["local"], "twinstack_compute_restarts_total", service="kriging") + 1

    for service, text in texts.items():
        checked = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                                 capture_output=True, timeout=60)
        assert checked.returncode == 0 and not checked.stdout.strip() \
            and not checked.stderr.strip(), (service, checked.stdout, checked.stderr)
