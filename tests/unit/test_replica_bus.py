"""The bus between gss replicas, on a real PostgreSQL server: every replica hears every
message in order, a message over NOTIFY's 8000 bytes arrives whole, a replica whose database
connection drops is told to read again, and the placement lock admits one replica at a time."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from twinstack.store.bus import LocalBus, PostgresBus, libpq_url


class Replica:
    """What a gss replica does with the bus: keep what it hears."""

    def __init__(self, url: str) -> None:
        self.heard: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.resyncs = 0
        self.resynced_once = asyncio.Event()
        self.bus = PostgresBus(url, self.hear, self.resynced)

    def hear(self, message: dict[str, Any]) -> None:
        self.heard.append(message)
        self.arrived.set()

    def resynced(self) -> None:
        self.resyncs += 1
        self.resynced_once.set()

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        async with asyncio.timeout(30):
            while len(self.heard) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.heard


def test_every_replica_hears_every_message_in_order(postgres_url: str) -> None:
    long_text = "Grüße, Ω " * 3000  # ~30 kB as UTF-8: five NOTIFY parts

    async def scenario() -> None:
        one, two = Replica(postgres_url), Replica(postgres_url)
        await one.bus.start(30)
        await two.bus.start(30)
        try:
            sent = [{"topic": "session", "n": n} for n in range(50)]
            sent.insert(25, {"topic": "tunnel", "text": long_text})
            for message in sent[:30]:
                one.bus.publish(message)
            for message in sent[30:]:
                one.bus.publish(message)
            assert await one.wait_for(len(sent)) == sent  # the sender hears its own too
            assert await two.wait_for(len(sent)) == sent
        finally:
            await one.bus.close()
            await two.bus.close()
    asyncio.run(scenario())


def test_a_replica_that_lost_the_database_is_told_to_read_again(postgres_url: str) -> None:
    async def scenario() -> None:
        replica = Replica(postgres_url)
        await replica.bus.start(30)
        try:
            with psycopg.connect(libpq_url(postgres_url), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                              "datname = current_database() AND pid <> pg_backend_pid()")
            async with asyncio.timeout(30):  # what was sent meanwhile may be lost: it is told
                await replica.resynced_once.wait()
            replica.bus.publish({"topic": "queue"})  # the sender reconnects too
            assert await replica.wait_for(1) == [{"topic": "queue"}]
            assert replica.resyncs == 1
        finally:
            await replica.bus.close()
    asyncio.run(scenario())


def test_one_replica_at_a_time_holds_the_placement_lock(postgres_url: str) -> None:
    async def scenario() -> None:
        one, two = Replica(postgres_url), Replica(postgres_url)
        inside: list[str] = []
        overlaps: list[list[str]] = []

        async def place(replica: Replica, name: str) -> None:
            for _ in range(5):
                async with replica.bus.exclusive(42):
                    inside.append(name)
                    if len(inside) > 1:
                        overlaps.append(list(inside))
                    await asyncio.sleep(0.01)
                    inside.remove(name)
        try:
            await asyncio.gather(place(one, "one"), place(two, "two"))
        finally:
            await one.bus.close()
            await two.bus.close()
        assert overlaps == []
    asyncio.run(scenario())


def test_one_gss_on_sqlite_hears_its_messages_at_once() -> None:
    heard: list[dict[str, Any]] = []
    bus = LocalBus(heard.append)
    bus.publish({"topic": "queue"})
    assert heard == [{"topic": "queue"}] and not bus.shared
