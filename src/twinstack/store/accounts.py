"""Users, groups and bearer tokens: what the auth service keeps.

Passwords are stored as argon2id hashes and token secrets only as sha256 digests, so a copy
of the database lets nobody log in. Functions flush but never commit: the caller's
`Database.transaction()` decides.
"""

import functools
import hashlib
import re
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from twinstack.store.errors import Invalid, NotFound, conflict_on_integrity
from twinstack.store.models import Group, Invitation, Membership, Share, Token, User, utcnow

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MIN_PASSWORD = 8
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against for unknown names, so the answer takes as long as for real ones."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise Invalid(f"{kind} name {name!r} is not valid: use 1 to 64 letters, digits, "
                      "'_', '.' or '-'")


def _hash_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise Invalid(f"the password is too short: use at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


# --- users ---------------------------------------------------------------------------------

def _accept_invitations(s: Session, kind: str, name: str, account_id: int) -> None:
    """Turn the invitations waiting for a new account's name into its shares."""
    column = Invitation.user_name if kind == "user" else Invitation.group_name
    for invitation in s.scalars(select(Invitation).where(column == name)):
        s.add(Share(project_id=invitation.project_id, role=invitation.role,
                    **{f"{kind}_id": account_id}))
    s.execute(delete(Invitation).where(column == name))
    s.flush()


def add_user(s: Session, name: str, password: str, *, admin: bool = False) -> User:
    _check_name("user", name)
    user = User(name=name, password_hash=_hash_password(password), admin=admin, disabled=False)
    with conflict_on_integrity(s, f"user {name!r} already exists"):
        s.add(user)
    _accept_invitations(s, "user", name, user.id)
    return user


def get_user(s: Session, name: str) -> User:
    user = s.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user named {name!r}")
    return user


def list_users(s: Session) -> list[User]:
    return list(s.scalars(select(User).order_by(User.name)))


def set_password(s: Session, name: str, password: str) -> None:
    """Replace a password; tokens already issued stay valid (revoke them separately)."""
    user = get_user(s, name)
    user.password_hash = _hash_password(password)
    s.flush()


def set_disabled(s: Session, name: str, disabled: bool) -> None:
    """A disabled user cannot log in and their tokens stop resolving, without deleting data."""
    get_user(s, name).disabled = disabled
    s.flush()


def check_password(s: Session, name: str, password: str) -> User | None:
    """The user if the password is right and the account enabled, else None (no reason given).

    The hasher runs even for unknown names so timing does not tell which names exist; an
    outdated hash (weaker parameters) is replaced on a successful login.
    """
    user = s.scalar(select(User).where(User.name == name))
    try:
        _hasher.verify(user.password_hash if user else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
        s.flush()
    return user


# --- groups --------------------------------------------------------------------------------

def add_group(s: Session, name: str) -> Group:
    _check_name("group", name)
    group = Group(name=name)
    with conflict_on_integrity(s, f"group {name!r} already exists"):
        s.add(group)
    _accept_invitations(s, "group", name, group.id)
    return group


def get_group(s: Session, name: str) -> Group:
    group = s.scalar(select(Group).where(Group.name == name))
    if group is None:
        raise NotFound(f"no group named {name!r}")
    return group


def _ids(s: Session, group: Group | str, user: User | str) -> tuple[int, int]:
    g = get_group(s, group) if isinstance(group, str) else group
    u = get_user(s, user) if isinstance(user, str) else user
    return g.id, u.id


def add_member(s: Session, group: Group | str, user: User | str) -> None:
    """Put a user in a group (objects or names); adding an existing member changes nothing."""
    group_id, user_id = _ids(s, group, user)
    if s.get(Membership, (user_id, group_id)) is None:
        with conflict_on_integrity(s, "the membership was added concurrently; try again"):
            s.add(Membership(user_id=user_id, group_id=group_id))


def remove_member(s: Session, group: Group | str, user: User | str) -> bool:
    """Take a user out of a group; False if they were not in it."""
    group_id, user_id = _ids(s, group, user)
    membership = s.get(Membership, (user_id, group_id))
    if membership is None:
        return False
    s.delete(membership)
    s.flush()
    return True


def list_groups(s: Session) -> list[tuple[Group, list[str]]]:
    """Every group with the sorted names of its members."""
    members: dict[int, list[str]] = {}
    rows = s.execute(select(Membership.group_id, User.name)
                     .join(User, User.id == Membership.user_id).order_by(User.name))
    for group_id, user_name in rows:
        members.setdefault(group_id, []).append(user_name)
    return [(g, members.get(g.id, [])) for g in s.scalars(select(Group).order_by(Group.name))]


def group_ids_of(s: Session, user_id: int) -> set[int]:
    return set(s.scalars(select(Membership.group_id).where(Membership.user_id == user_id)))


# --- tokens --------------------------------------------------------------------------------

def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_token(s: Session, user: User, ttl: timedelta) -> str:
    """A new bearer secret for the user, valid for `ttl`; it is returned once and never stored."""
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    s.add(Token(user_id=user.id, token_hash=_digest(secret), created_at=now, expires_at=now + ttl))
    s.flush()
    return secret


def live_token(s: Session, secret: str) -> tuple[User, Token] | None:
    """The token and its user, or None if it is unknown, expired, revoked or its user disabled."""
    row = s.execute(select(Token, User).join(User, User.id == Token.user_id)
                    .where(Token.token_hash == _digest(secret))).first()
    if row is None:
        return None
    token, user = row
    if token.revoked_at is not None or token.expires_at <= utcnow() or user.disabled:
        return None
    return user, token


def resolve_token(s: Session, secret: str) -> User | None:
    """The token's user, or None if the token is unknown, expired, revoked or its user disabled."""
    found = live_token(s, secret)
    return found[0] if found else None


def revoke_token(s: Session, secret: str) -> bool:
    """Revoke one token (logout); False if it was unknown or already revoked."""
    result = s.execute(update(Token)
                       .where(Token.token_hash == _digest(secret), Token.revoked_at.is_(None))
                       .values(revoked_at=utcnow()))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def revoke_user_tokens(s: Session, user_id: int) -> int:
    """Revoke every live token of a user (password change, compromise); returns how many."""
    result = s.execute(update(Token)
                       .where(Token.user_id == user_id, Token.revoked_at.is_(None))
                       .values(revoked_at=utcnow()))
    return int(result.rowcount)  # type: ignore[attr-defined]
