"""A project's model history, versioned like git: entities, immutable versions, states, head.

Scheme (why not a full entity list per state): each state stores only its *change set* against
its parent (entity → new version, or NULL for a deletion), and every `CHECKPOINT`-th state along
a path from the root (depth % CHECKPOINT == 0) also stores a full snapshot. Resolving any state
reads the snapshot of its nearest checkpoint ancestor plus at most CHECKPOINT - 1 change sets,
found with one recursive query; a snapshot is one JSON row (one read and one parse, not one row
per entity). So checkout cost is bounded whatever the history's length, and 1,000 states of
10,000 entities hold about 1000/CHECKPOINT snapshots instead of 1,000.
A one-entity edit writes O(1) rows (plus one O(N) snapshot every CHECKPOINT states). This was
chosen over a two-level bucket tree because an edit writes one row instead of one per bucket,
and the change sets give history and diff for free.

The head of a project is (`state_id`, `tip_id`): undo moves the head to its parent, redo one step
back along the path to the tip; a commit makes a child of the head and moves both there, so an
edit after undo starts a new branch and the old one stays reachable (checkout, graph). Checkout
moves both head and tip to the chosen state.

Functions take an ORM session inside `Database.transaction()` and never commit themselves: a
commit is one metadata transaction (blobs are written before it, by hash), so a crash leaves the
old or the new state. Numerics and services live elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, insert, literal_column, select, update
from sqlalchemy.orm import Session

from twinstack.store.blobs import is_sha256
from twinstack.store.errors import Conflict, Invalid, NotFound, conflict_on_integrity
from twinstack.store.models import (
    ENTITY_KINDS,
    Entity,
    EntityVersion,
    ModelHead,
    ModelLabel,
    ModelState,
    ProjectBlob,
    StateChange,
    StateSnapshot,
    new_id,
)

CHECKPOINT = 32
"""Every state whose depth is a multiple of this keeps a full snapshot. 32 keeps a checkout at
one snapshot plus ≤ 31 change sets while the snapshots cost ~1/32 of a full list per state."""
_CHUNK = 5000  # ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits
ROOT_DESCRIPTION = "empty project"


@dataclass(frozen=True)
class State:
    """A model state as callers see it."""

    id: int
    parent_id: int | None
    author: str
    description: str
    created_at: datetime
    labels: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "parent_id": self.parent_id, "author": self.author,
                "description": self.description, "created_at": self.created_at.isoformat(),
                "labels": list(self.labels)}


@dataclass(frozen=True)
class Head:
    state: State
    tip_id: int

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state.to_json(), "tip": self.tip_id, "can_undo": self.can_undo,
                "can_redo": self.can_redo}

    @property
    def can_undo(self) -> bool:
        return self.state.parent_id is not None

    @property
    def can_redo(self) -> bool:
        return self.tip_id != self.state.id


@dataclass(frozen=True)
class EntityView:
    """One entity as a state holds it."""

    id: str
    kind: str
    version: int
    name: str
    parent_id: str | None
    properties: dict[str, Any]
    blobs: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "version": self.version, "name": self.name,
                "parent": self.parent_id, "properties": self.properties, "blobs": self.blobs}


@dataclass(frozen=True)
class Diff:
    """What changed from state `a` to state `b`, as entity ids."""

    added: list[str]
    removed: list[str]
    changed: list[str]


@dataclass(frozen=True)
class Graph:
    states: list[State]
    head_id: int
    tip_id: int

    def to_json(self) -> dict[str, Any]:
        return {"states": [s.to_json() for s in self.states], "head": self.head_id,
                "tip": self.tip_id}


_KEEP: Any = object()  # "leave as it is" in Edit.update


@dataclass
class _Create:
    entity_id: str
    kind: str
    name: str
    parent_id: str | None
    properties: dict[str, Any]
    blobs: dict[str, str]


@dataclass
class _Update:
    entity_id: str
    fields: dict[str, Any]


@dataclass
class Edit:
    """The changes of one commit, collected before it is written (ids of new entities are
    chosen here so one edit can create a folder and put entities in it)."""

    creates: list[_Create] = field(default_factory=list)
    updates: list[_Update] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)

    def create(self, kind: str, name: str, *, parent_id: str | None = None,
               properties: Mapping[str, Any] | None = None,
               blobs: Mapping[str, str] | None = None, entity_id: str | None = None) -> str:
        """A new entity; its id is new unless the writer chose one (a clash is a Conflict)."""
        if kind not in ENTITY_KINDS:
            raise Invalid(f"unknown entity kind {kind!r}; kinds: {', '.join(ENTITY_KINDS)}")
        entity_id = entity_id or new_id()
        self.creates.append(_Create(entity_id, kind, _name(name), parent_id,
                                    dict(properties or {}), _hashes(blobs or {})))
        return entity_id

    def update(self, entity_id: str, *, name: str = _KEEP, parent_id: str | None = _KEEP,
               properties: Mapping[str, Any] = _KEEP, blobs: Mapping[str, str] = _KEEP) -> None:
        """A new version of an entity; fields not given keep their current value."""
        given: dict[str, Any] = {"name": name, "parent_id": parent_id,
                                 "properties": properties, "blobs": blobs}
        fields = {k: v for k, v in given.items() if v is not _KEEP}
        if "name" in fields:
            fields["name"] = _name(fields["name"])
        if "properties" in fields:
            fields["properties"] = dict(fields["properties"])
        if "blobs" in fields:
            fields["blobs"] = _hashes(fields["blobs"])
        self.updates.append(_Update(entity_id, fields))

    def delete(self, entity_id: str) -> None:
        self.deletes.append(entity_id)


def _hashes(blobs: Mapping[str, str]) -> dict[str, str]:
    """Blob references by role; services pass hashes of blobs they already put, never data."""
    bad = sorted(role for role, digest in blobs.items() if not is_sha256(digest))
    if bad:
        raise Invalid(f"blob {', '.join(map(repr, bad))} is not a sha256 hash")
    return dict(blobs)


def _name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise Invalid(f"an entity name must be 1 to 256 characters, not {name!r}")
    return name


# --- reading ---------------------------------------------------------------------------------

def _state_view(state: ModelState, labels: Iterable[str] = ()) -> State:
    return State(state.id, state.parent_id, state.author, state.description, state.created_at,
                 tuple(sorted(labels)))


def _state(s: Session, project_id: str, state_id: int) -> ModelState:
    state = s.get(ModelState, state_id)
    if state is None or state.project_id != project_id:
        raise NotFound(f"project {project_id} has no model state {state_id}")
    return state


def _head_row(s: Session, project_id: str, *, lock: bool = False) -> ModelHead | None:
    query = select(ModelHead).where(ModelHead.project_id == project_id)
    return s.scalar(query.with_for_update() if lock else query)


def _labels_of(s: Session, state_id: int) -> list[str]:
    return list(s.scalars(select(ModelLabel.name).where(ModelLabel.state_id == state_id)))


def head(s: Session, project_id: str) -> Head | None:
    """Where the project stands, or None before its first commit."""
    row = _head_row(s, project_id)
    if row is None:
        return None
    state = _state(s, project_id, row.state_id)
    return Head(_state_view(state, _labels_of(s, state.id)), row.tip_id)


def _chain(s: Session, state_id: int) -> list[tuple[int, bool]]:
    """(state id, is checkpoint) from `state_id` up to its nearest checkpoint, newest first."""
    up = (select(ModelState.id, ModelState.parent_id, ModelState.checkpoint,
                 literal_column("0").label("n"))
          .where(ModelState.id == state_id).cte("chain", recursive=True))
    step = (select(ModelState.id, ModelState.parent_id, ModelState.checkpoint,
                   (up.c.n + 1).label("n"))
            .join(up, ModelState.id == up.c.parent_id).where(up.c.checkpoint.is_(False)))
    up = up.union_all(step)
    return [(i, bool(c)) for i, c in s.execute(select(up.c.id, up.c.checkpoint)
                                                .order_by(up.c.n))]


def _in_chunks(s: Session, query: Select[*tuple[Any, ...]], column: Any,
               ids: list[str] | None) -> list[Any]:
    # Core on the session's connection: ORM result processing would double a 10k-row read.
    conn = s.connection()
    if ids is None:
        return list(conn.execute(query).all())
    rows: list[Any] = []
    for i in range(0, len(ids), _CHUNK):
        rows.extend(conn.execute(query.where(column.in_(ids[i:i + _CHUNK]))).all())
    return rows


def tree(s: Session, project_id: str, state_id: int | None = None,
         entity_ids: Iterable[str] | None = None) -> dict[str, int]:
    """The entity id → version id map of a state (the head by default); with `entity_ids`, only
    those of them that exist there."""
    if state_id is None:
        row = _head_row(s, project_id)
        if row is None:
            return {}
        state_id = row.state_id
    else:
        _state(s, project_id, state_id)
    chain = _chain(s, state_id)
    wanted = None if entity_ids is None else list(entity_ids)
    entries = s.scalar(select(StateSnapshot.entries).where(
        StateSnapshot.state_id == chain[-1][0])) or {}
    result: dict[str, int] = (dict(entries) if wanted is None else
                              {e: entries[e] for e in wanted if e in entries})
    later = [i for i, _ in chain[:-1]]
    if later:
        changes = select(StateChange.state_id, StateChange.entity_id, StateChange.version_id
                         ).where(StateChange.state_id.in_(later))
        order = {state: n for n, state in enumerate(reversed(later))}  # oldest first
        rows = sorted(_in_chunks(s, changes, StateChange.entity_id, wanted),
                      key=lambda r: order[r[0]])
        for _, entity_id, version_id in rows:
            if version_id is None:
                result.pop(entity_id, None)
            else:
                result[entity_id] = version_id
    return result


def entities(s: Session, project_id: str, state_id: int | None = None,
             entity_ids: Iterable[str] | None = None) -> list[EntityView]:
    """The entities of a state (the head by default) with their versions' contents."""
    versions = tree(s, project_id, state_id, entity_ids)
    query = (select(Entity.id, Entity.kind, EntityVersion.id, EntityVersion.name,
                    EntityVersion.parent_id, EntityVersion.properties, EntityVersion.blobs)
             .join(EntityVersion, EntityVersion.entity_id == Entity.id))
    ids = list(versions.values())
    rows: list[Any] = []
    for i in range(0, len(ids), _CHUNK):
        rows.extend(s.execute(query.where(EntityVersion.id.in_(ids[i:i + _CHUNK]))))
    views = [EntityView(*row) for row in rows]
    return sorted(views, key=lambda v: (v.name, v.id))


def entity(s: Session, project_id: str, entity_id: str,
           state_id: int | None = None) -> EntityView:
    found = entities(s, project_id, state_id, [entity_id])
    if not found:
        raise NotFound(f"entity {entity_id} does not exist in this model state")
    return found[0]


def graph(s: Session, project_id: str) -> Graph:
    """Every state of the project (oldest first, branches included) with head and tip."""
    row = _head_row(s, project_id)
    if row is None:
        raise NotFound(f"project {project_id} has no history yet")
    labels: dict[int, list[str]] = {}
    for name, state_id in s.execute(select(ModelLabel.name, ModelLabel.state_id)
                                    .where(ModelLabel.project_id == project_id)):
        labels.setdefault(state_id, []).append(name)
    states = s.scalars(select(ModelState).where(ModelState.project_id == project_id)
                       .order_by(ModelState.id))
    return Graph([_state_view(st, labels.get(st.id, ())) for st in states],
                 row.state_id, row.tip_id)


def graph_json(s: Session, project_id: str) -> dict[str, Any]:
    """The graph as clients get it; no states yet is an empty graph, not an error."""
    if _head_row(s, project_id) is None:
        return {"states": [], "head": None, "tip": None}
    return graph(s, project_id).to_json()


def diff(s: Session, project_id: str, a: int, b: int) -> Diff:
    """Entities added, removed and changed (a different version) from state `a` to state `b`."""
    before, after = tree(s, project_id, a), tree(s, project_id, b)
    return Diff(added=sorted(after.keys() - before.keys()),
                removed=sorted(before.keys() - after.keys()),
                changed=sorted(e for e in before.keys() & after.keys() if before[e] != after[e]))


# --- writing ---------------------------------------------------------------------------------

def _new_state(s: Session, project_id: str, parent: ModelState | None, author: str,
               description: str) -> ModelState:
    depth = 0 if parent is None else parent.depth + 1
    state = ModelState(project_id=project_id, parent_id=None if parent is None else parent.id,
                       depth=depth, checkpoint=depth % CHECKPOINT == 0, author=author,
                       description=description)
    s.add(state)
    s.flush()
    return state


def commit(s: Session, project_id: str, edit: Edit, *, author: str,
           description: str) -> State:
    """Write `edit` as a new state, child of the head, and move head and tip to it.

    The first commit of a project also makes its empty root state, so it can be undone.
    Everything is checked before anything is written; the caller's transaction makes it atomic.
    """
    if not isinstance(author, str) or not 0 < len(author) <= 64:
        raise Invalid(f"a state's author must be 1 to 64 characters, not {author!r}")
    description = description.strip()
    if not description or "\n" in description:
        raise Invalid("a state's description must be one non-empty line")
    if not (edit.creates or edit.updates or edit.deletes):
        raise Invalid("an edit with no changes makes no new state")
    row = _head_row(s, project_id, lock=True)
    parent = None if row is None else _state(s, project_id, row.state_id)
    touched = [u.entity_id for u in edit.updates] + list(edit.deletes)
    if len(set(touched)) != len(touched):
        raise Invalid("an edit changes each entity at most once")
    created = {c.entity_id for c in edit.creates}
    folders: set[str] = {f for f in (*(c.parent_id for c in edit.creates),
                                     *(u.fields.get("parent_id") for u in edit.updates))
                         if f is not None and f not in created}
    looked_up = [*touched, *folders]
    current = (tree(s, project_id, parent.id, looked_up)
               if parent is not None and looked_up else {})
    missing = sorted(set(touched) - current.keys())
    if missing:
        raise NotFound(f"no entity {', '.join(missing)} in the current model state")
    lost = sorted(f for f in folders if f not in current or f in edit.deletes)
    if lost:
        raise Invalid(f"parent entity {', '.join(lost)} is not in the model")
    existing = {v.id: v for v in s.scalars(select(EntityVersion).where(
        EntityVersion.id.in_([current[u.entity_id] for u in edit.updates])))}

    if parent is None:
        parent = _new_state(s, project_id, None, author, ROOT_DESCRIPTION)
    state = _new_state(s, project_id, parent, author, description)
    if edit.creates:
        with conflict_on_integrity(s, "an entity with that id exists already"):
            s.execute(insert(Entity), [{"id": c.entity_id, "project_id": project_id,
                                        "kind": c.kind} for c in edit.creates])
    contents: list[dict[str, Any]] = [
        {"entity_id": c.entity_id, "name": c.name, "parent_id": c.parent_id,
         "properties": c.properties, "blobs": c.blobs} for c in edit.creates]
    for u in edit.updates:
        old = existing[current[u.entity_id]]
        contents.append({"entity_id": u.entity_id, "name": old.name, "parent_id": old.parent_id,
                         "properties": old.properties, "blobs": old.blobs, **u.fields})
    changes: list[dict[str, Any]] = [{"state_id": state.id, "entity_id": e, "version_id": None}
                                     for e in edit.deletes]
    if contents:
        new_ids = s.scalars(insert(EntityVersion).returning(EntityVersion.id,
                                                           sort_by_parameter_order=True),
                            contents).all()
        changes += [{"state_id": state.id, "entity_id": c["entity_id"], "version_id": v}
                    for c, v in zip(contents, new_ids, strict=True)]
    s.execute(insert(StateChange), changes)
    keep_blobs(s, project_id, (d for c in contents for d in c["blobs"].values()))
    if state.checkpoint:
        full = tree(s, project_id, parent.id)
        for change in changes:
            if change["version_id"] is None:
                full.pop(change["entity_id"], None)
            else:
                full[change["entity_id"]] = change["version_id"]
        s.add(StateSnapshot(state_id=state.id, entries=full))
    if row is None:  # the first commit: two racing first writers meet at the primary key
        with conflict_on_integrity(s, "another writer started this project's history; retry"):
            s.add(ModelHead(project_id=project_id, state_id=state.id, tip_id=state.id))
    else:
        row.state_id = row.tip_id = state.id
    s.flush()
    return _state_view(state)


def keep_blobs(s: Session, project_id: str, digests: Iterable[str]) -> None:
    """Record that these blobs belong to the project (its participants may download them).

    Select, then insert what is new: the project's one writer (its model service) serialises
    its writes, so no other transaction inserts the same rows meanwhile."""
    wanted = set(digests)
    bad = sorted(d for d in wanted if not is_sha256(d))
    if bad:
        raise Invalid(f"{bad[0]!r} is not a sha256 hash")
    known = {row.digest for row in _in_chunks(
        s, select(ProjectBlob.digest).where(ProjectBlob.project_id == project_id),
        ProjectBlob.digest, sorted(wanted))}
    new = sorted(wanted - known)
    if new:
        s.execute(insert(ProjectBlob), [{"project_id": project_id, "digest": d} for d in new])


def has_blob(s: Session, project_id: str, digest: str) -> bool:
    return s.get(ProjectBlob, (project_id, digest)) is not None


def _move(s: Session, project_id: str, state_id: int, tip_id: int | None = None) -> Head:
    values: dict[str, int] = {"state_id": state_id}
    if tip_id is not None:
        values["tip_id"] = tip_id
    s.execute(update(ModelHead).where(ModelHead.project_id == project_id).values(**values))
    result = head(s, project_id)
    assert result is not None
    return result


def _locked_head(s: Session, project_id: str) -> ModelHead:
    row = _head_row(s, project_id, lock=True)
    if row is None:
        raise Conflict(f"project {project_id} has no history yet")
    return row


def undo(s: Session, project_id: str) -> Head:
    """Move the head to its parent state; the tip stays, so redo can come back."""
    row = _locked_head(s, project_id)
    parent_id = s.scalar(select(ModelState.parent_id).where(ModelState.id == row.state_id))
    if parent_id is None:
        raise Conflict("nothing to undo: the model is at its first state")
    return _move(s, project_id, parent_id)


def redo(s: Session, project_id: str) -> Head:
    """Move the head one state towards the tip of its branch."""
    row = _locked_head(s, project_id)
    if row.state_id == row.tip_id:
        raise Conflict("nothing to redo: the model is at the newest state of its branch")
    up = (select(ModelState.id, ModelState.parent_id)
          .where(ModelState.id == row.tip_id).cte("path", recursive=True))
    up = up.union_all(select(ModelState.id, ModelState.parent_id)
                      .join(up, ModelState.id == up.c.parent_id)
                      .where(up.c.parent_id != row.state_id))
    child = s.scalar(select(up.c.id).where(up.c.parent_id == row.state_id))
    if child is None:  # the tip is not below the head: only a broken head row gets here
        raise Conflict("nothing to redo: the head is not on the tip's branch")
    return _move(s, project_id, child)


def checkout(s: Session, project_id: str, state_id: int) -> Head:
    """Make any state (of any branch) the head and the tip."""
    _locked_head(s, project_id)
    _state(s, project_id, state_id)
    return _move(s, project_id, state_id, state_id)


def label(s: Session, project_id: str, name: str, state_id: int | None = None) -> None:
    """Name a state (the head by default); a label names one state of a project."""
    if not name.strip() or len(name) > 128:
        raise Invalid(f"a label must be 1 to 128 characters, not {name!r}")
    if state_id is None:
        state_id = _locked_head(s, project_id).state_id
    _state(s, project_id, state_id)
    with conflict_on_integrity(s, f"label {name!r} already names a state of this project"):
        s.add(ModelLabel(project_id=project_id, name=name, state_id=state_id))


def labelled(s: Session, project_id: str, name: str) -> int:
    """The state a label names."""
    state_id = s.scalar(select(ModelLabel.state_id).where(ModelLabel.project_id == project_id,
                                                          ModelLabel.name == name))
    if state_id is None:
        raise NotFound(f"no label {name!r} in this project")
    return state_id
