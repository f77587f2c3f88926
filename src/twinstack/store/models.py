"""SQL tables of TwinStack's metadata: accounts, project ACLs, sessions and LSS nodes.

Every datetime is timezone-aware UTC in Python whatever the backend stores. JSON columns are
not mutation-tracked: assign a new dict instead of changing one in place.
"""

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ROLES = ("viewer", "editor", "owner")
"""Project roles, weakest first: a higher index grants everything a lower one does."""
SESSION_STATES = ("queued", "starting", "ready", "failed", "closing", "closed", "lost")
LIVE_STATES = ("queued", "starting", "ready")
"""A project has at most one live session, which new clients join; `queued` ones wait for an
LSS with room (no `lss_id` yet) and hold no capacity."""
FINAL_STATES = ("failed", "closed", "lost")
LSS_STATES = ("connected", "lost")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def sql_in(column: str, values: tuple[str, ...]) -> str:
    """`column IN ('a', 'b')` for CHECK constraints and partial indexes (constants only)."""
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends: SQLite keeps naive UTC text, PostgreSQL timestamptz.

    A naive datetime is refused rather than guessed, because local-vs-UTC mix-ups would make
    token expiry and heartbeat timeouts silently wrong.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base; the naming convention gives constraints the same names on every backend
    so migrations can refer to them."""

    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime, dict[str, Any]: JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    admin: Mapped[bool] = mapped_column(default=False)
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"User({self.name!r})"


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"),
                                          primary_key=True)


class Token(Base):
    """A bearer token; only the sha256 of the secret is kept, so a leaked table grants nothing."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    session_type: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Share(Base):
    """A role on a project granted to one user or one group (never both)."""

    __tablename__ = "shares"
    __table_args__ = (
        UniqueConstraint("project_id", "user_id"),
        UniqueConstraint("project_id", "group_id"),
        CheckConstraint(sql_in("role", ROLES), name="role"),
        CheckConstraint("(user_id IS NULL) <> (group_id IS NULL)", name="one_grantee"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))


class Invitation(Base):
    """A share with a user or group name that has no account yet; it becomes a Share when one
    is created. Sharing answers the same whether a name exists or not, so owners cannot probe
    which accounts exist."""

    __tablename__ = "invitations"
    __table_args__ = (
        UniqueConstraint("project_id", "user_name"),
        UniqueConstraint("project_id", "group_name"),
        CheckConstraint(sql_in("role", ROLES), name="role"),
        CheckConstraint("(user_name IS NULL) <> (group_name IS NULL)", name="one_grantee"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_name: Mapped[str | None] = mapped_column(String(64), index=True)
    group_name: Mapped[str | None] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))


class LoginFailures(Base):
    """Failed logins counted per key (a user, an address, or both), for throttling."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    blocked_until: Mapped[datetime | None]


class LssNode(Base):
    """A local session service as the GSS last heard from it."""

    __tablename__ = "lss_nodes"
    __table_args__ = (CheckConstraint(sql_in("state", LSS_STATES), name="state"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="connected")
    capacity: Mapped[int]
    # what its sessions may take in all, in MB (None: it did not say)
    memory_mb: Mapped[float | None] = mapped_column(Double)
    load: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_heartbeat: Mapped[datetime] = mapped_column(default=utcnow)
    connected_at: Mapped[datetime] = mapped_column(default=utcnow)


class SessionRecord(Base):
    """A session of compute services for one project (named so as not to clash with ORM Session).

    The partial unique index lets at most one session per project be live, enforced by the
    database itself so two GSS processes opening the same project cannot both win.
    """

    __tablename__ = "sessions"
    __table_args__ = (
        CheckConstraint(sql_in("state", SESSION_STATES), name="state"),
        Index("uq_sessions_live_project", "project_id", unique=True,
              sqlite_where=text(sql_in("state", LIVE_STATES)),
              postgresql_where=text(sql_in("state", LIVE_STATES))),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    opened_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    lss_id: Mapped[str | None] = mapped_column(ForeignKey("lss_nodes.id", ondelete="SET NULL"),
                                               index=True)
    state: Mapped[str] = mapped_column(String(16), default="starting",
                                       index=True)  # the queue is read by state, every second
    reason: Mapped[str | None] = mapped_column(Text)
    services: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    placed_at: Mapped[datetime | None]  # when it got an LSS (queue wait = placed - created)
    closed_at: Mapped[datetime | None]


# --- project history (see twinstack.store.history for the scheme) ----------------------------

ENTITY_KINDS = ("geometry", "material", "mesh", "source", "solver", "result", "plot", "folder",
                "data")


class Entity(Base):
    """An object of a project's model; what it is called and holds lives in its versions."""

    __tablename__ = "entities"
    __table_args__ = (CheckConstraint(sql_in("kind", ENTITY_KINDS), name="kind"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EntityVersion(Base):
    """One immutable version of an entity: name, place in the tree, properties, blob hashes."""

    __tablename__ = "entity_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    entity_id: Mapped[str] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"),
                                           index=True)
    name: Mapped[str] = mapped_column(String(256))
    parent_id: Mapped[str | None] = mapped_column(String(32))  # the folder entity, if any
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    blobs: Mapped[dict[str, Any]] = mapped_column(default=dict)  # role -> sha256
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelState(Base):
    """A commit: its parent, who made it, when, and the operation in one line. `depth` is the
    distance from the project's root; a `checkpoint` state also keeps a full snapshot."""

    __tablename__ = "model_states"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_states.id"), index=True)
    depth: Mapped[int]
    checkpoint: Mapped[bool]
    author: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StateChange(Base):
    """What one state changed against its parent: an entity's new version, or NULL (deleted)."""

    __tablename__ = "state_changes"

    state_id: Mapped[int] = mapped_column(ForeignKey("model_states.id", ondelete="CASCADE"),
                                          primary_key=True)
    entity_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("entity_versions.id"))


class StateSnapshot(Base):
    """The full entity → version map of a checkpoint state, as one JSON object: a checkout
    reads one row and parses it, instead of fetching one row per entity."""

    __tablename__ = "state_snapshots"

    state_id: Mapped[int] = mapped_column(ForeignKey("model_states.id", ondelete="CASCADE"),
                                          primary_key=True)
    entries: Mapped[dict[str, Any]]


class ProjectBlob(Base):
    """A blob that belongs to a project (named by one of its entity versions, or made for it:
    an export, a picture): what the project's participants may download by hash."""

    __tablename__ = "project_blobs"

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelHead(Base):
    """Where a project stands (`state_id`) and the end of the branch it stands on (`tip_id`):
    undo walks from the head towards the root, redo back towards the tip."""

    __tablename__ = "model_heads"

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            primary_key=True)
    state_id: Mapped[int] = mapped_column(ForeignKey("model_states.id"))
    tip_id: Mapped[int] = mapped_column(ForeignKey("model_states.id"))


class ModelLabel(Base):
    __tablename__ = "model_labels"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    state_id: Mapped[int] = mapped_column(ForeignKey("model_states.id", ondelete="CASCADE"),
                                          index=True)
