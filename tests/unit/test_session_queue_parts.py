"""The parts of queued session starts: the default LSS capacity, the ETA estimate, and the
queue's store operations (on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from twinstack.config import Settings
from twinstack.services.gss import queue_event, seconds_per_place
from twinstack.sessiontypes import (
    ACTION,
    SERVICE_NEEDS,
    SESSION_TYPE_NEEDS,
    SESSION_TYPES,
    Needs,
    capacity_for,
    cgroup_cpus,
    cgroup_memory_mb,
    default_capacity,
    machine_resources,
)
from twinstack.store import Conflict, Database, Invalid
from twinstack.store import accounts as acc
from twinstack.store import projects as prj
from twinstack.store.db import MIGRATIONS
from twinstack.store.models import SessionRecord, UtcDateTime, utcnow

SMALL = Needs(cpus=0.25, memory_mb=768)
BIG = Needs(cpus=2.0, memory_mb=4096)

# --- default capacity ----------------------------------------------------------------------


@pytest.mark.parametrize(("cores", "memory_mb", "types", "expected"), [
    (16, 128 * 1024, [SMALL], 64),        # cores decide: 16 / 0.25
    (64, 16 * 1024, [SMALL], 19),         # memory decides: (16384 - 1638.4) / 768
    (2, 23 * 1024, [SMALL], 8),           # a small machine
    (2, 4 * 1024, [SMALL], 4),            # ... with little memory: (4096 - 512) / 768
    (16, 128 * 1024, [SMALL, BIG], 8),    # sized for the most demanding type: 16 / 2
    (0.1, 256, [SMALL], 1),               # never less than one session
    (2.5, 64 * 1024, [SMALL], 10),        # a fractional cgroup quota of cores
])
def test_capacity_is_the_scarcer_of_cores_and_memory(cores, memory_mb, types, expected):
    assert capacity_for(cores, memory_mb, types) == expected


def test_capacity_needs_session_types():
    with pytest.raises(ValueError, match="no session types"):
        capacity_for(4, 4096, [])


def test_a_session_type_needs_what_its_services_declare_and_one_actions_memory():
    assert set(SERVICE_NEEDS) == {name for services in SESSION_TYPES.values()
                                  for name in services}
    assert all(n.cpus > 0 and n.memory_mb > 0 for n in SERVICE_NEEDS.values())
    assert set(SESSION_TYPE_NEEDS) == set(SESSION_TYPES)
    geochemistry = SESSION_TYPE_NEEDS["geochemistry"]
    assert geochemistry.memory_mb == sum(SERVICE_NEEDS[name].memory_mb for name in
                                         ("model", "phreeqc", "kriging", "visualization")) \
        + ACTION.memory_mb
    assert geochemistry.cpus == pytest.approx(sum(
        SERVICE_NEEDS[name].cpus for name in ("model", "phreeqc", "kriging", "visualization")))


def test_cgroup_limits_are_read_and_tighten_the_machine(tmp_path: Path):
    assert cgroup_cpus("max 100000\n") is None
    assert cgroup_cpus("150000 100000\n") == 1.5
    assert cgroup_memory_mb("max\n") is None
    assert cgroup_memory_mb(str(512 * 2**20)) == 512
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree:         1000 kB\n")
    cores, memory = machine_resources(cgroup=tmp_path / "none", meminfo=meminfo)
    assert cores >= 1 and memory == 16000
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    (tmp_path / "memory.max").write_text(f"{1024 * 2**20}\n")
    assert machine_resources(cgroup=tmp_path, meminfo=meminfo) == (0.5, 1024)


def test_the_capacity_setting_defaults_to_the_machine():
    assert Settings().capacity == default_capacity() >= 1
    assert Settings(capacity="auto").capacity == default_capacity()
    assert Settings(capacity=3).capacity == 3


# --- ETA -----------------------------------------------------------------------------------

def test_eta_is_place_times_mean_duration_over_capacity():
    per_place = seconds_per_place(8, [40.0, 80.0])  # a slot frees every 60 / 8 s
    assert per_place == 7.5
    assert queue_event("s", 3, per_place) == {"type": "queued", "session": "s",
                                              "state": "queued", "position": 3,
                                              "eta_seconds": 22}
    assert seconds_per_place(0, [40.0]) is None  # no LSS connected
    assert seconds_per_place(8, []) is None  # nothing ended yet: unknown
    assert queue_event("s", 1, None)["eta_seconds"] is None


# --- the queue in the store ----------------------------------------------------------------



def test_queue_is_first_come_first_served_and_one_per_project(db):
    with db.transaction() as s:
        ada = acc.add_user(s, "ada", "correct horse")
        prj.upsert_lss(s, "lss-a", 1, {})
        projects = [prj.create_project(s, ada, f"p{i}", "data analysis") for i in range(3)]
    ids = []
    for project in projects:  # one transaction each, as gss does
        with db.transaction() as s:
            ids.append(prj.create_session(s, project.id, ada, None, state="queued").id)
    with db.transaction() as s:
        with pytest.raises(Conflict, match="already has a live session"):
            prj.create_session(s, projects[0].id, ada, None, state="queued")
        with pytest.raises(Invalid):
            prj.create_session(s, projects[0].id, ada, "lss-a", state="queued")
        assert prj.live_session(s, projects[0].id).id == ids[0]  # joined, not a second one
        assert [(r.id, t) for r, t in prj.queued_sessions(s)] == \
            [(sid, "data analysis") for sid in ids]
        assert prj.live_session_types(s) == {"lss-a": {}}  # waiting holds no capacity

        assert prj.place_session(s, ids[0], "lss-a")
        assert not prj.place_session(s, ids[0], "lss-a")  # placed once only
        placed = prj.get_session(s, ids[0])
        assert (placed.state, placed.lss_id) == ("starting", "lss-a")
        assert placed.placed_at is not None
        assert prj.live_session_types(s) == {"lss-a": {"data analysis": 1}}

        assert prj.requeue_session(s, ids[0], "lss-a")  # its LSS went away before the start
        assert [r.id for r, _ in prj.queued_sessions(s)] == ids  # at its old place

        assert prj.end_queued_session(s, ids[1], "closed", "closed by ada")
        assert not prj.place_session(s, ids[1], "lss-a")  # a closed one is never placed
        assert not prj.end_queued_session(s, ids[1], "failed", "too late")
        with pytest.raises(Invalid):
            prj.end_queued_session(s, ids[2], "ready", "no")
        assert [r.id for r, _ in prj.queued_sessions(s)] == [ids[0], ids[2]]
        assert prj.get_session(s, ids[1]).closed_at is not None


def test_recent_durations_count_from_placement_to_the_end(db):
    with db.transaction() as s:
        ada = acc.add_user(s, "ada", "correct horse")
        prj.upsert_lss(s, "lss-a", 4, {})
        done, closing, running, waited = (
            prj.create_session(s, prj.create_project(s, ada, f"p{i}", "data analysis").id,
                               ada, "lss-a") for i in range(4))
        prj.set_session_state(s, waited.id, "closed")
    with db.transaction() as s:
        now = utcnow()
        for record, held in ((done, 30), (closing, 10), (running, 99), (waited, 5)):
            row = s.get_one(SessionRecord, record.id)
            row.placed_at = now - timedelta(seconds=held)
        s.get_one(SessionRecord, waited.id).placed_at = None  # ended while queued: no hold
        prj.set_session_state(s, done.id, "closed")
        prj.set_session_state(s, closing.id, "closing")  # its slot is free already
    with db.transaction() as s:
        held = sorted(prj.recent_session_seconds(s))
        assert len(held) == 2
        assert 10 <= held[0] < 20 and 30 <= held[1] < 40


def _migrate(db: Database, step: Callable[..., None], revision: str) -> None:
    """Run alembic's `command.upgrade` or `command.downgrade` to `revision`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        step(config, revision)


def test_migration_0003_keeps_sessions_and_undoes_cleanly(database_url):
    """Sessions from before 0003 count as placed when they were created; a downgrade ends the
    queued ones (there is no state for them before 0003)."""
    db = Database(database_url)
    try:
        _migrate(db, command.upgrade, "0002")
        now = utcnow()
        when = lambda name: sa.column(name, UtcDateTime())  # noqa: E731
        with db.engine.begin() as c:
            c.execute(sa.table("users", sa.column("id"), sa.column("name"),
                               sa.column("password_hash"), sa.column("admin"),
                               sa.column("disabled"), when("created_at")).insert().values(
                id=1, name="ada", password_hash="x", admin=False, disabled=False,
                created_at=now))
            c.execute(sa.table("projects", sa.column("id"), sa.column("name"),
                               sa.column("session_type"), sa.column("owner_id"),
                               when("created_at")).insert(),
                      [{"id": f"p{i}", "name": f"p{i}", "session_type": "data analysis",
                        "owner_id": 1, "created_at": now} for i in range(2)])
            c.execute(sa.table("lss_nodes", sa.column("id"), sa.column("state"),
                               sa.column("capacity"), sa.column("load", sa.JSON),
                               when("last_heartbeat"), when("connected_at")).insert().values(
                id="lss-a", state="connected", capacity=1, load={}, last_heartbeat=now,
                connected_at=now))
            c.execute(sa.table("sessions", sa.column("id"), sa.column("project_id"),
                               sa.column("opened_by"), sa.column("lss_id"), sa.column("state"),
                               sa.column("services", sa.JSON), when("created_at"),
                               when("updated_at")).insert().values(
                id="old", project_id="p0", opened_by=1, lss_id="lss-a", state="ready",
                services={}, created_at=now, updated_at=now))
        _migrate(db, command.upgrade, "head")
        with db.transaction() as s:
            old = prj.get_session(s, "old")
            assert (old.state, old.placed_at) == ("ready", now)
            prj.create_session(s, "p1", 1, None, state="queued")
        _migrate(db, command.downgrade, "0002")
        with db.engine.connect() as c:
            states = dict(c.execute(sa.text("SELECT project_id, state FROM sessions")).all())
        assert states == {"p0": "ready", "p1": "failed"}
        _migrate(db, command.upgrade, "head")
    finally:
        db.dispose()
