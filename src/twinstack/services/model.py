"""The model service: while a session is live, the one writer of its project's history.

Users (through the relay) and the session's other compute services read entities and write
new versions here; the history itself (states, undo/redo, branches, labels) is `store.history`.
Blobs are put in the blob store by whoever made them, before the commit that names them: a
commit naming a blob that is not there is refused, so a state never points at missing data.

Every change of the head (commit, undo, redo, checkout) is one database transaction, and is
pushed to every `changes` subscriber (the relay, which tells every client of the session) as a
`model_changed` event. A relayed call carries its user and role (wire.actions.Participant):
viewers read, editors and owners write; a compute service of the session writes on behalf of
the user it names.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, ClassVar, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from twinstack.exitcodes import ExitCode, FatalError
from twinstack.services.database import ServiceDatabase
from twinstack.store import Database, Project
from twinstack.store import history as hist
from twinstack.store.blobs import BlobStore, is_sha256
from twinstack.store.errors import Conflict, NotFound
from twinstack.store.models import Base, new_id
from twinstack.wire.actions import Call, action, editing_user
from twinstack.wire.blobhttp import blob_response
from twinstack.wire.errors import ActionError, forbidden, malformed
from twinstack.wire.runtime import NoParams, Ports, ServiceBase, error_response, peer_of

log = logging.getLogger(__name__)

MAX_LISTED = 100_000  # ids in one request: far above a project's size, far below memory trouble
SUBSCRIBER_BACKLOG = 1000  # events waiting for one slow subscriber before it is let go
# Properties of a geometry entity that the modeling service evaluates: changed only through it,
# so an entity's shape always matches its recorded operation.
EVALUATED = frozenset({"feature", "parameters", "inputs"})
# The session's services that make blobs for the project without naming them in a commit
# (exports, pictures): users cannot claim a blob for the project by its hash.
BLOB_MAKERS = ("modeling", "cartesian-mesh", "tet-mesh", "visualization", "admin")
# services whose long jobs report progress to the session
JOB_REPORTERS = ("fit-td", "phreeqc", "admin")


class EntitiesParams(BaseModel):
    model_config = {"extra": "forbid"}

    state: int | None = Field(None, description="a model state (default: the head)")
    ids: list[str] | None = Field(None, max_length=MAX_LISTED, description="only these")
    kinds: list[str] | None = Field(None, description="only entities of these kinds")


class GetParams(BaseModel):
    model_config = {"extra": "forbid"}

    id: str
    state: int | None = None


class NewEntity(BaseModel):
    model_config = {"extra": "forbid"}

    id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$", description="an id chosen by the "
                           "writer (so one commit can create an entity and refer to it)")
    kind: str
    name: str
    parent: str | None = Field(None, description="the folder (or other entity) it belongs to")
    properties: dict[str, Any] = {}
    blobs: dict[str, str] = Field({}, description="role -> sha256 of a blob already stored")


class EntityChange(BaseModel):
    """A new version of an entity: fields left out keep their value; `properties` replaces
    the named keys only (a key set to null is removed)."""

    model_config = {"extra": "forbid"}

    id: str
    name: str | None = None
    parent: str | None = Field(None, description="move under this entity; \"\" for the top")
    properties: dict[str, Any] | None = None
    blobs: dict[str, str] | None = Field(None, description="replaces the named roles")


class CreateParams(NewEntity):
    description: str | None = Field(None, max_length=200)


class SetParams(EntityChange):
    description: str | None = Field(None, max_length=200)


class DeleteParams(BaseModel):
    model_config = {"extra": "forbid"}

    ids: list[str] = Field(min_length=1, max_length=MAX_LISTED)
    description: str | None = Field(None, max_length=200)


class CommitParams(BaseModel):
    """One state made of several changes (what compute services write)."""

    model_config = {"extra": "forbid"}

    description: str = Field(min_length=1, max_length=200)
    creates: list[NewEntity] = Field([], max_length=MAX_LISTED)
    updates: list[EntityChange] = Field([], max_length=MAX_LISTED)
    deletes: list[str] = Field([], max_length=MAX_LISTED)
    base: int | None = Field(None, description="refuse (409) unless the head is this state: "
                             "the changes were computed from it")
    author: str | None = Field(None, description="the user a compute service writes for")
    evaluated: bool = Field(False, description="the writer evaluated geometry features")


class KeepBlobsParams(BaseModel):
    model_config = {"extra": "forbid"}

    blobs: list[str] = Field(min_length=1, max_length=MAX_LISTED,
                             description="hashes of blobs already stored")


class JobEvent(BaseModel):
    """How far a compute job is: passed on to every participant as a `job` event."""

    model_config = {"extra": "forbid"}

    job: str = Field(max_length=64)
    simulation: str = Field(max_length=64)
    status: Literal["running", "done", "failed", "cancelled"]
    step: int = Field(ge=0)
    steps: int = Field(ge=0)
    resumed_from: int = Field(0, ge=0)
    reason: str | None = Field(None, max_length=4000)
    line: int | None = Field(None, ge=1, description="the input line a failed run's error "
                             "points at")
    results: list[str] = Field([], max_length=1000)
    simulated_s: float | None = Field(None, allow_inf_nan=False)
    cell_updates_per_s: float | None = Field(None, allow_inf_nan=False)
    eta_s: float | None = Field(None, allow_inf_nan=False)
    device: Literal["cpu", "gpu"] = "cpu"


class CheckoutParams(BaseModel):
    model_config = {"extra": "forbid"}

    state: int | None = None
    label: str | None = None


class LabelParams(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=128)
    state: int | None = None


class DiffParams(BaseModel):
    model_config = {"extra": "forbid"}

    a: int
    b: int


# One change of the head, given the head before it: the head after it, and the entities it
# added, removed and changed.
Change = Callable[[Session, "hist.Head | None"], "tuple[hist.Head, hist.Diff]"]


def head_json(head: hist.Head | None) -> dict[str, Any] | None:
    return None if head is None else head.to_json()


def _merged(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**old, **new}
    return {k: v for k, v in merged.items() if v is not None}


def _descendants(views: list[hist.EntityView], roots: list[str]) -> list[str]:
    """`roots` and everything under them in the project tree, each once."""
    children: dict[str, list[str]] = {}
    for view in views:
        if view.parent_id is not None:
            children.setdefault(view.parent_id, []).append(view.id)
    found: list[str] = []
    seen: set[str] = set()
    stack = list(reversed(roots))
    while stack:
        entity_id = stack.pop()
        if entity_id not in seen:
            seen.add(entity_id)
            found.append(entity_id)
            stack.extend(children.get(entity_id, ()))
    return found


class ModelService(ServiceBase):
    name: ClassVar[str] = "model"
    ports: ClassVar[Ports] = Ports(internal=7460, health=7461)

    @staticmethod
    def warm_up() -> None:
        _warm_up()

    async def start(self) -> None:
        s = self.settings
        if not s.project:
            raise FatalError(ExitCode.CONFIG_ERROR, "the model service needs --project")
        self.project: str = s.project
        self.db = ServiceDatabase(s, migrate=False)
        await self.db.open()
        if await self.db.run(lambda db: db.get(Project, self.project)) is None:
            raise FatalError(ExitCode.CONFIG_ERROR, f"project {self.project} does not exist")
        self.blobs = BlobStore(s.blob_path())
        self.writing = asyncio.Lock()  # one change of the head at a time
        self.subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()

    async def stop(self) -> None:
        for queue in self.subscribers:
            queue.put_nowait(None)
        self.db.close()

    def internal_routes(self) -> list[web.RouteDef]:
        return [web.get("/blobs/{digest}", self._blob)]

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        """`GET /blobs/HASH?session=ID`: a blob of this project, streamed, for the relay (which
        checked the user's access to the session) and the session's own services."""
        try:
            peer = peer_of(request)
            if peer.service != "relay" and peer.session != self.settings.session:
                raise forbidden(f"{peer} may not read this session's blobs")
            if request.query.get("session") != self.settings.session:  # a stale endpoint
                raise ActionError(421, "misdirected", f"this is the model of session "
                                  f"{self.settings.session}, not of the one asked for")
            digest = request.match_info["digest"]
            if not is_sha256(digest):
                raise malformed(f"{digest[:80]!r} is not a sha256 hash (64 lower-case hex "
                                "digits)")
            known = await self.db.run(lambda s: hist.has_blob(s, self.project, digest))
            if not known or not self.blobs.exists(digest):
                raise ActionError(404, "not_found", f"no blob {digest} in this project")
            return await blob_response(request, self.blobs.path(digest), digest)
        except ActionError as err:
            return error_response(err)

    # reading ----------------------------------------------------------------------------------

    @action()
    async def entities(self, call: Call, params: EntitiesParams) -> dict[str, Any]:
        """The entities of a state (the head by default), with the state they are from."""
        def read(s: Session) -> dict[str, Any]:
            head = hist.head(s, self.project)
            state = params.state if params.state is not None else \
                (head.state.id if head else None)
            views = hist.entities(s, self.project, state, params.ids) if state is not None \
                else []
            kinds = set(params.kinds or ())
            return {"state": state, "head": head_json(head),
                    "entities": [v.to_json() for v in views if not kinds or v.kind in kinds]}
        return await self.db.run(read)

    @action()
    async def get(self, call: Call, params: GetParams) -> dict[str, Any]:
        return await self.db.run(lambda s: hist.entity(
            s, self.project, params.id, params.state).to_json())

    @action()
    async def head(self, call: Call, params: NoParams) -> dict[str, Any] | None:
        """Where the model stands: its state, the tip of its branch, whether undo/redo can."""
        return await self.db.run(lambda s: head_json(hist.head(s, self.project)))

    @action()
    async def history(self, call: Call, params: NoParams) -> dict[str, Any]:
        """Every state, branches included (oldest first), with the head and tip."""
        return await self.db.run(lambda s: hist.graph_json(s, self.project))

    @action()
    async def diff(self, call: Call, params: DiffParams) -> dict[str, Any]:
        """Entities added, removed and changed from state `a` to state `b`."""
        return asdict(await self.db.run(lambda s: hist.diff(s, self.project, params.a,
                                                            params.b)))

    # writing ----------------------------------------------------------------------------------

    @staticmethod
    def _author(call: Call, forwarded: str | None = None) -> str:
        """Who a change is by, or 403: relayed calls carry their user and role; the session's
        compute services name the user they work for."""
        return editing_user(call) or forwarded or (call.peer.service if call.peer else "unknown")

    def _check_blobs(self, blobs: Iterable[Mapping[str, str]]) -> None:
        self._check_stored([d for roles in blobs for d in roles.values()])

    def _check_stored(self, digests: Iterable[str]) -> None:
        missing = sorted({d for d in digests if not self.blobs.exists(d)})
        if missing:
            raise ActionError(422, "invalid_params", f"blob {missing[0]} is not in the blob "
                              f"store{f' (and {len(missing) - 1} more)' if missing[1:] else ''}"
                              ": put blobs before the commit that names them", "params")

    async def _write(self, operation: str, author: str, change: Change) -> dict[str, Any]:
        """Run one change of the head in one transaction, then tell every subscriber."""
        def run(s: Session) -> tuple[int | None, dict[str, Any], dict[str, Any]]:
            before = hist.head(s, self.project)
            after, moved = change(s, before)
            return before.state.id if before else None, after.to_json(), asdict(moved)

        async with self.writing:
            before, head, moved = await self.db.run(run)
        log.info("%s by %s: state %s -> %s (%s)", operation, author, before,
                 head["state"]["id"], head["state"]["description"])
        self._publish({"type": "model_changed", "project": self.project,
                       "operation": operation, "author": author, "from_state": before,
                       "head": head, "entities": moved})
        return {"head": head, "entities": moved}

    def _commit(self, build: Callable[[Session], hist.Edit], author: str, description: str,
                base: int | None = None) -> Change:
        """A change that builds its edit inside the transaction (so merges read what the
        commit replaces) and commits it as a child of the head (of `base` only, if given)."""
        def change(s: Session, before: hist.Head | None) -> tuple[hist.Head, hist.Diff]:
            if base is not None and (before.state.id if before else None) != base:
                raise Conflict(f"the model changed meanwhile (its head is state "
                               f"{before.state.id if before else None}, not {base}): read "
                               "it again and retry")
            edit = build(s)
            state = hist.commit(s, self.project, edit, author=author, description=description)
            return hist.Head(state, state.id), hist.Diff(
                added=[c.entity_id for c in edit.creates], removed=list(edit.deletes),
                changed=[u.entity_id for u in edit.updates])
        return change

    def _moving(self, move: Callable[[Session], hist.Head]) -> Change:
        """A move of the head to another existing state (undo, redo, checkout; each refuses
        a project without a head), with what differs there."""
        def change(s: Session, before: hist.Head | None) -> tuple[hist.Head, hist.Diff]:
            after = move(s)
            assert before is not None
            return after, hist.diff(s, self.project, before.state.id, after.state.id)
        return change

    @action()
    async def create(self, call: Call, params: CreateParams) -> dict[str, Any]:
        """A new entity (a folder, material, data ...) as one new state."""
        author = self._author(call)
        self._check_blobs([params.blobs])
        entity_id = params.id or new_id()
        description = params.description or f"create {params.kind} {params.name}"
        result = await self._write("commit", author, self._commit(
            lambda s: self._edit(s, [params.model_copy(update={"id": entity_id})]), author,
            description))
        return {**result, "id": entity_id}

    @action()
    async def set(self, call: Call, params: SetParams) -> dict[str, Any]:
        """Rename, move or change properties of an entity, as one new state."""
        author = self._author(call)
        if params.properties and EVALUATED & params.properties.keys():
            raise ActionError(422, "invalid_params", "feature, parameters and inputs of "
                              "geometry are evaluated: change them with modeling's "
                              "set_parameters, which rebuilds the shapes that depend on them",
                              "params.properties")
        self._check_blobs([params.blobs or {}])
        current = await self.db.run(lambda s: hist.entity(s, self.project, params.id).name)
        description = params.description or f"change {current}" + (
            f" (now {params.name})" if params.name and params.name != current else "")
        return await self._write("commit", author, self._commit(
            lambda s: self._edit(s, [], [params]), author, description))

    def _edit(self, s: Session, creates: Sequence[NewEntity], changes: Sequence[EntityChange] = (),
              deletes: Sequence[str] = ()) -> hist.Edit:
        """One commit's changes (inside its transaction: what is wrong with them is refused
        as the store says, with nothing written); properties and blobs of changed entities
        are merged into their current ones."""
        edit = hist.Edit()
        for c in creates:
            edit.create(c.kind, c.name, parent_id=c.parent, properties=c.properties,
                        blobs=c.blobs, entity_id=c.id)
        for entity_id in deletes:
            edit.delete(entity_id)
        merging = [c.id for c in changes if c.properties is not None or c.blobs is not None]
        current = {v.id: v for v in hist.entities(s, self.project, None, merging)} \
            if merging else {}
        for change in changes:
            fields: dict[str, Any] = {}
            if change.name is not None:
                fields["name"] = change.name
            if change.parent is not None:
                fields["parent_id"] = change.parent or None
            if change.properties is not None or change.blobs is not None:
                old = current.get(change.id)
                if old is None:
                    raise NotFound(f"entity {change.id} does not exist in the current model state")
                if change.properties is not None:
                    fields["properties"] = _merged(old.properties, change.properties)
                if change.blobs is not None:
                    fields["blobs"] = _merged(old.blobs, change.blobs)
            edit.update(change.id, **fields)
        return edit

    @action()
    async def delete(self, call: Call, params: DeleteParams) -> dict[str, Any]:
        """Remove entities and everything under them in the tree, as one new state (the
        entities stay in earlier states: undo brings them back)."""
        author = self._author(call)

        def build(s: Session) -> hist.Edit:
            views = hist.entities(s, self.project)
            known = {v.id for v in views}
            unknown = [i for i in params.ids if i not in known]
            if unknown:
                raise NotFound(f"no entity {', '.join(unknown[:5])} in the current model state")
            edit = hist.Edit()
            for entity_id in _descendants(views, params.ids):
                edit.delete(entity_id)
            return edit
        description = params.description or f"delete {len(params.ids)} entit" + \
            ("y" if len(params.ids) == 1 else "ies")
        return await self._write("commit", author, self._commit(build, author, description))

    @action()
    async def commit(self, call: Call, params: CommitParams) -> dict[str, Any]:
        """Several changes as one state: what compute services write (blobs put first)."""
        author = self._author(call, params.author)
        if not params.evaluated and any(
                EVALUATED & (u.properties or {}).keys() for u in params.updates):
            raise ActionError(422, "invalid_params", "feature, parameters and inputs of "
                              "geometry are changed by the modeling service", "params.updates")
        self._check_blobs([c.blobs for c in params.creates] +
                          [u.blobs for u in params.updates if u.blobs])
        creates = [c if c.id else c.model_copy(update={"id": new_id()}) for c in params.creates]
        log.info("committing %d new, %d changed, %d deleted entities", len(params.creates),
                 len(params.updates), len(params.deletes))
        result = await self._write("commit", author, self._commit(
            lambda s: self._edit(s, creates, params.updates, params.deletes), author,
            params.description, params.base))
        return {**result, "ids": [c.id for c in creates]}

    @action(allow=BLOB_MAKERS)
    async def keep_blobs(self, call: Call, params: KeepBlobsParams) -> dict[str, Any]:
        """Make blobs (already stored) downloadable by the project's participants: what a
        service made for them without a commit (an export, a picture)."""
        bad = [d for d in params.blobs if not is_sha256(d)]
        if bad:
            raise ActionError(422, "invalid_params", f"{bad[0][:80]!r} is not a sha256 hash",
                              "params.blobs")
        self._check_stored(params.blobs)
        async with self.writing:
            await self.db.run(lambda s: hist.keep_blobs(s, self.project, params.blobs))
        return {"kept": len(set(params.blobs))}

    @action()
    async def undo(self, call: Call, params: NoParams) -> dict[str, Any]:
        """Back to the state before the head's (409 when there is nothing to undo)."""
        author = self._author(call)
        return await self._write("undo", author,
                                 self._moving(lambda s: hist.undo(s, self.project)))

    @action()
    async def redo(self, call: Call, params: NoParams) -> dict[str, Any]:
        """Forward one state along the branch last left by undo (409 when at its tip)."""
        author = self._author(call)
        return await self._write("redo", author,
                                 self._moving(lambda s: hist.redo(s, self.project)))

    @action()
    async def checkout(self, call: Call, params: CheckoutParams) -> dict[str, Any]:
        """Make any state, of any branch, the head (by id or by label)."""
        author = self._author(call)
        if (params.state is None) == (params.label is None):
            raise ActionError(422, "invalid_params", "give exactly one of state or label",
                              "params")

        def change(s: Session) -> hist.Head:
            state = params.state if params.state is not None else \
                hist.labelled(s, self.project, params.label or "")
            return hist.checkout(s, self.project, state)
        return await self._write("checkout", author, self._moving(change))

    @action()
    async def label(self, call: Call, params: LabelParams) -> dict[str, Any]:
        """Name a state (the head by default) so it can be found and checked out by name."""
        author = self._author(call)

        def change(s: Session, before: hist.Head | None) -> tuple[hist.Head, hist.Diff]:
            hist.label(s, self.project, params.name, params.state)
            found = hist.head(s, self.project)
            if found is None:
                raise Conflict("the model has no states to label yet")
            return found, hist.Diff([], [], [])
        return await self._write("label", author, change)

    # events -----------------------------------------------------------------------------------

    def _publish(self, event: dict[str, Any]) -> None:
        for queue in list(self.subscribers):
            if queue.qsize() >= SUBSCRIBER_BACKLOG:  # it does not read: let it go (it will
                self.subscribers.discard(queue)     # subscribe again and read the head)
                queue.put_nowait(None)
            else:
                queue.put_nowait(event)

    @action(allow=JOB_REPORTERS)
    async def announce(self, call: Call, params: JobEvent) -> dict[str, Any]:
        """Pass a compute job's progress to every participant: news, not history (nothing is
        stored; what a job makes is committed as entities)."""
        service = call.peer.service if call.peer else "admin"
        self._publish({"type": "job", "service": service, "project": self.project,
                       **params.model_dump()})
        return {"published": True}

    @action(allow=("relay", "admin"))
    async def changes(self, call: Call, params: NoParams) -> AsyncIterator[dict[str, Any]]:
        """Every change of the head from now on (`model_changed`), the current head first."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.subscribers.add(queue)
        try:
            head = await self.db.run(lambda s: head_json(hist.head(s, self.project)))
            yield {"type": "model_head", "project": self.project, "head": head}
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self.subscribers.discard(queue)


@functools.cache  # once a process: a pooled worker does it before its session claims it
def _warm_up() -> None:
    """Import both database drivers and read a project through the ORM once (an in-memory
    database): a model service's start then only connects (~30 ms less)."""
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401  (the driver of --database-url)

    db = Database("sqlite://")
    try:
        with db.transaction() as session:
            Base.metadata.create_all(session.connection())
            session.get(Project, "warm-up")
    finally:
        db.dispose()
