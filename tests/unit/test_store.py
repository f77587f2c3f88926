"""The metadata store on a real SQLite file and a real PostgreSQL database: schema, accounts,
ACLs, the one-live-session rule under concurrency, LSS liveness, and crash safety."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from argon2 import PasswordHasher
from sqlalchemy import func, inspect, select, text

from twinstack.store import (
    Base,
    Conflict,
    Database,
    Group,
    Invalid,
    NotFound,
    SessionRecord,
    Share,
    User,
    sqlite_url,
)
from twinstack.store import accounts as acc
from twinstack.store import projects as prj
from twinstack.store.models import utcnow

PASSWORD = "correct horse"




def count(s, model) -> int:
    return s.scalar(select(func.count()).select_from(model))


def make_users(db: Database, *names: str) -> list[User]:
    with db.transaction() as s:
        return [acc.add_user(s, name, PASSWORD) for name in names]


# --- schema ----------------------------------------------------------------------------------

def test_migrate_twice_is_a_noop(db):
    make_users(db, "ada")
    db.migrate()
    with db.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0006"
    with db.transaction() as s:
        assert [u.name for u in acc.list_users(s)] == ["ada"]


def test_services_migrate_at_the_same_moment(database_url):
    """auth and gss both migrate at start-up; racing migrators must not trip over each other."""
    code = "import sys; from twinstack.store import Database; Database(sys.argv[1]).migrate()"
    procs = [subprocess.Popen([sys.executable, "-c", code, database_url], stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outcomes = [(p.wait(60), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in outcomes), outcomes
    db = Database(database_url)
    with db.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0006"
    db.dispose()


def test_schema_matches_models(db):
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        # compare_metadata ignores WHERE clauses: check the index is really partial.
        live = next(i for i in inspect(conn).get_indexes("sessions")
                    if i["name"] == "uq_sessions_live_project")
        assert live["unique"]
        where = live["dialect_options"][f"{conn.dialect.name}_where"]
        assert "starting" in str(where) and "ready" in str(where)


def test_sqlite_file_settings(tmp_path):
    url = sqlite_url(tmp_path / "deep" / "data")
    assert url == f"sqlite:///{tmp_path.resolve()}/deep/data/twinstack.db"
    db = Database(url)
    with db.engine.connect() as conn:
        pragmas = [conn.exec_driver_sql(f"PRAGMA {p}").scalar()
                   for p in ("journal_mode", "foreign_keys", "busy_timeout")]
    assert pragmas == ["wal", 1, 10000]
    assert (tmp_path / "deep" / "data" / "twinstack.db").exists()
    db.dispose()


# --- users -----------------------------------------------------------------------------------

def test_users(db):
    with db.transaction() as s:
        ada = acc.add_user(s, "ada", PASSWORD, admin=True)
        assert ada.admin and not ada.disabled
        with pytest.raises(Conflict, match="user 'ada' already exists"):
            acc.add_user(s, "ada", PASSWORD)
        for bad in ("", "a b", "x" * 65, "ada\n", "é"):
            with pytest.raises(Invalid, match="not valid"):
                acc.add_user(s, bad, PASSWORD)
        with pytest.raises(Invalid, match="at least 8"):
            acc.add_user(s, "bob", "short")
        acc.add_user(s, "bob", PASSWORD)
    with db.transaction() as s:
        assert [u.name for u in acc.list_users(s)] == ["ada", "bob"]
        stored = acc.get_user(s, "ada")
        assert stored.password_hash.startswith("$argon2id$") and PASSWORD not in \
            stored.password_hash
        assert stored.created_at.tzinfo == UTC
        with pytest.raises(NotFound, match="no user named 'zed'"):
            acc.get_user(s, "zed")
        assert acc.check_password(s, "ada", PASSWORD).name == "ada"
        assert acc.check_password(s, "ada", "wrong password") is None
        assert acc.check_password(s, "zed", PASSWORD) is None
        acc.set_disabled(s, "bob", True)
        assert acc.check_password(s, "bob", PASSWORD) is None
        acc.set_disabled(s, "bob", False)
        acc.set_password(s, "bob", "another secret")
        assert acc.check_password(s, "bob", PASSWORD) is None
        assert acc.check_password(s, "bob", "another secret") is not None


def test_outdated_hash_is_replaced_on_login(db):
    make_users(db, "ada")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with db.transaction() as s:
        acc.get_user(s, "ada").password_hash = weak
    with db.transaction() as s:
        assert acc.check_password(s, "ada", PASSWORD) is not None
    with db.transaction() as s:
        renewed = acc.get_user(s, "ada").password_hash
    assert renewed != weak and not PasswordHasher().check_needs_rehash(renewed)


# --- tokens ----------------------------------------------------------------------------------

def test_tokens(db, monkeypatch: pytest.MonkeyPatch):
    ada, bob = make_users(db, "ada", "bob")
    with db.transaction() as s:
        good = acc.issue_token(s, ada, timedelta(hours=1))
        expired = acc.issue_token(s, ada, timedelta(seconds=-1))
        brief = acc.issue_token(s, ada, timedelta(minutes=1))
        revoked = acc.issue_token(s, ada, timedelta(hours=1))
        bobs = [acc.issue_token(s, bob, timedelta(hours=1)) for _ in range(2)]
    with db.transaction() as s:
        assert acc.resolve_token(s, good).name == "ada"
        assert acc.resolve_token(s, brief).name == "ada"
        assert acc.resolve_token(s, expired) is None
        assert acc.resolve_token(s, "not-a-token") is None
        assert acc.revoke_token(s, revoked) and not acc.revoke_token(s, revoked)
        assert acc.resolve_token(s, revoked) is None
    # Two minutes later (the store's clock moved, not the test's: no sleep, no race with a
    # slow machine between issuing `brief` and checking it above).
    later = utcnow() + timedelta(minutes=2)
    monkeypatch.setattr(acc, "utcnow", lambda: later)
    with db.transaction() as s:
        assert acc.resolve_token(s, brief) is None
        assert acc.resolve_token(s, good).name == "ada"
        acc.set_disabled(s, "ada", True)
        assert acc.resolve_token(s, good) is None
        acc.set_disabled(s, "ada", False)
        assert acc.resolve_token(s, good).name == "ada"
        assert acc.revoke_user_tokens(s, bob.id) == 2
        assert all(acc.resolve_token(s, t) is None for t in bobs)
    secrets = [good, expired, brief, revoked, *bobs]
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM tokens")).all()
    cells = " ".join(str(v) for row in rows for v in row)
    assert len(rows) == 6 and not any(secret in cells for secret in secrets)
    assert {row.token_hash for row in rows} == \
        {hashlib.sha256(t.encode()).hexdigest() for t in secrets}


# --- groups and project ACLs -----------------------------------------------------------------

def test_groups(db):
    make_users(db, "ada", "bob", "cy")
    with db.transaction() as s:
        team = acc.add_group(s, "team")
        with pytest.raises(Conflict, match="group 'team' already exists"):
            acc.add_group(s, "team")
        acc.add_member(s, team, acc.get_user(s, "cy"))
        acc.add_member(s, "team", "ada")
        acc.add_member(s, "team", "ada")  # twice is fine
        acc.add_group(s, "empty")
        with pytest.raises(NotFound, match="no group named 'nope'"):
            acc.add_member(s, "nope", "ada")
    with db.transaction() as s:
        assert [(g.name, m) for g, m in acc.list_groups(s)] == \
            [("empty", []), ("team", ["ada", "cy"])]
        assert acc.group_ids_of(s, acc.get_user(s, "ada").id) == {team.id}
        assert acc.remove_member(s, "team", "ada") and not acc.remove_member(s, "team", "ada")
        assert acc.group_ids_of(s, acc.get_user(s, "ada").id) == set()


def test_roles(db):
    ada, bob, cy, root = make_users(db, "ada", "bob", "cy", "root")
    with db.transaction() as s:
        acc.get_user(s, "root").admin = True
        acc.add_group(s, "team")
        acc.add_member(s, "team", "bob")
        acc.add_member(s, "team", "cy")
        p = prj.create_project(s, ada, "wing", "3D simulation")
        with pytest.raises(Conflict, match="already has a project named 'wing'"):
            prj.create_project(s, ada, "wing", "3D simulation")
        for bad in ("", "   ", "x" * 129):
            with pytest.raises(Invalid):
                prj.create_project(s, ada, bad, "3D simulation")
        assert prj.create_project(s, bob, "wing", "3D simulation").owner_id == bob.id
    with db.transaction() as s:
        assert prj.role_of(s, ada, p.id) == "owner"
        assert prj.role_of(s, bob, p.id) is None
        prj.share_project(s, p.id, user="bob", role="viewer")
        assert prj.role_of(s, bob, p.id) == "viewer"
        prj.share_project(s, p.id, group="team", role="editor")
        assert (prj.role_of(s, bob, p.id), prj.role_of(s, cy, p.id)) == ("editor", "editor")
        prj.share_project(s, p.id, user="bob", role="owner")  # updates the existing share
        assert prj.role_of(s, bob, p.id) == "owner"
        assert prj.role_of(s, root, p.id) is None  # admins get no implicit role
        assert prj.role_of(s, ada, "no-such-project") is None
        with pytest.raises(Invalid, match="not one of viewer, editor, owner"):
            prj.share_project(s, p.id, user="cy", role="boss")
        with pytest.raises(Invalid, match="exactly one"):
            prj.share_project(s, p.id, user="cy", group="team", role="viewer")
        prj.share_project(s, p.id, user="zed", role="viewer")  # no such user: an invitation
        with pytest.raises(NotFound, match="no project"):
            prj.share_project(s, "nope", user="cy", role="viewer")
        assert prj.shares_of(s, p.id) == [
            {"user": "bob", "group": None, "role": "owner"},
            {"user": None, "group": "team", "role": "editor"},
            {"user": "zed", "group": None, "role": "viewer"}]
        assert prj.unshare_project(s, p.id, group="team")
        assert not prj.unshare_project(s, p.id, group="team")
        assert prj.role_of(s, cy, p.id) is None
    with db.transaction() as s:
        assert count(s, Share) == 1
        zed = acc.add_user(s, "zed", "a long password")  # the invitation becomes a share
        assert prj.role_of(s, zed, p.id) == "viewer"
        assert prj.shares_of(s, p.id)[-1] == {"user": "zed", "group": None, "role": "viewer"}
        prj.share_project(s, p.id, group="later", role="editor")
        acc.add_group(s, "later")
        acc.add_member(s, "later", "cy")
        assert prj.role_of(s, cy, p.id) == "editor"
        assert prj.unshare_project(s, p.id, group="later")


def test_visible_projects_and_rename(db):
    ada, bob, cy = make_users(db, "ada", "bob", "cy")
    with db.transaction() as s:
        acc.add_group(s, "team")
        acc.add_member(s, "team", "bob")
        wing = prj.create_project(s, ada, "wing", "3D simulation")
        prj.create_project(s, ada, "secret", "3D simulation")
        rocks = prj.create_project(s, cy, "rocks", "geochemistry")
        prj.share_project(s, wing.id, group="team", role="viewer")
        prj.share_project(s, wing.id, user="bob", role="editor")
        prj.share_project(s, rocks.id, group="team", role="viewer")
        own = prj.create_project(s, bob, "mine", "3D simulation")
    with db.transaction() as s:
        assert [(p.name, r) for p, r in prj.visible_projects(s, bob)] == \
            [("mine", "owner"), ("rocks", "viewer"), ("wing", "editor")]
        assert [(p.name, r) for p, r in prj.visible_projects(s, ada)] == \
            [("secret", "owner"), ("wing", "owner")]
        prj.create_session(s, wing.id, ada, None)
        prj.create_session(s, own.id, bob, None)
        secret = next(p for p, _ in prj.visible_projects(s, ada) if p.name == "secret")
        prj.create_session(s, secret.id, ada, None)
        assert {r.project_id for r in prj.sessions_visible_to(s, bob)} == {wing.id, own.id}
        assert prj.rename_project(s, wing.id, "  plane ").name == "plane"
        with pytest.raises(Conflict, match="already has a project named 'secret'"):
            prj.rename_project(s, wing.id, "secret")
        assert prj.get_project(s, wing.id).name == "plane"  # the transaction survived
    with db.transaction() as s:
        assert prj.get_project(s, wing.id).name == "plane"
        with pytest.raises(NotFound, match="no project with id 'nope'"):
            prj.get_project(s, "nope")


def test_delete_project_cascades(db):
    ada, _ = make_users(db, "ada", "bob")
    with db.transaction() as s:
        p = prj.create_project(s, ada, "wing", "3D simulation")
        keep = prj.create_project(s, ada, "keep", "3D simulation")
        prj.share_project(s, p.id, user="bob", role="viewer")
        prj.create_session(s, p.id, ada, None)
        prj.create_session(s, keep.id, ada, None)
    with db.transaction() as s:
        prj.delete_project(s, p.id)
    with db.transaction() as s:
        assert (count(s, Share), count(s, SessionRecord)) == (0, 1)
        with pytest.raises(NotFound):
            prj.delete_project(s, p.id)


# --- sessions --------------------------------------------------------------------------------

def test_one_live_session_per_project(db):
    (ada,) = make_users(db, "ada")
    with db.transaction() as s:
        p = prj.create_project(s, ada, "wing", "3D simulation")
    with db.transaction() as s:
        first = prj.create_session(s, p.id, ada, None)
        acc.add_user(s, "bob", PASSWORD)
        with pytest.raises(Conflict, match="already has a live session"):
            prj.create_session(s, p.id, ada, None)
        assert prj.live_session(s, p.id).id == first.id
    with db.transaction() as s:  # the writes around the refused insert were committed
        assert acc.get_user(s, "bob") and count(s, SessionRecord) == 1
        record = prj.set_session_state(s, first.id, "ready", services={"model": {"port": 1}})
        assert (record.state, record.services, record.closed_at) == \
            ("ready", {"model": {"port": 1}}, None)
        prj.set_session_state(s, first.id, "closed", reason="closed by ada")
    with db.transaction() as s:
        closed = prj.get_session(s, first.id)
        assert closed.state == "closed" and closed.closed_at.tzinfo == UTC
        assert closed.updated_at >= closed.created_at and closed.reason == "closed by ada"
        assert prj.live_session(s, p.id) is None
        second = prj.create_session(s, p.id, ada.id, None)
        assert second.id != first.id and second.state == "starting" and second.services == {}
        with pytest.raises(Conflict, match="already closed"):
            prj.set_session_state(s, first.id, "ready")
        with pytest.raises(Invalid, match="not one of"):
            prj.set_session_state(s, second.id, "sleeping")
        with pytest.raises(NotFound, match="no session"):
            prj.get_session(s, "nope")
        with pytest.raises(NotFound, match="no LSS named 'ghost'"):
            prj.create_session(s, p.id, ada, "ghost")


def test_concurrent_session_opens_agree(db):
    """Two writers open the same project at once: one creates, the other joins its session."""
    (ada,) = make_users(db, "ada")
    with db.transaction() as s:
        p = prj.create_project(s, ada, "wing", "3D simulation")
    barrier, results, errors = threading.Barrier(2), [], []

    def open_session() -> None:
        try:
            barrier.wait()
            with db.transaction() as s:
                try:
                    record, outcome = prj.create_session(s, p.id, ada, None), "created"
                    time.sleep(0.3)  # hold the transaction open so the other writer overlaps
                except Conflict:
                    record, outcome = prj.live_session(s, p.id), "joined"
                results.append((outcome, record.id))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_session) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sorted(o for o, _ in results) == ["created", "joined"]
    assert len({rid for _, rid in results}) == 1


# --- LSS nodes -------------------------------------------------------------------------------

def test_lss_heartbeats_and_loss(db):
    ada, bob = make_users(db, "ada", "bob")
    with db.transaction() as s:
        a = prj.upsert_lss(s, "lss-a", 4, {"cpu": 0.5})
        prj.upsert_lss(s, "lss-b", 2, {"cpu": 0.1})
        p1, p2, p3 = (prj.create_project(s, ada, n, "3D simulation") for n in ("p1", "p2", "p3"))
        s1 = prj.create_session(s, p1.id, ada, "lss-a")
        s2 = prj.create_session(s, p2.id, ada, "lss-a")
        done = prj.create_session(s, p3.id, ada, "lss-a")
        prj.set_session_state(s, done.id, "closed")
        s3 = prj.create_session(s, p3.id, bob, "lss-b")
        with pytest.raises(Invalid):
            prj.upsert_lss(s, "lss-c", -1, {})
        with pytest.raises(Invalid, match="must be > 0 MB"):
            prj.upsert_lss(s, "lss-c", 1, {}, memory_mb=0)
        with pytest.raises(NotFound, match="must connect"):
            prj.record_heartbeat(s, "lss-x", {})
    assert a.connected_at.tzinfo == UTC
    with db.transaction() as s:
        beat = prj.record_heartbeat(s, "lss-b", {"cpu": 0.9})
        assert beat.load == {"cpu": 0.9} and beat.last_heartbeat > beat.connected_at
        assert prj.live_session_types(s) == {"lss-a": {"3D simulation": 2},
                                             "lss-b": {"3D simulation": 1}}
        assert [r.id for r in prj.sessions_of_lss(s, "lss-a")] == [s1.id, s2.id]
        prj.get_session(s, s1.id)  # loaded here: the bulk update below must refresh it
        s.get(type(a), "lss-a").last_heartbeat = utcnow() - timedelta(minutes=5)
        assert prj.mark_silent_lss_lost(s, utcnow() - timedelta(minutes=1)) == \
            {"lss-a": [s1.id, s2.id]}
        assert prj.mark_silent_lss_lost(s, utcnow() - timedelta(minutes=1)) == {}
        assert prj.get_session(s, s1.id).state == "lost"
    with db.transaction() as s:
        for sid in (s1.id, s2.id):
            lost = prj.get_session(s, sid)
            assert (lost.state, lost.reason) == ("lost", "LSS lss-a stopped sending heartbeats")
            assert lost.closed_at is not None
        assert prj.get_session(s, done.id).reason is None
        assert prj.get_session(s, s3.id).state == "starting"
        assert [n.id for n in prj.all_lss(s) if n.state == "connected"] == ["lss-b"]
        assert prj.live_session_types(s) == {"lss-a": {}, "lss-b": {"3D simulation": 1}}
        assert prj.create_session(s, p1.id, ada, "lss-b").state == "starting"
        assert prj.upsert_lss(s, "lss-a", 4, {}).state == "connected"


# --- crash safety ----------------------------------------------------------------------------

def test_exception_inside_transaction_writes_nothing(db):
    (ada,) = make_users(db, "ada")
    with pytest.raises(RuntimeError), db.transaction() as s:
        acc.add_user(s, "ghost", PASSWORD)
        prj.create_project(s, ada, "wing", "3D simulation")
        acc.issue_token(s, ada, timedelta(hours=1))
        raise RuntimeError("crash")
    with db.transaction() as s:
        assert [u.name for u in acc.list_users(s)] == ["ada"]
        assert prj.visible_projects(s, ada) == []
        assert s.scalar(text("SELECT COUNT(*) FROM tokens")) == 0


CHILD = """
import sys, time
from sqlalchemy import insert
from twinstack.store import Database, Group
db = Database(sys.argv[1])
with db.transaction() as s:
    s.execute(insert(Group), [{"name": f"doomed-{i:06d}-" + "x" * 40} for i in range(30000)])
    print("inside", flush=True)
    time.sleep(60)
"""


def test_sigkill_mid_write_leaves_sqlite_consistent(tmp_path: Path):
    url = sqlite_url(tmp_path)
    db = Database(url)
    db.migrate()
    with db.transaction() as s:
        acc.add_group(s, "kept")
    db.dispose()
    child = subprocess.Popen([sys.executable, "-c", CHILD, url], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line == "inside\n", child.stderr.read()
        # The uncommitted rows outgrew the page cache: the kill hits a half-written WAL.
        assert (tmp_path / "twinstack.db-wal").stat().st_size > 0
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    db = Database(url)
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    with db.transaction() as s:
        assert [g.name for g, _ in acc.list_groups(s)] == ["kept"]
        acc.add_group(s, "after")
    with db.transaction() as s:
        assert s.scalars(select(Group.name).order_by(Group.name)).all() == ["after", "kept"]
    db.dispose()
