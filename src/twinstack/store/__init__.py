"""TwinStack's metadata store: SQL tables through SQLAlchemy, schema through Alembic.

SQLite (one file, WAL) by default, PostgreSQL when several machines share the state. The
repository functions live in `twinstack.store.accounts` (users, groups, tokens) and
`twinstack.store.projects` (projects, shares, sessions, LSS nodes); they take an ORM session
from `Database.transaction()` and never commit themselves.
"""

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinstack.store.errors import Conflict, Invalid, NotFound, StoreError

if TYPE_CHECKING:
    from twinstack.store.db import Database
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

_SQL_NAMES = {"Database": "db", **dict.fromkeys(
    ["LIVE_STATES", "ROLES", "SESSION_STATES", "Base", "Group", "LssNode", "Membership",
     "Project", "SessionRecord", "Share", "Token", "User"], "models")}


def sqlite_url(data_dir: Path) -> str:
    """The default embedded database inside a service's data directory."""
    return f"sqlite:///{(Path(data_dir) / 'twinstack.db').resolve()}"


def __getattr__(name: str) -> Any:
    """The SQL layer loads on first use: services that only keep blobs start without it."""
    if name not in _SQL_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"twinstack.store.{_SQL_NAMES[name]}"), name)


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
