"""`twinstack up --combined`: the logger, auth, gss and relay in one process (each with its own
listeners, certificate and mutual TLS), the LSS in another. A session works as on the default
platform, each service's log records keep its name, and when the shared process is killed the
launcher restarts it whole while the session's compute services run on."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

from tests.platform_fixtures import start_platform, stop_platform, wait_until

COMBINED = ("logger", "auth", "gss", "relay")


def test_four_services_share_a_process_and_restart_together(tmp_path: Path) -> None:
    platform = start_platform(tmp_path, "--combined")
    try:
        platform.add_user("ada")
        pids = {name: platform.pid(name) for name in (*COMBINED, "local")}
        assert len({pids[name] for name in COMBINED}) == 1
        shared = pids["gss"]
        assert "serve-together" in psutil.Process(shared).cmdline()
        assert pids["local"] != shared

        client = platform.client("ada")
        project = client.create_project("together", "data analysis")
        session = client.open_session(project["id"])
        assert session.call("kriging", "info")["session"] == session.id
        logged = platform.twinstack("logs")
        assert logged.returncode == 0, logged.stderr
        for name in ("auth", "gss", "relay"):  # the records of each under its own name
            assert f" {name}: " in logged.stdout, logged.stdout[-2000:]

        os.kill(shared, signal.SIGKILL)
        wait_until(lambda: platform.pid("gss") != shared, what="the combined process back")
        assert len({platform.pid(name) for name in COMBINED}) == 1
        # the relay came back with it: the session re-attaches and its services still answer
        assert session.call("kriging", "info", idempotent=True)["session"] == session.id
        assert [p["id"] for p in client.projects()] == [project["id"]]
    finally:
        stop_platform(platform)
