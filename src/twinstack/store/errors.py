"""Errors of the data layer.

Services turn these into HTTP answers (NotFound → 404, Conflict → 409, Invalid → 400) and the
CLI into one-line messages, so each message says what is wrong in words a user can act on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class StoreError(Exception):
    """A store operation was refused; the message names the object and the problem."""


class NotFound(StoreError):
    """The named user, group, project, session or LSS does not exist."""


class Conflict(StoreError):
    """The write clashes with existing data (a duplicate name, a second live session)."""


class Invalid(StoreError):
    """An argument is malformed (bad name, short password, unknown role or state)."""


@contextmanager
def conflict_on_integrity(s: Session, message: str) -> Iterator[None]:
    """Flush the enclosed writes in a SAVEPOINT and turn a constraint violation into Conflict.

    The unique constraints are the real guard against concurrent writers; the SAVEPOINT keeps
    the caller's transaction usable after the violation (PostgreSQL aborts it otherwise).
    """
    from sqlalchemy.exc import IntegrityError  # here: the errors alone load no SQL layer

    try:
        with s.begin_nested():
            yield
    except IntegrityError as exc:
        raise Conflict(message) from exc
