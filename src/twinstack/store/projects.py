"""Projects and their ACLs, sessions, and the LSS nodes sessions run on: what the gss keeps.

Functions flush but never commit: the caller's `Database.transaction()` decides.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Update, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from twinstack.store.accounts import NAME
from twinstack.store.errors import Conflict, Invalid, NotFound, conflict_on_integrity
from twinstack.store.models import (
    FINAL_STATES,
    LIVE_STATES,
    ROLES,
    SESSION_STATES,
    Group,
    Invitation,
    LssNode,
    Membership,
    Project,
    SessionRecord,
    Share,
    User,
    utcnow,
)

_RANK = {role: rank for rank, role in enumerate(ROLES)}


def _text(kind: str, value: str, limit: int) -> str:
    value = value.strip() if isinstance(value, str) else ""
    if not value or len(value) > limit:
        raise Invalid(f"{kind} must be 1 to {limit} characters")
    return value


# --- projects and ACLs -----------------------------------------------------------------------

def create_project(s: Session, owner: User, name: str, session_type: str) -> Project:
    name = _text("a project name", name, 128)
    project = Project(name=name, session_type=_text("a session type", session_type, 64),
                      owner_id=owner.id)
    with conflict_on_integrity(s, f"user {owner.name!r} already has a project named {name!r}"):
        s.add(project)
    return project


def get_project(s: Session, project_id: str) -> Project:
    project = s.get(Project, project_id)
    if project is None:
        raise NotFound(f"no project with id {project_id!r}")
    return project


def rename_project(s: Session, project_id: str, name: str) -> Project:
    project = get_project(s, project_id)
    name = _text("a project name", name, 128)
    with conflict_on_integrity(s, f"the owner already has a project named {name!r}"):
        project.name = name
    return project


def delete_project(s: Session, project_id: str) -> None:
    """Delete a project; the database cascades its shares and sessions."""
    s.delete(get_project(s, project_id))
    s.flush()


def _granted_to(user: User) -> ColumnElement[bool]:
    """Shares that reach the user directly or through one of their groups."""
    groups = select(Membership.group_id).where(Membership.user_id == user.id)
    return or_(Share.user_id == user.id, Share.group_id.in_(groups))


def role_of(s: Session, user: User, project_id: str) -> str | None:
    """The user's role on a project: owner, else the highest shared role; None without access.

    Admins get no implicit role here; the services decide what admins may override.
    """
    owner_id = s.scalar(select(Project.owner_id).where(Project.id == project_id))
    if owner_id is None:
        return None
    if owner_id == user.id:
        return "owner"
    roles = s.scalars(select(Share.role).where(Share.project_id == project_id, _granted_to(user)))
    return max(roles, key=_RANK.__getitem__, default=None)


def visible_projects(s: Session, user: User) -> list[tuple[Project, str]]:
    """The projects the user has a role in, with that role, sorted by name."""
    owned = s.scalars(select(Project).where(Project.owner_id == user.id))
    best = {project.id: (project, "owner") for project in owned}
    shared = s.execute(select(Project, Share.role).join(Share, Share.project_id == Project.id)
                       .where(_granted_to(user), Project.owner_id != user.id))
    for project, role in shared:
        if project.id not in best or _RANK[role] > _RANK[best[project.id][1]]:
            best[project.id] = (project, role)
    return sorted(best.values(), key=lambda pair: (pair[0].name, pair[0].id))


def _grantee(s: Session, user: str | None, group: str | None
             ) -> tuple[dict[str, int] | None, dict[str, str]]:
    """Who a share names: (share columns if the account exists, invitation columns)."""
    if (user is None) == (group is None):
        raise Invalid("name exactly one of a user or a group")
    kind, name = ("user", user) if user is not None else ("group", group)
    assert name is not None
    if not NAME.fullmatch(name):
        raise Invalid(f"{kind} name {name!r} is not valid: use 1 to 64 letters, digits, "
                      "'_', '.' or '-'")
    model = User if kind == "user" else Group
    found = s.scalar(select(model.id).where(model.name == name))  # type: ignore[attr-defined]
    return ({f"{kind}_id": found} if found is not None else None), {f"{kind}_name": name}


def share_project(s: Session, project_id: str, *, user: str | None = None,
                  group: str | None = None, role: str) -> None:
    """Grant a role to a user or a group (by name); an existing share gets the new role.

    A name without an account yet becomes an invitation that turns into a share when the
    account is created: the answer is the same either way, so sharing reveals no account.
    """
    if role not in ROLES:
        raise Invalid(f"role {role!r} is not one of {', '.join(ROLES)}")
    get_project(s, project_id)
    account, name = _grantee(s, user, group)
    model: type[Share | Invitation] = Share if account is not None else Invitation
    columns: dict[str, Any] = account if account is not None else name
    grant = cast(Share | Invitation | None,
                 s.scalar(select(model).filter_by(project_id=project_id, **columns)))
    if grant is not None:
        grant.role = role
        s.flush()
        return
    with conflict_on_integrity(s, "the project was shared concurrently; try again"):
        s.add(model(project_id=project_id, role=role, **columns))


def unshare_project(s: Session, project_id: str, *, user: str | None = None,
                    group: str | None = None) -> bool:
    """Remove a user's or group's share (or invitation); False if there was none."""
    get_project(s, project_id)
    account, name = _grantee(s, user, group)
    grant = s.scalar(select(Share).filter_by(project_id=project_id, **account)) \
        if account is not None else \
        s.scalar(select(Invitation).filter_by(project_id=project_id, **name))
    if grant is None:
        return False
    s.delete(grant)
    s.flush()
    return True


def shares_of(s: Session, project_id: str) -> list[dict[str, Any]]:
    """The project's shares and invitations alike, as `{"user", "group", "role"}` by name."""
    get_project(s, project_id)
    rows = s.execute(select(User.name, Group.name, Share.role)
                     .outerjoin(User, User.id == Share.user_id)
                     .outerjoin(Group, Group.id == Share.group_id)
                     .where(Share.project_id == project_id).order_by(Share.id))
    invited = s.execute(select(Invitation.user_name, Invitation.group_name, Invitation.role)
                        .where(Invitation.project_id == project_id).order_by(Invitation.id))
    return [{"user": u, "group": g, "role": role} for u, g, role in [*rows, *invited]]


# --- sessions --------------------------------------------------------------------------------

def live_session(s: Session, project_id: str) -> SessionRecord | None:
    """The project's session in state starting or ready, which new clients join."""
    return s.scalar(select(SessionRecord).where(SessionRecord.project_id == project_id,
                                                SessionRecord.state.in_(LIVE_STATES)))


def create_session(s: Session, project_id: str, opened_by: User | int,
                   lss_id: str | None, *, state: str = "starting") -> SessionRecord:
    """A new session in `state` (starting, or queued: waiting for an LSS with room).

    Conflict if the project already has a live one, even one another process inserted a moment
    ago: the partial unique index decides, inside a SAVEPOINT, so the caller's transaction
    survives and can read `live_session()` to join it instead.
    """
    get_project(s, project_id)
    if lss_id is not None and s.get(LssNode, lss_id) is None:
        raise NotFound(f"no LSS named {lss_id!r}")
    if state not in ("queued", "starting") or (state == "queued" and lss_id is not None):
        raise Invalid(f"a new session is queued (without an LSS) or starting, not {state} "
                      f"on {lss_id}")
    user_id = opened_by if isinstance(opened_by, int) else opened_by.id
    record = SessionRecord(project_id=project_id, opened_by=user_id, lss_id=lss_id,
                           state=state, services={},
                           placed_at=utcnow() if lss_id is not None else None)
    try:
        with s.begin_nested():
            s.add(record)
    except IntegrityError as exc:
        if live_session(s, project_id) is None:
            raise
        raise Conflict(f"project {project_id} already has a live session; join it") from exc
    return record


def get_session(s: Session, session_id: str) -> SessionRecord:
    record = s.get(SessionRecord, session_id)
    if record is None:
        raise NotFound(f"no session with id {session_id!r}")
    return record


def set_session_state(s: Session, session_id: str, state: str, *, reason: str | None = None,
                      services: dict[str, Any] | None = None) -> SessionRecord:
    """Move a session to `state`, optionally with a reason and its services' details.

    A failed, closed or lost session is final: it cannot become live again (open a new one).
    """
    if state not in SESSION_STATES:
        raise Invalid(f"session state {state!r} is not one of {', '.join(SESSION_STATES)}")
    record = get_session(s, session_id)
    if record.state in FINAL_STATES and state not in FINAL_STATES:
        raise Conflict(f"session {session_id} is already {record.state}; open a new session")
    now = utcnow()
    with conflict_on_integrity(s, f"project {record.project_id} has another live session"):
        record.state, record.updated_at = state, now
        if reason is not None:
            record.reason = reason
        if services is not None:
            record.services = dict(services)
        if state in FINAL_STATES and record.closed_at is None:
            record.closed_at = now
    return record


# --- the queue of sessions waiting for an LSS ------------------------------------------------

def queued_sessions(s: Session) -> list[tuple[SessionRecord, str]]:
    """Sessions waiting for an LSS with their project's session type, first come first."""
    query = (select(SessionRecord, Project.session_type)
             .join(Project, Project.id == SessionRecord.project_id)
             .where(SessionRecord.state == "queued")
             .order_by(SessionRecord.created_at, SessionRecord.id))
    return [(record, session_type) for record, session_type in s.execute(query)]


def _changed(s: Session, statement: Update) -> bool:
    """Run a conditional UPDATE; True if it changed the one row it names."""
    return cast("CursorResult[Any]", s.execute(statement)).rowcount == 1


def place_session(s: Session, session_id: str, lss_id: str) -> bool:
    """Give a queued session its LSS (state starting); False if it is no longer queued (closed
    meanwhile). One conditional UPDATE, so a concurrent close and a placement cannot both win."""
    now = utcnow()
    return _changed(s, update(SessionRecord)
                    .where(SessionRecord.id == session_id, SessionRecord.state == "queued")
                    .values(state="starting", lss_id=lss_id, placed_at=now, updated_at=now))


def requeue_session(s: Session, session_id: str, lss_id: str) -> bool:
    """Undo `place_session` when the LSS went away before it got the start command."""
    return _changed(s, update(SessionRecord)
                    .where(SessionRecord.id == session_id, SessionRecord.state == "starting",
                           SessionRecord.lss_id == lss_id)
                    .values(state="queued", lss_id=None, placed_at=None, updated_at=utcnow()))


def end_queued_session(s: Session, session_id: str, state: str, reason: str) -> bool:
    """End a session that is still queued (closed, or failed at the queue timeout); False if it
    is not queued any more (placed or ended meanwhile)."""
    if state not in FINAL_STATES:
        raise Invalid(f"a queued session ends as one of {', '.join(FINAL_STATES)}, not {state}")
    now = utcnow()
    return _changed(s, update(SessionRecord)
                    .where(SessionRecord.id == session_id, SessionRecord.state == "queued")
                    .values(state=state, reason=reason, closed_at=now, updated_at=now))


def recent_session_seconds(s: Session, limit: int = 20) -> list[float]:
    """How long the last `limit` sessions that left their LSS held it, newest first: placed
    until ended, or until closing began (its slot is free from then on)."""
    ended = func.coalesce(SessionRecord.closed_at, SessionRecord.updated_at)
    query = (select(SessionRecord.placed_at, ended)
             .where(SessionRecord.state.not_in(LIVE_STATES), SessionRecord.placed_at.is_not(None))
             .order_by(ended.desc()).limit(limit))
    return [(end - placed).total_seconds() for placed, end in s.execute(query)
            if placed is not None]


def sessions_of_lss(s: Session, lss_id: str,
                    states: Iterable[str] = LIVE_STATES) -> list[SessionRecord]:
    query = select(SessionRecord).where(SessionRecord.lss_id == lss_id,
                                        SessionRecord.state.in_(tuple(states)))
    return list(s.scalars(query.order_by(SessionRecord.created_at)))


def sessions_visible_to(s: Session, user: User) -> list[SessionRecord]:
    """Sessions (any state) of the projects the user has a role in, oldest first."""
    ids = [project.id for project, _ in visible_projects(s, user)]
    query = select(SessionRecord).where(SessionRecord.project_id.in_(ids))
    return list(s.scalars(query.order_by(SessionRecord.created_at)))


# --- LSS nodes -------------------------------------------------------------------------------

def upsert_lss(s: Session, lss_id: str, capacity: int, load: dict[str, Any],
               memory_mb: float | None = None) -> LssNode:
    """Register an LSS that (re)connected: state connected, heartbeat and connect time now."""
    lss_id = _text("an LSS name", lss_id, 128)
    if not isinstance(capacity, int) or capacity < 0:
        raise Invalid(f"LSS capacity must be a whole number >= 0, not {capacity!r}")
    if memory_mb is not None and not memory_mb > 0:
        raise Invalid(f"the memory an LSS's sessions may take must be > 0 MB, not {memory_mb!r}")
    node = s.get(LssNode, lss_id) or LssNode(id=lss_id)
    now = utcnow()
    node.state, node.capacity, node.load = "connected", capacity, dict(load)
    node.memory_mb = memory_mb
    node.connected_at = node.last_heartbeat = now
    s.add(node)
    s.flush()
    return node


def record_heartbeat(s: Session, lss_id: str, load: dict[str, Any]) -> LssNode:
    """Store the load an LSS reported; a node marked lost that still beats is connected again
    (its sessions stay lost)."""
    node = s.get(LssNode, lss_id)
    if node is None:
        raise NotFound(f"no LSS named {lss_id!r}; it must connect before sending heartbeats")
    node.state, node.load, node.last_heartbeat = "connected", dict(load), utcnow()
    s.flush()
    return node


def mark_silent_lss_lost(s: Session, older_than: datetime) -> dict[str, list[str]]:
    """Mark connected LSS nodes whose last heartbeat is before `older_than` as lost, and their
    live sessions too; returns {newly lost LSS id: ids of the sessions it took with it}
    (row locks keep two GSS from both doing it)."""
    silent = select(LssNode).where(LssNode.state == "connected",
                                   LssNode.last_heartbeat < older_than)
    nodes = list(s.scalars(silent.order_by(LssNode.id).with_for_update()))
    now = utcnow()
    lost: dict[str, list[str]] = {}
    for node in nodes:
        node.state = "lost"
        lost[node.id] = [r.id for r in sessions_of_lss(s, node.id)]
        s.execute(update(SessionRecord)
                  .where(SessionRecord.lss_id == node.id, SessionRecord.state.in_(LIVE_STATES))
                  .values(state="lost", reason=f"LSS {node.id} stopped sending heartbeats",
                          closed_at=now, updated_at=now))
    s.flush()
    return lost


def all_lss(s: Session) -> list[LssNode]:
    return list(s.scalars(select(LssNode).order_by(LssNode.id)))


def session_counts(s: Session) -> dict[str, int]:
    """How many sessions are in each state (0 for a state none is in)."""
    counts = dict.fromkeys(SESSION_STATES, 0)
    rows = s.execute(select(SessionRecord.state, func.count()).group_by(SessionRecord.state))
    counts.update({str(state): int(n) for state, n in rows})
    return counts


def live_session_types(s: Session) -> dict[str, dict[str, int]]:
    """Live (starting or ready) sessions per LSS id and session type; {} for every known node
    without any."""
    found: dict[str, dict[str, int]] = {lss_id: {} for lss_id in s.scalars(select(LssNode.id))}
    rows = s.execute(select(SessionRecord.lss_id, Project.session_type, func.count())
                     .join(Project, Project.id == SessionRecord.project_id)
                     .where(SessionRecord.state.in_(LIVE_STATES),
                            SessionRecord.lss_id.is_not(None))
                     .group_by(SessionRecord.lss_id, Project.session_type))
    for lss_id, session_type, count in rows:
        found.setdefault(str(lss_id), {})[session_type] = int(count)
    return found
