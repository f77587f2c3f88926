"""Database fixtures: every store test runs on a SQLite file and on a fresh PostgreSQL database.

Import the fixtures into a test module (`from store_fixtures import database_url, ...`).
PostgreSQL comes from the server at 127.0.0.1:5432 (or $TWINSTACK_TEST_PG_URL) when one
answers; otherwise a private throwaway server is started with initdb/pg_ctl, and the
PostgreSQL half of the tests is skipped, with the reason, when neither is possible.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url

from twinstack.store import Database
from twinstack.store.bus import libpq_url

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
INSTALL_POSTGRES = ("install PostgreSQL (apt-get install postgresql) or point "
                    "$TWINSTACK_TEST_PG_URL at a server")


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _postgres_bin() -> Path | None:
    """The directory holding initdb and pg_ctl: PATH first, then Debian's versioned dirs."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of the `postgres` maintenance database on a server the tests may create databases on."""
    url = os.environ.get("TWINSTACK_TEST_PG_URL", DEFAULT_SERVER)
    if _answers(url):
        yield url
        return
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip(f"no PostgreSQL at {url} and no initdb to start one: {INSTALL_POSTGRES}")
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip(f"no PostgreSQL at {url}; running as root and no 'postgres' user to run "
                        f"initdb as: {INSTALL_POSTGRES}")
        if shutil.which("runuser") is None:
            pytest.skip(f"no PostgreSQL at {url}; running as root and no runuser "
                        "(apt-get install util-linux)")
        prefix = ["runuser", "-u", "postgres", "--"]
    # mkdtemp under /tmp, not pytest's tmp dir: the postgres user must reach it when we are root.
    home = Path(tempfile.mkdtemp(prefix="twinstack-pg-"))
    if prefix:
        shutil.chown(home, "postgres")
    data, port = home / "data", _free_port()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120,
                              check=False)

    started = False
    try:
        init = run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                   "--no-sync")
        if init.returncode != 0:
            pytest.skip(f"no PostgreSQL at {url}; initdb failed: {init.stderr.strip()}; "
                        f"{INSTALL_POSTGRES}")
        options = f"-k {home} -c listen_addresses=127.0.0.1 -p {port} -c fsync=off"
        start = run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "server.log"),
                    "-o", options, "-w", "-t", "60", "start")
        started = start.returncode == 0
        if not started:
            pytest.skip(f"no PostgreSQL at {url}; pg_ctl start failed: {start.stderr.strip()}; "
                        f"{INSTALL_POSTGRES}")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def new_postgres_database(server: str) -> Iterator[str]:
    """The URL of a new, empty database on `server`, dropped (with its connections) after."""
    name = f"twinstack_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq_url(server), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a SQLite file in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'twinstack.db'}"
        return
    with new_postgres_database(request.getfixturevalue("postgres_server_url")) as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A URL of a new, empty PostgreSQL database (for what SQLite cannot do)."""
    with new_postgres_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated database, on each backend."""
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()
