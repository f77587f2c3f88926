"""The database handle: one engine per process, short transactions, Alembic migrations.

Several processes (auth, gss) share one database. On SQLite that works through WAL (readers
never block the writer), a 10 s busy timeout, and `BEGIN IMMEDIATE`: a transaction takes the
write lock up front, so two writers queue instead of failing with SQLITE_BUSY when a read
transaction tries to upgrade. Keep transactions short.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x7757_0001  # PostgreSQL advisory lock key: one migrator at a time


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # isolation_level=None stops the sqlite3 module from issuing its own BEGIN/COMMIT, which
    # would break SAVEPOINTs; _sqlite_begin below starts every transaction instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("busy_timeout=10000", "journal_mode=WAL", "foreign_keys=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """An engine plus a session factory for one database URL (SQLite file or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.drivername == "postgresql":  # psycopg 3 is the driver we ship, not psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.url = parsed
        if parsed.get_backend_name() == "sqlite":
            path = parsed.database or ""
            if path and path != ":memory:" and not path.startswith("file:"):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(parsed)
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = create_engine(parsed, pool_pre_ping=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    def migrate(self) -> None:
        """Bring the schema to the newest revision; a no-op when it is already there.

        Safe to call from every service at start-up, even at the same moment: SQLite serialises
        through BEGIN IMMEDIATE, PostgreSQL through an advisory lock held for the transaction.
        """
        from alembic import command  # here: services that never migrate start lighter
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """An ORM session in one transaction: committed if the block succeeds, else rolled back.

        Objects stay readable after the block (no expiry on commit).
        """
        with self._sessions() as s, s.begin():
            yield s

    def dispose(self) -> None:
        """Close every pooled connection (at shutdown, or before a database is dropped)."""
        self.engine.dispose()
