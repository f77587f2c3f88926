"""Structured logging: one record shape for every service, to stdout and to the logger service.

Records are JSON lines (human-readable with --verbose) carrying the service, session and request
ids. Secrets are masked before a record leaves the process. Forwarding to the logger happens in
batches from a bounded buffer, so a slow or dead logger never blocks or crashes the sender: when
the buffer is full the oldest records are dropped and counted.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}

service_id: contextvars.ContextVar[str] = contextvars.ContextVar("service_id", default="-")
session_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

MASK = "***"
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|authorization|private|credential", re.I)
_SECRET_IN_TEXT = re.compile(
    r"(?i)\b(password|passwd|secret|token|authorization)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")
_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def mask_text(text: str) -> str:
    text = _BEARER.sub(f"Bearer {MASK}", text)
    return _SECRET_IN_TEXT.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)


def mask_value(key: str, value: Any) -> Any:
    """Mask a field whose name says it is secret, and secrets written inside strings."""
    if _SECRET_KEY.search(key):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(key, v) for v in value]
    return value


def record_service(record: logging.LogRecord) -> str:
    """The service a record is from: its own field, else the logging context's."""
    return getattr(record, "service", None) or service_id.get()


def record_to_dict(record: logging.LogRecord) -> dict[str, Any]:
    """The wire and disk form of a record; ids come from the context the record was made in."""
    out: dict[str, Any] = {
        "ts": record.created,
        "level": record.levelname.lower(),
        "service": record_service(record),
        "session": getattr(record, "session", None) or session_id.get(),
        "request": getattr(record, "request", None) or request_id.get(),
        "logger": record.name,
        "msg": mask_text(record.getMessage()),
    }
    if record.exc_info:
        out["exc"] = mask_text(logging.Formatter().formatException(record.exc_info))
    for key, value in record.__dict__.items():
        if key not in _STANDARD_ATTRS and key not in out:
            out[key] = mask_value(key, value)
    return out


def format_human(rec: dict[str, Any]) -> str:
    millis = int(rec["ts"] % 1 * 1000)
    stamp = time.strftime("%H:%M:%S", time.localtime(rec["ts"])) + f".{millis:03d}"
    who = rec["service"] + (f"[{rec['session']}]" if rec.get("session") else "")
    line = f"{stamp} {rec['level'].upper():7} {who}: {rec['msg']}"
    return line + (f"\n{rec['exc']}" if rec.get("exc") else "")


class _Formatter(logging.Formatter):
    def __init__(self, human: bool) -> None:
        super().__init__()
        self.human = human

    def format(self, record: logging.LogRecord) -> str:
        rec = record_to_dict(record)
        return format_human(rec) if self.human else json.dumps(rec, default=str)


class LogForwarder(logging.Handler):
    """Buffers records and ships them in batches through `send`; never blocks the caller."""

    def __init__(self, send: Callable[[list[dict[str, Any]]], Awaitable[None]],
                 capacity: int = 10_000, batch_size: int = 500, interval: float = 0.5,
                 service: str | None = None) -> None:
        """`service`: ship only that service's records (several may share a process)."""
        super().__init__()
        self.send = send
        self.service = service
        self.buffer: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self.batch_size = batch_size
        self.interval = interval
        self.dropped = 0
        self.sent = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.service is not None and record_service(record) != self.service:
                return
            if len(self.buffer) == self.buffer.maxlen:
                self.dropped += 1
            self.buffer.append(record_to_dict(record))
        except Exception:  # a log call must never raise into the service
            self.handleError(record)

    def _batch(self) -> list[dict[str, Any]]:
        return [self.buffer[i] for i in range(min(self.batch_size, len(self.buffer)))]

    def _sent(self, batch: list[dict[str, Any]]) -> None:
        for _ in batch:
            self.buffer.popleft()
        self.sent += len(batch)

    async def run(self) -> None:
        """Ship batches until cancelled; on failure keep the batch and back off (max 5 s)."""
        delay = self.interval
        while True:
            await asyncio.sleep(delay)
            while self.buffer:
                batch = self._batch()
                try:
                    await self.send(batch)
                except Exception:
                    delay = min(delay * 2, 5.0)
                    break
                self._sent(batch)
                delay = self.interval

    async def flush_now(self, timeout: float = 2.0) -> None:
        """Best-effort last shipment on a clean stop, in batches the logger accepts."""
        try:
            async with asyncio.timeout(timeout):
                while self.buffer:
                    batch = self._batch()
                    await self.send(batch)
                    self._sent(batch)
        except Exception:
            pass


def configure(service: str, *, level: str = "info", verbose: bool = False,
              session: str | None = None) -> None:
    """Route every record of this process through one formatter to stdout."""
    service_id.set(service)
    session_id.set(session)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(_Formatter(human=verbose))
    root.addHandler(stdout)
    root.setLevel(LEVELS[level])
    for noisy in ("aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
