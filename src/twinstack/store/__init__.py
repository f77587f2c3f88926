"""TwinStack's metadata store: SQL tables through SQLAlchemy, schema through Alembic.

SQLite (one file, WAL) by default, PostgreSQL when several machines share the state. The
repository functions live in `twinstack.store.accounts` (users, groups, tokens) and
`twinstack.store.projects` (projects, shares, sessions, LSS nodes); they take an ORM session
from `Database.transaction()` and never commit themselves.
"""

from twinstack.store.db import Database, sqlite_url
from twinstack.store.errors import Conflict, Invalid, NotFound, StoreError
from twinstack.store.models import (
    LIVE_STATES,
    ROLES,
    SESSION_STATES,
    Base,
    Group,
    LssNode,
    Membership,
    Project,
    SessionRecord,
    Share,
    Token,
    User,
)

__all__ = [
    "LIVE_STATES",
    "ROLES",
    "SESSION_STATES",
    "Base",
    "Conflict",
    "Database",
    "Group",
    "Invalid",
    "LssNode",
    "Membership",
    "NotFound",
    "Project",
    "SessionRecord",
    "Share",
    "StoreError",
    "Token",
    "User",
    "sqlite_url",
]
