"""The newcomer's path, with real processes: `twinstack up` once per data directory, ports that
are taken, the CLI in the wrong directory, login and listings, private files, client errors that
name what is at fault, and a `with session:` block that detaches instead of closing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.platform_fixtures import (
    PASSWORD,
    Platform,
    free_port_block,
    start_platform,
    stop_platform,
    wait_until,
)
from tests.probes import serve_fake_relay
from twinstack import __version__
from twinstack.client import ActionError, Client, ServiceUnavailable, SessionFailed
from twinstack.exitcodes import ExitCode
from twinstack.launcher import PLATFORM, Child, serves_from
from twinstack.launcher import Platform as Launcher

REPO = Path(__file__).resolve().parents[2]
KRIGING = {"points": [[0, 0], [1, 0], [0, 1], [1, 1]], "values": [1, 2, 3, 4],
           "targets": [[0.5, 0.5]], "variogram": {"model": "linear", "slope": 1.0, "nugget": 0.0}}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINSTACK_")}
    env.update(extra)
    return env


def twinstack(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
              stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "twinstack", *args], cwd=cwd, input=stdin,
                          env=env or clean_env(), text=True, capture_output=True, timeout=90)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One platform for the tests that only use it (each start costs seconds)."""
    platform = start_platform(tmp_path_factory.mktemp("newcomer"))
    try:
        platform.add_user("ada", admin=True)
        platform.add_user("bob")
        yield platform
    finally:
        stop_platform(platform)


def snapshot(*paths: Path) -> dict[Path, tuple[int, bytes]]:
    """Each file's modification time and content."""
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths}


# twinstack up ------------------------------------------------------------------------------------


def test_a_second_up_on_the_same_data_dir_is_refused_and_changes_nothing(running: Platform):
    kept = [running.data / "platform.json", running.data / "twinstack.lock",
            *sorted((running.data / "run").glob("*.ready")), *sorted(running.ca.parent.iterdir())]
    before = snapshot(*kept)
    second = twinstack("up", "--data-dir", str(running.data), "--port", str(free_port_block()),
                       env=running.env)
    assert second.returncode == ExitCode.ALREADY_RUNNING == 14, second.stderr
    assert (f"TwinStack is already running at {running.url} (pid {running.proc.pid})"
            in second.stderr)
    assert snapshot(*kept) == before
    assert sorted(running.ca.parent.iterdir()) == sorted(p for p in kept if p.parent ==
                                                         running.ca.parent)
    assert running.proc.poll() is None
    assert running.client("ada").projects() is not None  # the first one still serves


def test_a_killed_launcher_does_not_block_the_next_start(tmp_path: Path):
    first = start_platform(tmp_path)
    services = [s["pid"] for s in first.info()["services"].values()]
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=10)
    assert (first.data / "platform.json").exists()  # stale: nobody removed it
    for path in [first.data, *first.data.rglob("*")]:  # as an earlier version left them
        # its services are still ending (SIGTERM when their parent died): the last to close
        # the database removes its -wal and -shm files meanwhile
        with contextlib.suppress(FileNotFoundError):
            if not path.is_symlink():
                path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o044
                           | (0o011 if path.is_dir() else 0))
    second = start_platform(tmp_path, port=first.port)  # same ports, same data directory
    try:
        assert second.info()["pid"] == second.proc.pid
        assert not any(serves_from(pid, first.data) for pid in services)  # died with it
        second.add_user("cy")
        assert second.client("cy").projects() == []
        assert_private(second.data)  # tightened at start
    finally:
        stop_platform(second)
    assert not (second.data / "platform.json").exists()


def test_a_taken_port_is_named_with_its_service_and_how_to_choose_another(tmp_path: Path):
    base = free_port_block()
    gss_internal = base + dict((p.name, p.internal) for p in PLATFORM)["gss"]
    with socket.create_server(("127.0.0.1", gss_internal)):
        refused = twinstack("up", "--data-dir", str(tmp_path / "data"), "--port", str(base))
    assert refused.returncode == ExitCode.PORT_IN_USE, refused.stderr
    assert f"port {gss_internal}" in refused.stderr and "gss (internal channel)" in refused.stderr
    assert "make up PORT=" in refused.stderr and "twinstack up --port" in refused.stderr
    assert not (tmp_path / "data" / "pki").exists()  # refused before anything started
    assert not (tmp_path / "data" / "platform.json").exists()


def test_a_child_that_cannot_bind_is_reported_with_its_port(tmp_path: Path):
    """The port can be taken between the check and a service's own bind: still name it."""
    base = free_port_block()
    launcher = Launcher(tmp_path / "data", "127.0.0.1", base)
    relay: Child = next(c for c in launcher.children if c.label == "relay")
    public = base + 2
    with socket.create_server(("127.0.0.1", public)):
        message = launcher._bind_failure(relay, tmp_path / "relay.out")
    assert f"port {public}" in message and "relay (public channel)" in message
    assert "--port" in message


# the CLI's data directory ------------------------------------------------------------------------


def test_the_cli_in_a_directory_without_a_platform_refuses_and_creates_nothing(tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env(XDG_CONFIG_HOME=str(tmp_path / "config"))
    looked_at = str(elsewhere / "data")
    for args, stdin in ((("user", "add", "ada", "--password-stdin"), PASSWORD + "\n"),
                        (("user", "list"), None), (("group", "add", "team"), None),
                        (("group", "list"), None), (("logs",), None),
                        (("login", "ada", "--password-stdin"), PASSWORD + "\n")):
        done = twinstack(*args, cwd=elsewhere, env=env, stdin=stdin)
        assert done.returncode == ExitCode.CONFIG_ERROR, (args, done.stderr)
        assert looked_at in done.stderr and "--data-dir" in done.stderr, (args, done.stderr)
    assert list(elsewhere.iterdir()) == []
    assert not (tmp_path / "config").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    from_env = twinstack("user", "list", cwd=elsewhere,
                         env={**env, "TWINSTACK_DATA_DIR": str(empty)})
    assert from_env.returncode == ExitCode.CONFIG_ERROR and str(empty) in from_env.stderr
    flag_wins = twinstack("user", "list", "--data-dir", str(elsewhere / "flag"), cwd=elsewhere,
                          env={**env, "TWINSTACK_DATA_DIR": str(empty)})
    assert str(elsewhere / "flag") in flag_wins.stderr
    database = tmp_path / "other.db"
    by_url = twinstack("user", "list", "--database-url", f"sqlite:///{database}", cwd=elsewhere,
                       env=env)
    assert by_url.returncode == ExitCode.CONFIG_ERROR and str(database) in by_url.stderr
    assert list(empty.iterdir()) == [] and list(elsewhere.iterdir()) == []
    assert not database.exists()


def test_the_cli_goes_offline_to_an_existing_database_or_one_it_is_told_to_create(
        tmp_path: Path):
    data = tmp_path / "data"
    refused = twinstack("user", "add", "erin", "--password-stdin", "--data-dir", str(data),
                        stdin=PASSWORD + "\n")
    assert refused.returncode == ExitCode.CONFIG_ERROR and "--create-database" in refused.stderr
    assert not data.exists()
    created = twinstack("user", "add", "erin", "--admin", "--password-stdin", "--data-dir",
                        str(data), "--create-database", stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    assert_private(data)
    listed = twinstack("user", "list", "--data-dir", str(data))  # offline, on the database
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["erin", "admin"]


def test_version():
    done = twinstack("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"twinstack {__version__}"


# login and listings ------------------------------------------------------------------------------


def test_login_and_listings_through_the_cli(running: Platform, tmp_path: Path):
    env = clean_env(XDG_CONFIG_HOME=str(tmp_path / "config"))

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return twinstack(*args, env=env, stdin=stdin)

    assert cli("project", "list").stderr.strip() == "twinstack: log in first: twinstack login NAME"
    login = cli("login", "ada", "--password-stdin", "--data-dir", str(running.data),
                stdin=PASSWORD + "\n")
    assert login.returncode == 0, login.stderr
    stored = tmp_path / "config" / "twinstack" / "credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    credentials = json.loads(stored.read_text())
    assert credentials["url"] == running.url and credentials["user"] == "ada"
    assert credentials["ca"] == str(running.ca.resolve()) and credentials["token"]

    tw = running.client("ada")
    project = tw.create_project("listed", "data analysis")
    session = tw.open_session(project["id"])
    try:
        projects = cli("project", "list")
        assert projects.returncode == 0, projects.stderr
        assert projects.stdout.splitlines()[0].split()[:2] == ["ID", "NAME"]
        assert any(project["id"] in line and "listed" in line
                   for line in projects.stdout.splitlines())
        as_json = json.loads(cli("project", "list", "--json").stdout)
        assert {p["id"] for p in as_json} == {p["id"] for p in tw.projects()}
        sessions = cli("session", "list").stdout
        assert any(session.id in line and "ready" in line for line in sessions.splitlines())
        types = cli("session", "types", "--json")
        assert json.loads(types.stdout) == [
            {"name": "data analysis", "services": ["kriging"]},
            {"name": "3D simulation", "services": ["model", "modeling", "cartesian-mesh",
                                                  "tet-mesh", "visualization", "fit-td"]},
            {"name": "geochemistry", "services": ["model", "phreeqc", "kriging",
                                                  "visualization"]}]
        assert "kriging" in cli("session", "types").stdout
        nodes = cli("node", "list")
        assert nodes.returncode == 0, nodes.stderr
        assert "RESERVED MEMORY" in nodes.stdout.splitlines()[0]
        [local] = [line for line in nodes.stdout.splitlines()
                   if line.split()[:2] == ["local", "connected"]]
        assert " MB " in local  # what its live sessions reserve, of what they may take
    finally:
        session.close()

    assert cli("login", "bob", "--password-stdin", "--data-dir", str(running.data),
               stdin=PASSWORD + "\n").returncode == 0
    not_admin = cli("node", "list")
    assert not_admin.returncode == ExitCode.USAGE
    assert "administrators" in not_admin.stderr and "bob" in not_admin.stderr
    token = json.loads(stored.read_text())["token"]
    assert cli("logout").returncode == 0
    assert not stored.exists()
    with Client(running.url, ca=running.ca, token=token) as revoked, \
            pytest.raises(ActionError) as refused:
        revoked.projects()
    assert refused.value.status == 401  # logout revoked the token on the platform
    assert "log in first" in cli("session", "list").stderr


# private files -----------------------------------------------------------------------------------


def assert_private(data: Path) -> None:
    """No directory under DATA lets anyone else in; no file but a certificate lets them read."""
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.rglob("*"):
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        certificate = path.suffix == ".pem" and not path.name.endswith("key.pem")
        if path.is_dir() or not certificate:
            assert mode & 0o077 == 0, f"{path} has mode {oct(mode)}"


def test_the_data_dir_is_private(running: Platform):
    tw = running.client("ada")
    project = tw.create_project("private", "data analysis")
    session = tw.open_session(project["id"])  # session folders and compute keys exist now
    try:
        sessions = running.data / "local" / "sessions" / session.id
        assert sessions.is_dir()
        assert_private(running.data)
        for name in ("twinstack.db", "platform.json", "logs/gss.out", "pki/ca-key.pem"):
            assert stat.S_IMODE((running.data / name).stat().st_mode) == 0o600, name
    finally:
        session.close()


# client errors -----------------------------------------------------------------------------------


def test_client_errors_name_the_file_and_the_url(running: Platform, other_pki: Any,
                                                 tmp_path: Path):
    missing = tmp_path / "missing.pem"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        Client(running.url, ca=missing)
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate")
    with pytest.raises(ValueError, match=re.escape(str(not_pem))):
        Client(running.url, ca=not_pem)

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        nowhere = f"https://127.0.0.1:{s.getsockname()[1]}"
    with Client(nowhere, ca=running.ca) as tw, pytest.raises(ServiceUnavailable) as unreachable:
        tw.info()
    assert nowhere in unreachable.value.message and "refused" in unreachable.value.message

    with Client(running.url, ca=other_pki.ca) as tw, pytest.raises(ActionError) as rejected:
        tw.info()
    assert rejected.value.code == "certificate_rejected"
    assert not isinstance(rejected.value, ServiceUnavailable)  # retrying will not help
    assert running.url in rejected.value.message and str(other_pki.ca) in rejected.value.message
    assert "certificate" in rejected.value.message

    cli = twinstack("login", "ada", "--password-stdin", "--url", running.url, "--ca",
                    str(missing), env=clean_env(XDG_CONFIG_HOME=str(tmp_path / "config")),
                    stdin=PASSWORD + "\n")
    assert cli.returncode == ExitCode.CERTIFICATE_ERROR and str(missing) in cli.stderr


# sessions: detach at the end of `with`, and the relay's close codes ------------------------------


def test_leaving_a_with_block_detaches_and_the_session_goes_on(running: Platform):
    ada, other = running.client("ada"), running.client("ada")
    project = ada.create_project("shared", "data analysis")
    with ada.open_session(project["id"]) as mine:
        joined = other.open_session(project["id"])
        assert joined.id == mine.id
        assert mine.call("kriging", "interpolate", **KRIGING)["estimates"] == [2.5]
    assert mine not in ada.attached
    assert joined.call("kriging", "interpolate", **KRIGING)["estimates"] == [2.5]
    assert [s["state"] for s in other.sessions() if s["id"] == joined.id] == ["ready"]
    joined.close()  # closing is explicit
    wait_until(lambda: [s["state"] for s in other.sessions() if s["id"] == joined.id]
               in (["closing"], ["closed"]), what="the session closing")


class FakeFrontDoor:
    """gss and relay at the edge: answers `info` and `open_session`, then closes the session's
    WebSocket with `code` and `reason` when the first call arrives (as the relay does when a
    token is revoked). Real TLS from the test PKI; the client is the thing under test."""

    def __init__(self, pki: Any, code: int, reason: str) -> None:
        self.code, self.reason = code, reason
        self.files = pki.identity("gss", name=f"fake-front-door-{code}")
        self.url = ""

    async def _execute(self, request: web.Request) -> web.Response:
        action = (await request.json())["action"]
        if action == "info":
            return web.json_response({"result": {"auth_url": self.url, "relay_url": self.url,
                                                 "session_types": {}}})
        assert action == "open_session"
        return web.json_response({"result": {"id": "s-1", "project": "p-1", "state": "ready",
                                              "services": {}}})

    async def _session(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()  # the client's first call
        await ws.close(code=self.code, message=self.reason.encode())
        return ws

    async def serve(self) -> web.AppRunner:
        runner, self.url = await serve_fake_relay(self.files, self._execute, self._session)
        return runner


@pytest.mark.parametrize(("code", "reason", "status"),
                         [(4401, "token revoked", 401), (4403, "access removed", 403)])
def test_a_relay_close_code_reaches_the_session(pki: Any, code: int, reason: str, status: int):
    front = FakeFrontDoor(pki, code, reason)

    def as_a_user() -> None:
        with Client(front.url, ca=pki.ca, token="t") as tw:
            session = tw.open_session("p-1")
            with pytest.raises(ActionError) as pending:
                session.call("kriging", "interpolate", **KRIGING)
            assert pending.value.status == status and reason in pending.value.message
            assert str(code) in pending.value.message
            assert session.state == "revoked"
            event = session.wait_for_event(lambda e: e.get("type") == "disconnected", 5)
            assert (event["code"], event["reason"]) == (code, reason)
            with pytest.raises(ActionError, match=reason) as later:  # at once, not a hang
                session.call("kriging", "interpolate", timeout=5, **KRIGING)
            assert later.value.status == status
            with pytest.raises(SessionFailed, match=reason):
                session.wait_ready(5)

    async def main() -> None:
        runner = await front.serve()
        try:
            await asyncio.to_thread(as_a_user)
        finally:
            await runner.cleanup()

    asyncio.run(main())


# make up -----------------------------------------------------------------------------------------


def make_dry_run(target: str, tmp_path: Path, *args: str) -> str:
    """What `make TARGET` would run for a fresh venv (nothing is installed)."""
    # Not as a sub-make of `make test`: that would print its directory and pass its flags on.
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATA", "PORT", "PYTHON", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}", *args], cwd=REPO,
                          env=env, text=True, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_up_installs_only_what_running_needs(tmp_path: Path):
    up = make_dry_run("up", tmp_path, "PORT=7500")
    installs = [line for line in up.splitlines() if "/pip " in line]
    assert installs and all("--quiet" in line for line in installs)
    assert re.findall(r"install -e '\.\[([^\]]*)\]'", up) == ["compute,cad,mesh"]
    assert up.splitlines()[-1].endswith("twinstack up --data-dir data --port 7500")
    assert "--port" not in make_dry_run("up", tmp_path).splitlines()[-1]

    test = make_dry_run("test", tmp_path)
    assert re.findall(r"install -e '\.\[([^\]]*)\]'", test) == ["compute,cad,mesh,kubernetes,test"]
    assert test.index("scripts/system-packages.sh") < test.index("-m venv")  # venv needs it
