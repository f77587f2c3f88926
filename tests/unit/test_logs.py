"""Log records: their shape, masking of secrets, and a forwarder that never blocks its sender."""

from __future__ import annotations

import asyncio
import json
import logging

from twinstack import logs


def make_record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    return logging.getLogger("test").makeRecord("test", logging.INFO, __file__, 1, msg, args,
                                                None, extra=extra)


def test_record_carries_service_session_and_request_ids():
    logs.service_id.set("gss")
    token = logs.request_id.set("r-42")
    try:
        rec = logs.record_to_dict(make_record("opened %s", "project"))
    finally:
        logs.request_id.reset(token)
    assert (rec["service"], rec["request"], rec["msg"], rec["level"]) == \
        ("gss", "r-42", "opened project", "info")
    json.dumps(rec)


def test_secrets_are_masked_in_messages_and_fields():
    rec = logs.record_to_dict(make_record(
        "login password=hunter2 header Authorization: Bearer abc.def-ghi token='t0k'",
        user="ada", api_token="s3cret", params={"password": "pw", "name": "x"}))
    text = json.dumps(rec)
    for secret in ("hunter2", "abc.def-ghi", "t0k", "s3cret", '"pw"'):
        assert secret not in text
    assert rec["user"] == "ada" and rec["params"]["name"] == "x"
    assert rec["api_token"] == logs.MASK and rec["params"]["password"] == logs.MASK


def run_until(forwarder: logs.LogForwarder, done: asyncio.Event) -> None:
    """Run the forwarder until its send sets `done`, then stop it (60 s: a hang guard)."""
    async def scenario() -> None:
        task = asyncio.create_task(forwarder.run())
        try:
            await asyncio.wait_for(done.wait(), timeout=60)
        finally:
            task.cancel()

    asyncio.run(scenario())


def test_forwarder_drops_oldest_and_counts_when_the_logger_is_gone():
    attempts: list[int] = []
    retried = asyncio.Event()

    async def refuse(batch: list[dict]) -> None:
        attempts.append(len(batch))
        if len(attempts) == 2:  # tried again after a failure: the batch was kept
            retried.set()
        raise ConnectionRefusedError("logger down")

    forwarder = logs.LogForwarder(refuse, capacity=5, interval=0.01)
    for i in range(8):
        forwarder.emit(make_record(f"record {i}"))
    assert forwarder.dropped == 3
    assert [r["msg"] for r in forwarder.buffer] == [f"record {i}" for i in range(3, 8)]
    run_until(forwarder, retried)
    assert attempts[:2] == [5, 5] and forwarder.sent == 0
    assert len(forwarder.buffer) == 5  # kept for the next try


def test_last_flush_on_stop_ships_everything_in_accepted_batches():
    shipped: list[list[dict]] = []

    async def accept(batch: list[dict]) -> None:
        shipped.append(batch)

    forwarder = logs.LogForwarder(accept, batch_size=4)
    for i in range(9):
        forwarder.emit(make_record(f"record {i}"))
    asyncio.run(forwarder.flush_now())
    assert [len(b) for b in shipped] == [4, 4, 1] and not forwarder.buffer


def test_forwarder_ships_in_batches():
    shipped: list[list[dict]] = []
    all_shipped = asyncio.Event()

    async def accept(batch: list[dict]) -> None:
        shipped.append(batch)
        if sum(map(len, shipped)) == 10:
            all_shipped.set()

    forwarder = logs.LogForwarder(accept, batch_size=4, interval=0.01)
    for i in range(10):
        forwarder.emit(make_record(f"record {i}"))
    run_until(forwarder, all_shipped)
    assert [len(b) for b in shipped] == [4, 4, 2]
    assert forwarder.sent == 10 and not forwarder.buffer
