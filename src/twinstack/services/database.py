"""The platform database as services use it: migrated at start, one transaction per call.

Store errors become action errors here, in one place: NotFound → 404, Conflict → 409,
Invalid → 422, an unreachable database → 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from twinstack.config import Settings
from twinstack.exitcodes import ExitCode, FatalError
from twinstack.store import Conflict, Database, Invalid, NotFound, sqlite_url
from twinstack.wire.errors import ActionError

log = logging.getLogger(__name__)
T = TypeVar("T")


def database_url(settings: Settings) -> str:
    return settings.database_url or sqlite_url(settings.data_dir)


class ServiceDatabase:
    """`migrate=False` for services that use the schema others keep (the model service of each
    session): they only check that the database answers."""

    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        self.url = database_url(settings)
        self.db = Database(self.url)
        self.migrate = migrate

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self.db.migrate if self.migrate else self._ping)
        except OperationalError as exc:
            raise FatalError(ExitCode.DEPENDENCY_UNREACHABLE,
                             f"database {self.db.engine.url!r} unreachable: {exc.orig}") from exc

    def _ping(self) -> None:
        with self.db.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def close(self) -> None:
        self.db.dispose()

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one transaction on a worker thread (SQLAlchemy here is blocking)."""
        def in_transaction() -> T:
            with self.db.transaction() as s:
                return work(s)

        try:
            return await asyncio.to_thread(in_transaction)
        except NotFound as exc:
            raise ActionError(404, "not_found", str(exc)) from exc
        except Conflict as exc:
            raise ActionError(409, "conflict", str(exc)) from exc
        except Invalid as exc:
            raise ActionError(422, "invalid_params", str(exc)) from exc
        except OperationalError as exc:
            log.error("database error: %s", exc.orig)
            raise ActionError(503, "unavailable", "the database is unavailable") from exc
