"""Messages between the replicas of gss: PostgreSQL's LISTEN/NOTIFY, or in-process on SQLite.

A replica holds only sockets (an LSS's control link, a relay's event feeds); whatever one
replica learns that another's sockets must hear (a session's event, a command for an LSS linked
elsewhere, a tunnelled call's answer, a change of access) goes over the bus, and every replica,
the sender too, gets every message in the order they were sent. On SQLite there is one gss, so
the bus only hands each message straight back.

NOTIFY carries at most 8000 bytes, so a longer message goes as numbered parts in one transaction
and is put together again on arrival. A replica whose LISTEN connection drops reconnects with
back-off and is told (`resynced`) so that it can read again what it may have missed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from sqlalchemy import make_url

from twinstack.exitcodes import ExitCode, FatalError

log = logging.getLogger(__name__)

Message = dict[str, Any]
CHANNEL = "twinstack_gss"
PART_CHARS = 7000  # of a message's JSON in one NOTIFY (at most 8000 bytes, with framing)
OUTBOX_LIMIT = 10_000  # messages kept while the database is away; the oldest go first
RECONNECT_MAX = 5.0  # seconds between attempts to reach the database again, at most


class LocalBus:
    """One gss (SQLite): a message is delivered at once, to this process only."""

    shared = False

    def __init__(self, deliver: Callable[[Message], None]) -> None:
        self.deliver = deliver

    async def start(self, timeout: float) -> None:
        pass

    async def close(self) -> None:
        pass

    def tasks(self) -> dict[str, asyncio.Task[Any]]:
        return {}

    def publish(self, message: Message) -> None:
        self.deliver(message)

    @contextlib.asynccontextmanager
    async def exclusive(self, key: int) -> AsyncIterator[None]:
        """One replica at a time: with one replica, nothing to wait for."""
        yield


def libpq_url(database_url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as libpq reads it (no `+driver`)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(
        hide_password=False)


class PostgresBus:
    """Replicas sharing a PostgreSQL database: NOTIFY to send, LISTEN to receive, and
    session-level advisory locks for what one replica at a time must do."""

    shared = True

    def __init__(self, database_url: str, deliver: Callable[[Message], None],
                 resynced: Callable[[], None]) -> None:
        self.conninfo = libpq_url(database_url)
        self.deliver = deliver
        self.resynced = resynced
        self.outbox: collections.deque[Message] = collections.deque()
        self.outbox_filled = asyncio.Event()
        self.parts: dict[str, list[str]] = {}  # a long message's parts so far, by its id
        self.listening = asyncio.Event()
        self._lock_connections: dict[int, Any] = {}  # one per lock: each may wait alone
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    async def start(self, timeout: float) -> None:
        """Listen before the first message can be sent, so a replica hears its own; a
        database that does not let it within `timeout` seconds is a fatal error."""
        self._tasks = {"bus listener": asyncio.create_task(self._listen()),
                       "bus sender": asyncio.create_task(self._send())}
        try:
            await asyncio.wait_for(self.listening.wait(), timeout)
        except TimeoutError as exc:
            await self.close()
            raise FatalError(ExitCode.DEPENDENCY_UNREACHABLE, "cannot LISTEN on the database "
                             f"within {timeout:g} s (see the bus warnings)") from exc

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for connection in self._lock_connections.values():
            await connection.close()

    def tasks(self) -> dict[str, asyncio.Task[Any]]:
        return dict(self._tasks)

    def publish(self, message: Message) -> None:
        if len(self.outbox) >= OUTBOX_LIMIT:
            dropped = self.outbox.popleft()
            log.warning("bus: the database has been away for %d messages; dropping a %s "
                        "message", OUTBOX_LIMIT, dropped.get("topic"))
        self.outbox.append(message)
        self.outbox_filled.set()

    async def _connect(self) -> Any:
        import psycopg  # here: a SQLite platform never loads the PostgreSQL driver

        return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True,
                                                     connect_timeout=5)

    async def _reconnecting(self, what: str, work: Callable[[Any], Any]) -> None:
        """Run `work(connection)` on a fresh connection whenever the last one failed, with
        back-off; only cancellation ends it."""
        delay = 0.1
        while True:
            try:
                async with await self._connect() as connection:
                    delay = 0.1
                    await work(connection)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # psycopg.Error, OSError: the database is away
                log.warning("bus %s: %s; again in %.1f s", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _listen(self) -> None:
        async def receive(connection: Any) -> None:
            await connection.execute(f"LISTEN {CHANNEL}")
            self.parts.clear()
            if self.listening.is_set():
                self.resynced()
            self.listening.set()
            async for notification in connection.notifies():
                self._receive(notification.payload)
        await self._reconnecting("listener", receive)

    def _receive(self, payload: str) -> None:
        """Deliver one message, or keep a part until its message is whole."""
        if payload.startswith("{"):
            message = orjson.loads(payload)
        else:  # "ID INDEX COUNT JSON-PART"
            ident, index, count, part = payload.split(" ", 3)
            parts = self.parts.setdefault(ident, [])
            if int(index) != len(parts):  # a part was missed (a reconnect): drop it all
                self.parts.pop(ident, None)
                return
            parts.append(part)
            if len(parts) < int(count):
                return
            message = orjson.loads("".join(self.parts.pop(ident)))
        try:
            self.deliver(message)
        except Exception:  # one message must not end the listener
            log.exception("bus: delivering a %s message failed", message.get("topic"))

    async def _send(self) -> None:
        async def send(connection: Any) -> None:
            while True:
                await self.outbox_filled.wait()
                while self.outbox:
                    await self._notify(connection, self.outbox[0])
                    self.outbox.popleft()
                self.outbox_filled.clear()
        await self._reconnecting("sender", send)

    @staticmethod
    async def _notify(connection: Any, message: Message) -> None:
        text = json.dumps(message, separators=(",", ":"))  # ASCII: a character is a byte
        if len(text) <= PART_CHARS:
            await connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, text))
            return
        ident = uuid.uuid4().hex
        parts = [text[i:i + PART_CHARS] for i in range(0, len(text), PART_CHARS)]
        async with connection.transaction():  # one commit: its parts arrive together
            for index, part in enumerate(parts):
                await connection.execute("SELECT pg_notify(%s, %s)",
                                         (CHANNEL, f"{ident} {index} {len(parts)} {part}"))

    @contextlib.asynccontextmanager
    async def exclusive(self, key: int) -> AsyncIterator[None]:
        """Hold advisory lock `key` for the block: one replica at a time runs it. A replica
        that dies holding it loses its connection, and with it the lock."""
        connection = self._lock_connections.get(key)
        if connection is None or connection.closed:
            connection = self._lock_connections[key] = await self._connect()
        try:
            await connection.execute("SELECT pg_advisory_lock(%s)", (key,))
        except Exception:
            await connection.close()
            raise
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # a lost connection released it already
                await connection.execute("SELECT pg_advisory_unlock(%s)", (key,))


def open_bus(database_url: str, deliver: Callable[[Message], None],
             resynced: Callable[[], None]) -> LocalBus | PostgresBus:
    """The bus for the platform database at `database_url`."""
    if make_url(database_url).get_backend_name() == "postgresql":
        return PostgresBus(database_url, deliver, resynced)
    return LocalBus(deliver)
