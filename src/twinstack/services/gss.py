"""The global session service: the front door for projects and sessions, and the LSS registry.

Clients (public channel, bearer token) manage projects and open sessions; LSS nodes dial in on
the internal channel and keep one WebSocket open (`lss_attach`), over which they receive
start/stop commands and report heartbeats and session progress; the relay asks here whether a
token may use a session and subscribes to the session's events. All state that must survive a
restart lives in the database; only the open LSS sockets and event subscribers are in memory,
and both come back by themselves (LSS nodes and relays reconnect, to any replica).

On PostgreSQL, several replicas may serve side by side: what one learns that another's sockets
must hear goes over the bus (twinstack.store.bus), and placement runs on one replica at a time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session as Tx

from twinstack import __version__
from twinstack.metrics import GssMetrics
from twinstack.pki.crl import crl_routes
from twinstack.services.database import ServiceDatabase, database_url
from twinstack.sessiontypes import SESSION_TYPE_NEEDS, SESSION_TYPES, Needs
from twinstack.store import LIVE_STATES, ROLES, Conflict, NotFound, accounts, history, projects
from twinstack.store.bus import Message, open_bus
from twinstack.store.models import FINAL_STATES, LssNode, SessionRecord, User, utcnow
from twinstack.web import web_routes
from twinstack.wire.actions import Call, action
from twinstack.wire.errors import ActionError, forbidden, not_found, unauthorized
from twinstack.wire.runtime import NoParams, Ports, ServiceBase

log = logging.getLogger(__name__)

DISPATCH_TICK = 1.0  # seconds: the queue is looked at least this often (timeouts, new LSS)
PLACEMENT_LOCK = 0x7757_0002  # advisory lock: one replica places queued sessions at a time


@dataclass(frozen=True)
class Principal:
    id: int
    name: str
    admin: bool


@dataclass(frozen=True)
class Candidate:
    """An LSS as placement sees it: its room, what its live sessions reserve, its load."""

    name: str
    capacity: int
    live_sessions: int
    load: dict[str, float]
    memory_mb: float | None = None  # what its sessions may take in all (None: it did not say)
    reserved_mb: float = 0.0  # what its live sessions' types declare they need

    def has_room_for(self, needs: Needs) -> bool:
        return self.live_sessions < self.capacity and (
            self.memory_mb is None or self.reserved_mb + needs.memory_mb <= self.memory_mb)

    def with_session(self, needs: Needs) -> Candidate:
        return replace(self, live_sessions=self.live_sessions + 1,
                       reserved_mb=self.reserved_mb + needs.memory_mb)


def reserved_mb(live: dict[str, int]) -> float:
    """The memory live sessions (a count per session type) reserve; a type no longer offered
    counts as the largest one."""
    largest = max(needs.memory_mb for needs in SESSION_TYPE_NEEDS.values())
    return sum(count * (SESSION_TYPE_NEEDS[t].memory_mb if t in SESSION_TYPE_NEEDS else largest)
               for t, count in live.items())


def load_score(node: Candidate) -> float:
    """Lower is better: half how full it is (sessions against capacity, or reserved memory
    against its memory, whichever is fuller), then CPU and memory from the heartbeat."""
    full = node.live_sessions / node.capacity
    if node.memory_mb:
        full = max(full, node.reserved_mb / node.memory_mb)
    return 0.5 * full + 0.3 * node.load.get("cpu", 0.0) + 0.2 * node.load.get("memory", 0.0)


def choose_lss(nodes: list[Candidate], needs: Needs) -> str | None:
    """The least loaded LSS with room for one more session needing `needs`, or None."""
    open_nodes = [n for n in nodes if n.has_room_for(needs)]
    return min(open_nodes, key=lambda n: (load_score(n), n.name)).name if open_nodes else None


def start_command(session: str, project: str, session_type: str) -> dict[str, Any]:
    """What an LSS is told to start a session of an offered type."""
    return {"type": "start_session", "session": session, "project": project,
            "services": list(SESSION_TYPES[session_type])}


def state_event(record: SessionRecord) -> dict[str, Any]:
    """A session's state as its subscribers are first told it."""
    return {"type": "state", "session": record.id, "state": record.state,
            "services": record.services or {}, "reason": record.reason}


def session_view(record: SessionRecord) -> dict[str, Any]:
    """A session as its users see it: which services it has, never where they run."""
    return {"id": record.id, "project": record.project_id, "state": record.state,
            "lss": record.lss_id, "services": sorted(record.services or {}),
            "reason": record.reason, "created_at": record.created_at.isoformat(),
            "placed_at": record.placed_at.isoformat() if record.placed_at else None}


def seconds_per_place(capacity: int, recent: list[float]) -> float | None:
    """The ETA estimate's unit: how long, on average, until the queue moves up one place.

    With `capacity` session slots on the connected LSS nodes, each held for the mean duration
    D of the recently ended sessions (placed to ended), a slot frees every D / capacity
    seconds in the steady state, so the session at place N waits about N * D / capacity.
    None (unknown) without connected capacity or without any ended session to learn D from.
    """
    if capacity <= 0 or not recent:
        return None
    return sum(recent) / len(recent) / capacity


def queue_event(session: str, position: int, per_place: float | None) -> dict[str, Any]:
    """What a waiting session is told: its place in the queue (1: next) and the ETA."""
    return {"type": "queued", "session": session, "state": "queued", "position": position,
            "eta_seconds": None if per_place is None else round(position * per_place)}


def require(role: str | None, needed: str, what: str, project: str) -> None:
    if role is None:  # another user's project is not even admitted to exist
        raise not_found("project", project)
    if ROLES.index(role) < ROLES.index(needed):
        raise forbidden(f"{what} needs the {needed} role on project {project}; you are {role}")


# What clients may send: ids and names are short, so their limits show in the API document.
Id = Annotated[str, Field(min_length=1, max_length=64, description="a project or session id")]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                            description="a user or group name")]
ProjectName = Annotated[str, Field(min_length=1, max_length=128)]


class ProjectRef(BaseModel):
    model_config = {"extra": "forbid"}
    project: Id


class CreateProject(BaseModel):
    model_config = {"extra": "forbid"}
    name: ProjectName
    session_type: str = Field(max_length=64)


class RenameProject(ProjectRef):
    name: ProjectName


class ShareProject(ProjectRef):
    user: Name | None = None
    group: Name | None = None
    role: Literal["viewer", "editor", "owner"] = "viewer"


class UnshareProject(ProjectRef):
    user: Name | None = None
    group: Name | None = None


class SessionRef(BaseModel):
    model_config = {"extra": "forbid"}
    session: Id


class SessionAccess(SessionRef):
    token: str


class AccessChange(BaseModel):
    """What changed who may use what: a token (logout), a user (password, disabled, groups)
    or a project (shares, deletion). Relays re-check the sockets it touches."""

    model_config = {"extra": "forbid"}
    kind: Literal["token", "user", "project"]
    id: str = Field(min_length=1, max_length=128)


class LssHello(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    capacity: int = Field(ge=1)
    memory_mb: float | None = Field(None, gt=0)  # what its sessions may take in all
    gpus: int = 0
    load: dict[str, float] = {}
    sessions: list[str] = []


class TunnelCall(SessionRef):
    service: str
    action: str
    params: dict[str, Any] = {}


class TunnelResult(BaseModel):
    model_config = {"extra": "allow"}
    call_id: int


class LssHeartbeat(BaseModel):
    name: str
    load: dict[str, float] = {}


class SessionEvent(BaseModel):
    model_config = {"extra": "allow"}
    session: str
    type: str
    lss: str


class GssService(ServiceBase):
    name: ClassVar[str] = "gss"
    ports: ClassVar[Ports] = Ports(internal=7430, health=7431, public=7400)

    async def start(self) -> None:
        self.db = ServiceDatabase(self.settings)
        await self.db.open()
        self.stats = GssMetrics(self.runtime.metrics.registry)
        self.commands: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = \
            collections.defaultdict(set)
        self.sweeper = asyncio.create_task(self._sweep_silent_lss())
        self.placement = asyncio.Lock()  # one placement pass at a time: no LSS overbooked
        self.queue_changed = asyncio.Event()
        self.queue_positions: dict[str, int] = {}  # last place told to each waiting session
        self.tunnel_replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.access_watchers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.resync: asyncio.Task[None] | None = None
        self.bus = open_bus(database_url(self.settings), self._on_bus, self._resync)
        await self.bus.start(self.settings.dependency_timeout)
        self.dispatcher = asyncio.create_task(self._dispatch_loop())

    async def stop(self) -> None:
        for task in (self.sweeper, self.dispatcher, *([self.resync] if self.resync else [])):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.bus.close()
        self.db.close()

    def essential_tasks(self) -> dict[str, asyncio.Task[Any]]:
        return {"LSS sweep": self.sweeper, "session queue": self.dispatcher,
                **self.bus.tasks()}

    def public_routes(self) -> list[web.RouteDef]:
        """The web page (GET /, /web/...) and the CAs' CRLs (GET /pki/ca.crl,
        /pki/intermediate.crl): no token, the page asks for one and the CRLs are signed."""
        return [*web_routes(self.settings.auth_public_url, self.settings.relay_public_url),
                *crl_routes(self.settings.crl_dir)]

    async def authenticate(self, token: str) -> Principal | None:
        def resolve(s: Tx) -> Principal | None:
            user = accounts.resolve_token(s, token)
            return Principal(user.id, user.name, user.admin) if user else None
        return await self.db.run(resolve)

    # events, over the bus to every replica ------------------------------------------------------

    def publish(self, session: str, event: dict[str, Any]) -> None:
        self.bus.publish({"topic": "session", "session": session, "event": event})

    def access_changed(self, kind: str, ident: str) -> None:
        self.bus.publish({"topic": "access", "kind": kind, "id": ident})

    def queue_moved(self) -> None:
        """The queue may move (a session was queued, an LSS has room): every replica looks."""
        self.bus.publish({"topic": "queue"})

    def command(self, lss: str, command: dict[str, Any]) -> bool:
        """Send a command down an LSS's control link: here if it is linked to this replica,
        else over the bus to the one it is linked to. False if it is certainly not linked (to
        this replica, the only one); a command to an LSS between replicas is sent again when it
        links (lss_attach)."""
        queue = self.commands.get(lss)
        if queue is not None:
            queue.put_nowait(command)
            return True
        if self.bus.shared:
            self.bus.publish({"topic": "lss", "lss": lss, "command": command})
        return self.bus.shared

    def _on_bus(self, message: Message) -> None:
        """A message from any replica, this one's own included."""
        topic = message["topic"]
        if topic == "session":
            self._tell_subscribers(message["session"], message["event"])
        elif topic == "access":
            self._tell_access_watchers(message["kind"], message["id"])
        elif topic == "queue":
            self.queue_changed.set()
        elif topic == "lss" and (queue := self.commands.get(message["lss"])) is not None:
            queue.put_nowait(message["command"])
        elif topic == "tunnel" and (waiting := self.tunnel_replies.get(
                message["answer"]["call_id"])) is not None and not waiting.done():
            waiting.set_result(message["answer"])

    def _resync(self) -> None:
        """The bus was away (messages may be lost): subscribers get their session's state
        again, relays re-check every socket, and the queue is looked at."""
        self.queue_changed.set()
        self._tell_access_watchers("all", "*")
        self.resync = asyncio.create_task(self._tell_states(list(self.subscribers)))

    async def _tell_states(self, sessions: list[str]) -> None:
        try:
            records = await self.db.run(
                lambda s: [s.get(SessionRecord, session) for session in sessions])
        except ActionError as exc:
            log.warning("cannot read the sessions again after a bus outage: %s", exc.message)
            return
        for record in records:
            if record is not None:
                self._tell_subscribers(record.id, state_event(record))

    def _tell_subscribers(self, session: str, event: dict[str, Any]) -> None:
        if event.get("state") in ("closing", *FINAL_STATES):
            self.queue_changed.set()  # its LSS slot is free: the queue may move
        for queue in self.subscribers.get(session, ()):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)

    def _tell_access_watchers(self, kind: str, ident: str) -> None:
        """Tell every relay; one that lags so far that its queue fills re-checks everything."""
        for queue in self.access_watchers:
            try:
                queue.put_nowait({"kind": kind, "id": ident})
            except asyncio.QueueFull:
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait({"kind": "all", "id": "*"})

    # public: projects -----------------------------------------------------------------------

    @action(anonymous=True)
    async def info(self, call: Call, params: NoParams) -> dict[str, Any]:
        """What a thin client needs first: where to log in and where the relay is."""
        return {"service": "gss", "version": __version__,
                "auth_url": self.settings.auth_public_url,
                "relay_url": self.settings.relay_public_url,
                "session_types": {k: list(v) for k, v in SESSION_TYPES.items()}}

    @action(public=True, allow=())
    async def create_project(self, call: Call, params: CreateProject) -> dict[str, Any]:
        if params.session_type not in SESSION_TYPES:
            raise ActionError(422, "invalid_params", f"unknown session type "
                              f"{params.session_type!r}; known: {', '.join(SESSION_TYPES)}",
                              "params.session_type")
        me: Principal = call.principal

        def create(s: Tx) -> dict[str, Any]:
            owner = s.get_one(User, me.id)
            project = projects.create_project(s, owner, params.name, params.session_type)
            return {"id": project.id, "name": project.name,
                    "session_type": project.session_type, "role": "owner"}
        return await self.db.run(create)

    @action(public=True, allow=())
    async def list_projects(self, call: Call, params: NoParams) -> dict[str, Any]:
        me: Principal = call.principal

        def visible(s: Tx) -> list[dict[str, Any]]:
            user = s.get_one(User, me.id)
            return [{"id": p.id, "name": p.name, "session_type": p.session_type,
                     "role": role, "owner": s.get_one(User, p.owner_id).name}
                    for p, role in projects.visible_projects(s, user)]
        return {"projects": await self.db.run(visible)}

    async def _role(self, me: Principal, project: str) -> str | None:
        return await self.db.run(
            lambda s: projects.role_of(s, s.get_one(User, me.id), project))

    @action(public=True, allow=())
    async def rename_project(self, call: Call, params: RenameProject) -> dict[str, Any]:
        require(await self._role(call.principal, params.project), "editor", "renaming",
                params.project)
        await self.db.run(lambda s: projects.rename_project(s, params.project, params.name))
        return {"id": params.project, "name": params.name}

    @action(public=True, allow=())
    async def project_history(self, call: Call, params: ProjectRef) -> dict[str, Any]:
        """The project's model states as a graph (read here, whether or not a session is live;
        only its model service writes them)."""
        require(await self._role(call.principal, params.project), "viewer",
                "reading the history", params.project)

        return await self.db.run(lambda s: history.graph_json(s, params.project))

    @action(public=True, allow=())
    async def delete_project(self, call: Call, params: ProjectRef) -> dict[str, Any]:
        require(await self._role(call.principal, params.project), "owner", "deleting",
                params.project)
        live = await self.db.run(lambda s: projects.live_session(s, params.project))
        if live is not None:
            await self._close(live.id, live.lss_id, "project deleted")
        await self.db.run(lambda s: projects.delete_project(s, params.project))
        self.access_changed("project", params.project)
        return {"deleted": params.project}

    @action(public=True, allow=())
    async def share_project(self, call: Call, params: ShareProject) -> dict[str, Any]:
        require(await self._role(call.principal, params.project), "owner", "sharing",
                params.project)
        if (params.user is None) == (params.group is None):
            raise ActionError(422, "invalid_params", "share with exactly one of user or group",
                              "params.user")
        await self.db.run(lambda s: projects.share_project(
            s, params.project, user=params.user, group=params.group, role=params.role))
        self.access_changed("project", params.project)  # a role may have gone down
        return {"shares": await self.db.run(lambda s: projects.shares_of(s, params.project))}

    @action(public=True, allow=())
    async def unshare_project(self, call: Call, params: UnshareProject) -> dict[str, Any]:
        require(await self._role(call.principal, params.project), "owner", "unsharing",
                params.project)
        await self.db.run(lambda s: projects.unshare_project(
            s, params.project, user=params.user, group=params.group))
        self.access_changed("project", params.project)
        return {"shares": await self.db.run(lambda s: projects.shares_of(s, params.project))}

    # public: sessions -----------------------------------------------------------------------

    @action(public=True, allow=())
    async def open_session(self, call: Call, params: ProjectRef) -> dict[str, Any]:
        """Join the project's live session, or start one on the least loaded LSS.

        When no LSS has room (or others wait already) it waits in the queue (state queued),
        first come first served, and is placed as soon as a place frees."""
        me: Principal = call.principal
        role = await self._role(me, params.project)
        require(role, "viewer", "opening a session", params.project)
        live = await self.db.run(lambda s: projects.live_session(s, params.project))
        if live is not None:
            return session_view(live)
        require(role, "editor", "starting a session", params.project)

        def create(s: Tx) -> SessionRecord:
            try:
                return projects.create_session(s, params.project, me.id, None, state="queued")
            except Conflict:  # someone else started it just now: join theirs
                found = projects.live_session(s, params.project)
                assert found is not None
                return found
        record = await self.db.run(create)
        if record.state == "queued":
            try:  # placed now if an LSS has room and nobody waits before it
                await self._dispatch()
            except Exception:  # it stays queued; the dispatch loop tries again
                log.exception("session queue: dispatch pass failed; retrying")
                self.queue_moved()
            record = await self.db.run(lambda s: projects.get_session(s, record.id))
        return session_view(record)

    async def _candidates(self) -> list[Candidate]:
        """The connected nodes, as placement sees them: with one gss, those linked to it."""
        return [Candidate(n["name"], n["capacity"], n["live_sessions"], n["load"],
                          n["memory_mb"], n["reserved_mb"])
                for n in await self._nodes()
                if n["state"] == "connected" and (self.bus.shared or n["name"] in self.commands)]

    # the queue: sessions waiting for an LSS with room -----------------------------------------

    async def _dispatch_loop(self) -> None:
        """Dispatch whenever an LSS slot may have freed (a session ended, a heartbeat came) and
        at least every DISPATCH_TICK (queue timeouts, newly attached LSS). A failed pass is
        logged and retried after a growing pause (up to 30 s); only cancellation ends the loop."""
        pause = DISPATCH_TICK
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue_changed.wait(), pause)
            self.queue_changed.clear()
            try:
                await self._dispatch()
                pause = DISPATCH_TICK
            except Exception:
                log.exception("session queue: dispatch pass failed; retrying")
                pause = min(pause * 2, 30.0)

    async def _dispatch(self) -> None:
        """Place queued sessions first come, first served while an LSS has room, fail those
        that waited past the queue timeout, and tell the others their new place. One replica
        at a time: two would each see room for one more session on the same LSS."""
        async with self.placement, self.bus.exclusive(PLACEMENT_LOCK):
            queued = await self.db.run(projects.queued_sessions)
            if not queued:
                self.queue_positions = {}
                return
            nodes = await self._candidates()
            limit = self.settings.queue_timeout_seconds
            cutoff = utcnow() - timedelta(seconds=limit)
            waiting: list[str] = []
            for record, session_type in queued:
                try:
                    if record.created_at < cutoff:
                        await self._end_queued(
                            record.id, "failed", f"no session node had room for {limit:g} s "
                            "(the queue timeout, queue_timeout_seconds); try again later")
                    elif waiting or not await self._place(
                            record.id, record.project_id, session_type, nodes):
                        waiting.append(record.id)
                except Exception as exc:  # this session fails; the queue goes on
                    if isinstance(exc, ActionError) and exc.status >= 500:
                        raise  # the database, not this session: the whole pass is retried
                    log.exception("session queue: cannot place session %s", record.id)
                    await self._end_queued(record.id, "failed",
                                           f"could not be placed on a session node: {exc}")
            await self._announce(waiting, sum(n.capacity for n in nodes))

    async def _place(self, session: str, project: str, session_type: str,
                     nodes: list[Candidate]) -> bool:
        """Start the session on the least loaded LSS with room (counted in `nodes`); False if
        none has room, True once it no longer waits (placed, or closed meanwhile)."""
        if session_type not in SESSION_TYPES:
            raise ValueError(f"its project's session type {session_type!r} is not offered "
                             f"any more (known: {', '.join(SESSION_TYPES)})")
        needs = SESSION_TYPE_NEEDS[session_type]
        while (lss := choose_lss(nodes, needs)) is not None:
            if not await self.db.run(lambda s: projects.place_session(s, session, lss)):
                return True
            if self.command(lss, start_command(session, project, session_type)):
                log.info("session %s placed on %s", session, lss)
                self.publish(session, {"type": "placed", "session": session,
                                       "state": "starting"})
                nodes[:] = [n.with_session(needs) if n.name == lss else n for n in nodes]
                return True
            # the LSS went away since `nodes` was read: back in the queue, try the others
            await self.db.run(lambda s: projects.requeue_session(s, session, lss))
            nodes[:] = [n for n in nodes if n.name != lss]
        return False

    async def _end_queued(self, session: str, state: str, reason: str) -> bool:
        """End a still-queued session and tell its subscribers; False if it was not queued."""
        if not await self.db.run(
                lambda s: projects.end_queued_session(s, session, state, reason)):
            return False
        if state == "failed":
            log.warning("session %s failed in the queue: %s", session, reason)
        self.publish(session, {"type": state, "session": session, "state": state,
                               "reason": reason})
        return True

    async def _announce(self, waiting: list[str], capacity: int) -> None:
        """Tell each waiting session its place when it changed (1: next), with an ETA."""
        positions = {session: place for place, session in enumerate(waiting, 1)}
        moved = [s for s, place in positions.items() if self.queue_positions.get(s) != place]
        self.queue_positions = positions
        if moved:
            per_place = seconds_per_place(capacity, await self.db.run(
                projects.recent_session_seconds))
            for session in moved:
                self.publish(session, queue_event(session, positions[session], per_place))

    async def _queue_snapshot(self, session: str) -> dict[str, Any] | None:
        """A queued session's place and ETA now (for a new subscriber), else None."""
        def read(s: Tx) -> tuple[list[str], list[float]]:
            return ([r.id for r, _ in projects.queued_sessions(s)],
                    projects.recent_session_seconds(s))
        order, recent = await self.db.run(read)
        if session not in order:
            return None
        capacity = sum(n.capacity for n in await self._candidates())
        return queue_event(session, order.index(session) + 1,
                           seconds_per_place(capacity, recent))

    @action(public=True, allow=())
    async def list_sessions(self, call: Call, params: NoParams) -> dict[str, Any]:
        me: Principal = call.principal
        records = await self.db.run(
            lambda s: [session_view(r) for r in
                       projects.sessions_visible_to(s, s.get_one(User, me.id))])
        return {"sessions": records}

    async def _visible_session(self, me: Principal, session: str
                               ) -> tuple[SessionRecord, str]:
        """The session and my role on its project; "no session X" whether it is missing or
        not mine, so session ids of other users' projects stay secret."""
        def read(s: Tx) -> tuple[SessionRecord | None, str | None]:
            record = s.get(SessionRecord, session)
            if record is None:
                return None, None
            return record, projects.role_of(s, s.get_one(User, me.id), record.project_id)
        record, role = await self.db.run(read)
        if record is None or role is None:
            raise not_found("session", session)
        return record, role

    @action(public=True, allow=())
    async def close_session(self, call: Call, params: SessionRef) -> dict[str, Any]:
        record, role = await self._visible_session(call.principal, params.session)
        if record.opened_by != call.principal.id:
            require(role, "editor", "closing a session", record.project_id)
        state = record.state
        if state in LIVE_STATES:
            state = await self._close(record.id, record.lss_id,
                                      f"closed by {call.principal.name}")
        return {"id": record.id, "state": state}

    async def _close(self, session: str, lss: str | None, reason: str) -> str:
        """Stop the session (closing until its LSS confirms); a queued one leaves the queue.
        Returns the state it is in now."""
        if lss is None:
            if await self._end_queued(session, "closed", reason):
                return "closed"
            lss = (await self.db.run(lambda s: projects.get_session(s, session))).lss_id
        sent = lss is not None and self.command(lss, {"type": "stop_session",
                                                      "session": session})
        state = "closing" if sent else "closed"
        await self.db.run(lambda s: projects.set_session_state(s, session, state,
                                                               reason=reason))
        self.publish(session, {"type": state, "session": session, "state": state,
                               "reason": reason})
        return state

    @action(public=True, allow=())
    async def list_nodes(self, call: Call, params: NoParams) -> dict[str, Any]:
        """The session nodes (LSS) with their state, capacity and load: for administrators."""
        if not call.principal.admin:
            raise forbidden("listing session nodes is for administrators")
        return {"nodes": await self._nodes()}

    async def refresh_metrics(self) -> None:
        self.stats.set_sessions(await self.db.run(projects.session_counts))
        self.stats.set_nodes(await self._nodes())

    async def _nodes(self) -> list[dict[str, Any]]:
        """Every session node with its state, capacity, reservations and load."""
        def read(s: Tx) -> list[dict[str, Any]]:
            live = projects.live_session_types(s)
            return [{"name": n.id, "state": n.state, "capacity": n.capacity,
                     "live_sessions": sum(live.get(n.id, {}).values()),
                     "memory_mb": n.memory_mb, "reserved_mb": reserved_mb(live.get(n.id, {})),
                     "load": n.load or {}, "last_heartbeat": n.last_heartbeat.isoformat()}
                    for n in projects.all_lss(s)]
        return await self.db.run(read)

    # internal: the relay ----------------------------------------------------------------------

    @action(allow=("relay",))
    async def session_access(self, call: Call, params: SessionAccess) -> dict[str, Any]:
        """May this token's user use this session, and where are its services? The relay keeps
        the answer for the socket until `access_changes` tells it to ask again."""
        def check(s: Tx) -> dict[str, Any]:
            found = accounts.live_token(s, params.token)
            if found is None:
                raise unauthorized("the token is invalid, expired or revoked")
            user, token = found
            record = s.get(SessionRecord, params.session)
            role = projects.role_of(s, user, record.project_id) if record else None
            if record is None or role is None:
                raise NotFound(f"no session {params.session}")
            return {"user": user.name, "token_id": str(token.id),
                    "expires_at": token.expires_at.timestamp(), "project": record.project_id,
                    "role": role, "state": record.state, "reason": record.reason,
                    "services": record.services or {}}
        try:
            return await self.db.run(check)
        except ActionError as err:
            if err.status == 404:
                raise not_found("session", params.session) from err
            raise

    @action(allow=("relay",))
    async def access_changes(self, call: Call, params: NoParams
                             ) -> AsyncIterator[dict[str, Any]]:
        """Every change of who may use what, as it happens: the relay's cue to re-check."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self.access_watchers.add(queue)
        try:
            yield {"kind": "subscribed", "id": "*"}
            while True:
                yield await queue.get()
        finally:
            self.access_watchers.discard(queue)

    @action(allow=("auth",))
    async def access_change(self, call: Call, params: AccessChange) -> dict[str, Any]:
        """auth reports a logout, a password change, a disabled user or a group change."""
        self.access_changed(params.kind, params.id)
        return {"ok": True}

    @action(allow=("relay",))
    async def session_events(self, call: Call, params: SessionRef
                             ) -> AsyncIterator[dict[str, Any]]:
        """The session's state now, then every event as it happens."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self.subscribers[params.session].add(queue)
        try:
            record = await self.db.run(lambda s: projects.get_session(s, params.session))
            yield state_event(record)
            if record.state == "queued" and (place := await self._queue_snapshot(record.id)):
                yield place
            while True:
                yield await queue.get()
        finally:
            self.subscribers[params.session].discard(queue)
            if not self.subscribers[params.session]:
                del self.subscribers[params.session]

    @action(allow=("relay",))
    async def tunnel_call(self, call: Call, params: TunnelCall) -> Any:
        """A relay call to a compute service behind NAT, carried over its LSS's link."""
        def read(s: Tx) -> tuple[SessionRecord, bool]:
            record = projects.get_session(s, params.session)
            node = s.get(LssNode, record.lss_id) if record.lss_id else None
            return record, node is not None and node.state == "connected"
        record, connected = await self.db.run(read)
        call_id = secrets.randbits(62)  # unique among the replicas' calls too
        reply = self.tunnel_replies[call_id] = asyncio.get_running_loop().create_future()
        try:  # (not connected: with replicas, no replica would carry the call)
            if record.lss_id is None or not connected or not self.command(record.lss_id, {
                    "type": "call", "call_id": call_id, **params.model_dump()}):
                raise ActionError(503, "unavailable", f"LSS {record.lss_id} is not connected")
            answer = await asyncio.wait_for(reply, 600)
        except asyncio.CancelledError:  # the relay's caller is gone: the LSS stops the call
            if record.lss_id is not None:
                self.command(record.lss_id, {"type": "cancel_call", "call_id": call_id})
            raise
        except TimeoutError as exc:
            raise ActionError(504, "timeout", f"{params.service} did not answer") from exc
        finally:
            self.tunnel_replies.pop(call_id, None)
        if "error" in answer:
            raise ActionError.from_message(answer["error"])
        return answer.get("result")

    @action(allow=("lss",))
    async def tunnel_result(self, call: Call, params: TunnelResult) -> dict[str, Any]:
        """A tunnelled call's answer, to the replica whose relay waits for it."""
        answer = params.model_dump()
        waiting = self.tunnel_replies.get(params.call_id)
        if waiting is None:
            self.bus.publish({"topic": "tunnel", "answer": answer})
        elif not waiting.done():
            waiting.set_result(answer)
        return {"ok": True}

    # internal: LSS nodes --------------------------------------------------------------------

    @action(allow=("lss",))
    async def lss_attach(self, call: Call, params: LssHello) -> AsyncIterator[dict[str, Any]]:
        """An LSS's control channel: register it, reconcile sessions, then stream commands.

        Reconciling: a session it runs that should not run is stopped; one still starting that
        it does not run is started (its start command may have been lost with a replica it was
        linked to); a ready one it does not run any more is lost."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.commands[params.name] = queue
        running = set(params.sessions)

        def register(s: Tx) -> tuple[list[str], list[dict[str, Any]], list[str]]:
            projects.upsert_lss(s, params.name, params.capacity, params.load, params.memory_mb)
            known = {r.id: r for r in projects.sessions_of_lss(s, params.name, states=LIVE_STATES)}
            vanished, starts = [], []
            for sid, record in known.items():
                if sid in running:
                    continue
                session_type = projects.get_project(s, record.project_id).session_type
                if record.state == "starting" and session_type in SESSION_TYPES:
                    starts.append(start_command(sid, record.project_id, session_type))
                else:
                    projects.set_session_state(s, sid, "lost", reason=f"LSS {params.name} "
                                               "reconnected without it")
                    vanished.append(sid)
            return vanished, starts, [sid for sid in running if sid not in known]

        vanished, starts, unwanted = await self.db.run(register)
        for sid in vanished:
            self.publish(sid, {"type": "lost", "session": sid, "state": "lost",
                               "reason": f"LSS {params.name} reconnected without it"})
        for command in starts:
            queue.put_nowait(command)
        for sid in unwanted:
            queue.put_nowait({"type": "stop_session", "session": sid})
        self.queue_moved()  # its room may take queued sessions now
        log.info("LSS %s attached (capacity %d, running %d)", params.name, params.capacity,
                 len(running))
        try:
            yield {"type": "attached", "lss": params.name}
            while True:
                yield await queue.get()
        finally:
            if self.commands.get(params.name) is queue:
                del self.commands[params.name]
            log.info("LSS %s detached", params.name)

    @action(allow=("lss",))
    async def lss_heartbeat(self, call: Call, params: LssHeartbeat) -> dict[str, Any]:
        await self.db.run(lambda s: projects.record_heartbeat(s, params.name, params.load))
        self.queue_moved()  # its load changed: a queued session may fit now
        return {"ok": True}

    @action(allow=("lss",))
    async def session_event(self, call: Call, params: SessionEvent) -> dict[str, Any]:
        """Progress from an LSS: move the session's state and tell its subscribers."""
        event = params.model_dump()
        new_state = {"ready": "ready", "failed": "failed", "closed": "closed"}.get(params.type)

        def apply(s: Tx) -> tuple[str, str | None, float] | None:
            """The new state; and the session type and time since it was opened where this
            ends its start (starting -> ready or failed)."""
            record = projects.get_session(s, params.session)
            if record.lss_id != params.lss:
                raise forbidden(f"session {params.session} is not on LSS {params.lss}")
            if new_state is None or record.state not in (*LIVE_STATES, "closing"):
                return None
            start_ended = record.state == "starting" and new_state in ("ready", "failed")
            projects.set_session_state(s, params.session, new_state,
                                       reason=event.get("reason"),
                                       services=event.get("services"))
            if not start_ended:
                return new_state, None, 0.0
            return (new_state, projects.get_project(s, record.project_id).session_type,
                    (utcnow() - record.created_at).total_seconds())

        changed = await self.db.run(apply)
        if changed is not None:
            event["state"], session_type, seconds = changed
            if session_type is not None:
                self.stats.session_start_seconds.labels(session_type, event["state"]) \
                    .observe(seconds)
        self.publish(params.session, event)
        return {"ok": True}

    async def _sweep_silent_lss(self) -> None:
        """Mark LSS nodes lost after `timeout` without heartbeats.

        A freshly (re)started GSS first waits one timeout: while it was down no heartbeat could
        arrive, and its nodes need that long to reconnect. A sweep that fails (a busy database,
        a bug) is logged and the next one tries again: only cancellation ends the loop.
        """
        timeout = self.settings.lss_timeout_seconds
        await asyncio.sleep(timeout)
        while True:
            await asyncio.sleep(min(1.0, timeout / 5))
            cutoff = utcnow() - timedelta(seconds=timeout)
            try:
                lost = await self.db.run(
                    functools.partial(projects.mark_silent_lss_lost, older_than=cutoff))
            except ActionError as exc:
                log.warning("LSS sweep: %s", exc.message)
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("LSS sweep failed")
                continue
            for lss, sessions in lost.items():
                log.warning("LSS %s lost: no heartbeat for %.0f s", lss, timeout)
                for sid in sessions:
                    self.publish(sid, {"type": "lost", "session": sid, "state": "lost",
                                       "reason": f"LSS {lss} stopped sending heartbeats"})
