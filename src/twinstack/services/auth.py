"""The authorization service: password login, bearer tokens, users and groups.

Clients log in on the public channel (`login` needs no token) and get a token that is stored
only as a hash, expires after --token-ttl-hours and can be revoked (`logout`, or disabling the
user). Operators manage users and groups through the internal channel with an `admin`
certificate; `twinstack user ...` uses these actions while the platform runs and the same store
functions directly on the database when it does not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session as Tx

from twinstack.services.database import ServiceDatabase
from twinstack.store import accounts
from twinstack.store.models import User
from twinstack.wire.actions import Call, action
from twinstack.wire.errors import unauthorized
from twinstack.wire.runtime import NoParams, Ports, ServiceBase

log = logging.getLogger(__name__)
ADMINS = ("admin",)


@dataclass(frozen=True)
class TokenHolder:
    id: int
    name: str
    admin: bool
    token: str


class Login(BaseModel):
    model_config = {"extra": "forbid"}
    user: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class NewUser(BaseModel):
    model_config = {"extra": "forbid"}
    name: str
    password: str
    admin: bool = False


class UserRef(BaseModel):
    model_config = {"extra": "forbid"}
    name: str


class NewPassword(UserRef):
    password: str


class Disable(UserRef):
    disabled: bool = True


class Membership(BaseModel):
    model_config = {"extra": "forbid"}
    group: str
    user: str
    remove: bool = False


def user_view(user: User) -> dict[str, Any]:
    return {"name": user.name, "admin": user.admin, "disabled": user.disabled,
            "created_at": user.created_at.isoformat()}


# Operator verbs as plain functions of a transaction: the `auth` actions below run them while
# the platform is up, and `twinstack user|group ...` runs them on the database when it is down.

def user_add(s: Tx, p: NewUser) -> dict[str, Any]:
    return user_view(accounts.add_user(s, p.name, p.password, admin=p.admin))


def user_list(s: Tx, p: NoParams) -> dict[str, Any]:
    return {"users": [user_view(u) for u in accounts.list_users(s)]}


def user_passwd(s: Tx, p: NewPassword) -> dict[str, Any]:
    """A new password also ends every session logged in with the old one."""
    accounts.set_password(s, p.name, p.password)
    revoked = accounts.revoke_user_tokens(s, accounts.get_user(s, p.name).id)
    return {"name": p.name, "tokens_revoked": revoked}


def user_disable(s: Tx, p: Disable) -> dict[str, Any]:
    """Disabling also revokes every token of the user, effective at once."""
    accounts.set_disabled(s, p.name, p.disabled)
    user = accounts.get_user(s, p.name)
    revoked = accounts.revoke_user_tokens(s, user.id) if p.disabled else 0
    return {"name": p.name, "disabled": p.disabled, "tokens_revoked": revoked}


def group_add(s: Tx, p: UserRef) -> dict[str, Any]:
    accounts.add_group(s, p.name)
    return {"name": p.name}


def group_list(s: Tx, p: NoParams) -> dict[str, Any]:
    return {"groups": [{"name": g.name, "members": members}
                       for g, members in accounts.list_groups(s)]}


def group_member(s: Tx, p: Membership) -> dict[str, Any]:
    (accounts.remove_member if p.remove else accounts.add_member)(s, p.group, p.user)
    return {"group": p.group, "user": p.user, "member": not p.remove}


ADMIN_OPERATIONS: dict[str, tuple[type[BaseModel], Callable[[Tx, Any], dict[str, Any]]]] = {
    op.__name__: (params, op) for op, params in (
        (user_add, NewUser), (user_list, NoParams), (user_passwd, NewPassword),
        (user_disable, Disable), (group_add, UserRef), (group_list, NoParams),
        (group_member, Membership))}


class AuthService(ServiceBase):
    name: ClassVar[str] = "auth"
    ports: ClassVar[Ports] = Ports(internal=7432, health=7433, public=7401)

    async def start(self) -> None:
        self.db = ServiceDatabase(self.settings)
        await self.db.open()

    async def stop(self) -> None:
        self.db.close()

    async def authenticate(self, token: str) -> TokenHolder | None:
        def resolve(s: Tx) -> TokenHolder | None:
            user = accounts.resolve_token(s, token)
            return TokenHolder(user.id, user.name, user.admin, token) if user else None
        return await self.db.run(resolve)

    @action(anonymous=True)
    async def login(self, call: Call, params: Login) -> dict[str, Any]:
        ttl = timedelta(hours=self.settings.token_ttl_hours)

        def check(s: Tx) -> dict[str, Any] | None:
            user = accounts.check_password(s, params.user, params.password)
            if user is None:
                return None
            token = accounts.issue_token(s, user, ttl)
            return {"token": token, "expires_in_s": ttl.total_seconds(),
                    "user": {"name": user.name, "admin": user.admin}}

        reply = await self.db.run(check)
        if reply is None:
            raise unauthorized("wrong user name or password, or the user is disabled")
        return reply

    @action(public=True, allow=())
    async def logout(self, call: Call, params: NoParams) -> dict[str, Any]:
        holder: TokenHolder = call.principal
        await self.db.run(lambda s: accounts.revoke_token(s, holder.token))
        return {"revoked": True}

    @action(public=True, allow=())
    async def whoami(self, call: Call, params: NoParams) -> dict[str, Any]:
        holder: TokenHolder = call.principal
        return {"name": holder.name, "admin": holder.admin}


def _admin_action(name: str, params: type[BaseModel],
                  operation: Callable[[Tx, Any], dict[str, Any]]) -> Callable[..., Any]:
    """An internal action, for `admin` certificates only, that runs one operator verb."""
    async def run(self: AuthService, call: Call, params: BaseModel) -> dict[str, Any]:
        result = await self.db.run(lambda s: operation(s, params))
        log.info("%s ran %s", call.peer, name,
                 extra={"params": params.model_dump(exclude={"password"})})  # an audit trail
        return result
    run.__annotations__ = {"call": Call, "params": params, "return": dict[str, Any]}
    run.__doc__ = operation.__doc__
    return action(allow=ADMINS, name=name)(run)


for _name, (_params, _operation) in ADMIN_OPERATIONS.items():
    setattr(AuthService, f"admin_{_name}", _admin_action(_name, _params, _operation))
