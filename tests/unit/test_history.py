"""Project history on a real SQLite file and a real PostgreSQL database: entities and their
versions across states, undo/redo, branches, checkout, labels, graph, diff, refused operations
that leave the head where it was, atomic commits, and storage that does not grow with the
entity count per state."""

from __future__ import annotations

import threading

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, inspect, select

from twinstack.store import Conflict, Database, Invalid, NotFound
from twinstack.store import accounts as acc
from twinstack.store import history as h
from twinstack.store import projects as prj
from twinstack.store.db import MIGRATIONS
from twinstack.store.models import ModelState, StateChange, StateSnapshot


@pytest.fixture
def project(db: Database) -> str:
    with db.transaction() as s:
        user = acc.add_user(s, "ada", "correct horse battery")
        return prj.create_project(s, user, "bracket", "3D simulation").id


def commit(db: Database, project: str, description: str, build) -> tuple[h.State, object]:
    edit = h.Edit()
    made = build(edit)
    with db.transaction() as s:
        return h.commit(s, project, edit, author="ada", description=description), made


def names(db: Database, project: str, state_id: int | None = None) -> dict[str, dict]:
    with db.transaction() as s:
        return {e.name: e.properties for e in h.entities(s, project, state_id)}


def head_id(db: Database, project: str) -> int:
    with db.transaction() as s:
        current = h.head(s, project)
        assert current is not None
        return current.state.id


def test_entities_are_created_updated_and_deleted_across_states(db, project):
    one, box = commit(db, project, "box", lambda e: e.create("geometry", "box1",
                                                             properties={"size": 1}))
    two, sphere = commit(db, project, "sphere", lambda e: e.create(
        "geometry", "sphere2", properties={"r": 2}, blobs={"brep": "ab" * 32}))
    three, _ = commit(db, project, "grow box", lambda e: e.update(box, properties={"size": 3}))
    four, _ = commit(db, project, "drop sphere", lambda e: e.delete(sphere))

    assert names(db, project, one.id) == {"box1": {"size": 1}}
    assert names(db, project, two.id) == {"box1": {"size": 1}, "sphere2": {"r": 2}}
    assert names(db, project, three.id) == {"box1": {"size": 3}, "sphere2": {"r": 2}}
    assert names(db, project) == {"box1": {"size": 3}}
    with db.transaction() as s:
        old = h.entity(s, project, sphere, two.id)
        assert (old.kind, old.blobs) == ("geometry", {"brep": "ab" * 32})
        renamed = h.Edit()
        renamed.update(box, name="block")  # properties carried over from the last version
        h.commit(s, project, renamed, author="ada", description="rename")
        assert h.entity(s, project, box).properties == {"size": 3}
        assert h.entity(s, project, box).version != h.entity(s, project, box, one.id).version
        with pytest.raises(NotFound):
            h.entity(s, project, sphere, four.id)


def test_undo_two_redo_one_then_an_edit_branches_and_the_old_branch_stays(db, project):
    commit(db, project, "a", lambda e: e.create("geometry", "a"))
    b, _ = commit(db, project, "b", lambda e: e.create("geometry", "b"))
    c, _ = commit(db, project, "c", lambda e: e.create("geometry", "c"))
    with db.transaction() as s:
        assert h.undo(s, project).state.description == "b"
        assert h.undo(s, project).state.description == "a"
        again = h.redo(s, project)
        assert (again.state.id, again.can_redo) == (b.id, True)
    assert set(names(db, project)) == {"a", "b"}

    d, _ = commit(db, project, "d", lambda e: e.create("material", "d"))
    assert d.parent_id == b.id
    assert set(names(db, project)) == {"a", "b", "d"}
    with db.transaction() as s:
        assert not h.head(s, project).can_redo  # the edit ended the old redo path
        graph = h.graph(s, project)
        children = [st.id for st in graph.states if st.parent_id == b.id]
        assert sorted(children) == sorted([c.id, d.id])
        assert graph.head_id == graph.tip_id == d.id
        assert h.checkout(s, project, c.id).state.description == "c"
    assert set(names(db, project)) == {"a", "b", "c"}
    with db.transaction() as s:  # undo/redo follow the branch checked out
        h.undo(s, project)
        assert h.redo(s, project).state.id == c.id


def test_nothing_to_undo_or_redo_is_refused_and_the_head_does_not_move(db, project):
    with db.transaction() as s, pytest.raises(Conflict, match="no history"):
        h.undo(s, project)
    first, _ = commit(db, project, "a", lambda e: e.create("geometry", "a"))
    with db.transaction() as s, pytest.raises(Conflict, match="nothing to redo"):
        h.redo(s, project)
    assert head_id(db, project) == first.id
    with db.transaction() as s:
        root = h.undo(s, project)
        assert root.state.description == h.ROOT_DESCRIPTION and not root.can_undo
    with db.transaction() as s, pytest.raises(Conflict, match="nothing to undo"):
        h.undo(s, project)
    assert head_id(db, project) == first.parent_id
    assert names(db, project) == {}


def test_bad_edits_are_refused_before_anything_is_written(db, project):
    first, _ = commit(db, project, "a", lambda e: e.create("geometry", "a"))
    with pytest.raises(Invalid):
        h.Edit().create("spaceship", "x")
    with pytest.raises(Invalid, match="sha256"):
        h.Edit().create("mesh", "x", blobs={"cells": "not a hash"})
    with pytest.raises(Invalid, match="author"), db.transaction() as s:
        edit = h.Edit()
        edit.create("mesh", "x")
        h.commit(s, project, edit, author="", description="no author")
    for build, error in ((lambda e: e.update("0" * 32, name="x"), NotFound),
                         (lambda e: e.delete("0" * 32), NotFound),
                         (lambda e: None, Invalid),
                         (lambda e: e.create("geometry", "x", parent_id="0" * 32), Invalid)):
        with pytest.raises(error):
            commit(db, project, "bad", build)
    with db.transaction() as s:
        assert len(h.graph(s, project).states) == 2
        with pytest.raises(NotFound):
            h.checkout(s, project, first.id + 1000)
    assert head_id(db, project) == first.id


def test_a_failure_inside_the_commit_transaction_leaves_head_and_states(db, project):
    first, box = commit(db, project, "box", lambda e: e.create("geometry", "box"))
    with pytest.raises(RuntimeError), db.transaction() as s:
        edit = h.Edit()
        edit.update(box, properties={"size": 9})
        edit.create("geometry", "sphere")
        h.commit(s, project, edit, author="ada", description="half done")
        raise RuntimeError("crash between the commit's writes and the end of the transaction")
    assert head_id(db, project) == first.id
    assert names(db, project) == {"box": {}}
    with db.transaction() as s:
        assert [st.description for st in h.graph(s, project).states] == [
            h.ROOT_DESCRIPTION, "box"]


def test_entities_sit_in_folders_that_exist(db, project):
    _, (folder, solid) = commit(db, project, "folder", lambda e: (
        e.create("folder", "Geometry"), e.create("geometry", "box")))
    commit(db, project, "file", lambda e: e.update(solid, parent_id=folder))
    with db.transaction() as s:
        assert h.entity(s, project, solid).parent_id == folder
    with pytest.raises(Invalid, match="parent"):
        commit(db, project, "move under a deleted folder", lambda e: (
            e.delete(folder), e.create("geometry", "orphan", parent_id=folder)))
    commit(db, project, "nested", lambda e: e.create(
        "folder", "inner", parent_id=e.create("folder", "outer")))
    assert set(names(db, project)) == {"Geometry", "box", "outer", "inner"}


def test_labels_name_states(db, project):
    first, _ = commit(db, project, "a", lambda e: e.create("geometry", "a"))
    second, _ = commit(db, project, "b", lambda e: e.create("geometry", "b"))
    with db.transaction() as s:
        h.label(s, project, "v1", first.id)
        h.label(s, project, "latest")
    with db.transaction() as s:
        assert h.labelled(s, project, "v1") == first.id
        assert h.head(s, project).state.labels == ("latest",)
        assert {st.id: st.labels for st in h.graph(s, project).states}[first.id] == ("v1",)
    with db.transaction() as s, pytest.raises(Conflict):
        h.label(s, project, "v1", second.id)
    with db.transaction() as s, pytest.raises(NotFound):
        h.labelled(s, project, "v2")


def test_diff_names_added_removed_and_changed_entities(db, project):
    one, (a, b) = commit(db, project, "ab", lambda e: (e.create("geometry", "a"),
                                                       e.create("geometry", "b")))
    commit(db, project, "change a", lambda e: e.update(a, properties={"x": 1}))
    two, c = commit(db, project, "b out c in", lambda e: (e.delete(b),
                                                          e.create("mesh", "c"))[1])
    with db.transaction() as s:
        d = h.diff(s, project, one.id, two.id)
        assert (d.added, d.removed, d.changed) == ([c], [b], [a])
        back = h.diff(s, project, two.id, one.id)
        assert (back.added, back.removed, back.changed) == ([b], [c], [a])


def test_long_histories_resolve_through_checkpoints_and_store_only_changes(db, project):
    """Past several checkpoints every state still resolves to what was written, and a
    one-entity edit writes O(1) rows, plus one snapshot row per CHECKPOINT states."""
    width, steps = 50, 2 * h.CHECKPOINT + 5
    _, ids = commit(db, project, "many", lambda e: [e.create("data", f"e{i}", properties={"v": 0})
                                                    for i in range(width)])
    expected: dict[int, dict[str, int]] = {}
    values = dict.fromkeys(range(width), 0)
    for step in range(1, steps + 1):
        i = step % width
        values[i] = step
        state, _ = commit(db, project, f"set e{i}",
                          lambda e, i=i, step=step: e.update(ids[i], properties={"v": step}))
        expected[state.id] = dict(values)
    for state_id in (*list(expected)[:: h.CHECKPOINT // 3], *list(expected)[-3:]):
        got = names(db, project, state_id)
        assert got == {f"e{i}": {"v": v} for i, v in expected[state_id].items()}
    with db.transaction() as s:
        states = s.scalar(select(func.count()).select_from(ModelState))
        changes = s.scalar(select(func.count()).select_from(StateChange))
        snapshots = s.scalar(select(func.count()).select_from(StateSnapshot))
    assert states == steps + 2
    assert changes == width + steps
    assert snapshots == (states - 1) // h.CHECKPOINT  # the root's is empty, so not stored


def test_concurrent_writers_make_one_chain(db, project):
    """Commits from several connections at once queue at the head: each new state is a child
    of the one before, none is lost and none forks the history."""
    commit(db, project, "start", lambda e: e.create("data", "seed"))
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(5):
                commit(db, project, f"w{n}.{i}", lambda e, n=n, i=i: e.create("data", f"{n}.{i}"))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.transaction() as s:
        states = h.graph(s, project).states
    parents = [st.parent_id for st in states if st.parent_id is not None]
    assert len(states) == 22 and len(set(parents)) == len(parents)
    assert len(names(db, project)) == 21


def test_the_migration_goes_down_and_up_again(db, project):
    commit(db, project, "a", lambda e: e.create("geometry", "a"))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")
    assert "model_states" not in inspect(db.engine).get_table_names()
    db.migrate()
    with db.transaction() as s:
        assert h.head(s, project) is None  # the history went with the tables; projects stayed
