"""The logger service: collects log records from every service, answers queries, follows live.

Records are kept in a bounded in-memory window for fast queries and appended to an on-disk
JSON-lines log (`DATA_DIR/logs.jsonl`) so nothing is lost on restart; queries reaching back
past the window read the disk log. A logger that cannot persist what it accepted stops with
INTERNAL_ERROR rather than silently losing records: its senders keep their batches and retry.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from twinstack.exitcodes import ExitCode, FatalError
from twinstack.logs import LEVELS, record_to_dict
from twinstack.wire.actions import Call, action
from twinstack.wire.errors import ActionError
from twinstack.wire.runtime import Ports, ServiceBase

log = logging.getLogger(__name__)

WINDOW = 50_000
FOLLOW_QUEUE = 1_000
READERS = ("admin", "gss", "lss", "relay")  # who may read; every service may write


Level = Literal["debug", "info", "warning", "error", "critical"]


class LogRecord(BaseModel):
    model_config = {"extra": "allow"}

    ts: float
    level: Level
    service: str
    msg: str
    session: str | None = None
    request: str | None = None


class AppendParams(BaseModel):
    records: list[LogRecord] = Field(max_length=5_000)


class LogFilter(BaseModel):
    model_config = {"extra": "forbid"}

    service: str | None = None
    session: str | None = None
    level: Level = Field("debug", description="lowest level to return")
    since: float | None = Field(None, description="unix time, inclusive")
    until: float | None = Field(None, description="unix time, exclusive")

    def matches(self, rec: dict[str, Any]) -> bool:
        return ((self.service is None or rec.get("service") == self.service)
                and (self.session is None or rec.get("session") == self.session)
                and LEVELS.get(rec.get("level", ""), 0) >= LEVELS[self.level]
                and (self.since is None or rec["ts"] >= self.since)
                and (self.until is None or rec["ts"] < self.until))


class QueryParams(LogFilter):
    limit: int = Field(1_000, ge=1, le=100_000, description="newest records, at most")


class LoggerService(ServiceBase):
    name: ClassVar[str] = "logger"
    ports: ClassVar[Ports] = Ports(internal=7410, health=7411)
    forwards_logs: ClassVar[bool] = False

    async def start(self) -> None:
        self.window: collections.deque[dict[str, Any]] = collections.deque(maxlen=WINDOW)
        self.followers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.path = Path(self.settings.data_dir) / "logs.jsonl"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.window.extend(self._read_disk())
            self.disk = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise FatalError(ExitCode.CONFIG_ERROR,
                             f"cannot use log file {self.path}: {exc.strerror}") from exc
        self.evicted_before = self.window[0]["ts"] if len(self.window) == WINDOW else None
        self.own_records = _OwnRecords(self)
        logging.getLogger().addHandler(self.own_records)

    async def stop(self) -> None:
        logging.getLogger().removeHandler(self.own_records)
        with contextlib.suppress(OSError):
            self.disk.close()

    def _read_disk(self) -> Iterator[dict[str, Any]]:
        """Every record on disk, oldest first; a torn last line from a crash is skipped."""
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                with contextlib.suppress(json.JSONDecodeError):
                    rec = json.loads(line)
                    if isinstance(rec, dict) and "ts" in rec:
                        yield rec

    def _persist(self, records: list[dict[str, Any]]) -> None:
        try:
            self.disk.write("".join(json.dumps(r) + "\n" for r in records))
            self.disk.flush()
        except OSError as exc:
            self.runtime.request_stop(
                ExitCode.INTERNAL_ERROR, f"cannot write log records to {self.path}: {exc}")
            raise ActionError(503, "unavailable", f"log records not stored: {exc}") from exc

    @action()
    async def append(self, call: Call, params: AppendParams) -> dict[str, int]:
        """Store a batch; the sender's certificate, not the record, says which service sent it."""
        assert call.peer is not None
        records = []
        for item in params.records:
            rec = item.model_dump()
            rec["service"] = call.peer.service
            rec["session"] = call.peer.session or rec["session"]
            records.append(rec)
        self.ingest(records)
        return {"stored": len(records)}

    def ingest(self, records: list[dict[str, Any]]) -> None:
        self._persist(records)
        for rec in records:
            if len(self.window) == WINDOW:
                self.evicted_before = self.window[0]["ts"]
            self.window.append(rec)
            for queue in self.followers:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(rec)

    def _source(self, params: QueryParams) -> Iterable[dict[str, Any]]:
        reaches_back = self.evicted_before is not None and (
            params.since is None or params.since < self.evicted_before)
        return self._read_disk() if reaches_back else self.window

    @action(allow=READERS)
    async def query(self, call: Call, params: QueryParams) -> dict[str, Any]:
        """The newest `limit` records matching the filter, oldest first."""
        newest: collections.deque[dict[str, Any]] = collections.deque(maxlen=params.limit)
        newest.extend(rec for rec in self._source(params) if params.matches(rec))
        return {"records": list(newest)}

    @action(allow=READERS)
    async def follow(self, call: Call, params: LogFilter) -> AsyncIterator[dict[str, Any]]:
        """Push each new matching record as it arrives (a slow follower misses records)."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=FOLLOW_QUEUE)
        self.followers.add(queue)
        try:
            while True:
                rec = await queue.get()
                if params.matches(rec):
                    yield rec
        finally:
            self.followers.discard(queue)


class _OwnRecords(logging.Handler):
    """The logger's own records go straight into its store, not over the network."""

    def __init__(self, store: LoggerService) -> None:
        super().__init__()
        self.store = store

    def emit(self, record: logging.LogRecord) -> None:
        # A failed write already stops the service; reporting it here would only recurse.
        with contextlib.suppress(Exception):
            self.store.ingest([record_to_dict(record)])
