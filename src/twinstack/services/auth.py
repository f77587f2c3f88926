"""The authorization service: password login, bearer tokens, users and groups.

Clients log in on the public channel (`login` needs no token) and get a token that is stored
only as a hash, expires after --token-ttl-hours and can be revoked (`logout`, or disabling the
user). Failed logins slow down further attempts (store/throttle.py). Operators manage users and
groups through the internal channel with an `admin` certificate; `twinstack user ...` uses these
actions while the platform runs and the same store functions directly on the database when it
does not. Every logout, new password, disabled user and group removal is reported to gss, which
tells the relays to close the sockets it affects.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session as Tx

from twinstack.metrics import AuthMetrics
from twinstack.services.database import ServiceDatabase
from twinstack.store import accounts, throttle
from twinstack.store.models import User, utcnow
from twinstack.wire.actions import Call, action
from twinstack.wire.client import ServiceClient
from twinstack.wire.errors import ActionError, forbidden, unauthorized
from twinstack.wire.runtime import NoParams, Ports, ServiceBase

log = logging.getLogger(__name__)
ADMINS = ("admin",)


@dataclass(frozen=True)
class TokenHolder:
    id: int
    name: str
    admin: bool
    token: str
    token_id: int


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

# Which user an operator verb may take access from (relays then re-check that user's sockets).
TAKES_ACCESS: dict[str, Callable[[Any], str | None]] = {
    "user_passwd": lambda p: p.name,
    "user_disable": lambda p: p.name if p.disabled else None,
    "group_member": lambda p: p.user if p.remove else None,
}


class AuthService(ServiceBase):
    name: ClassVar[str] = "auth"
    ports: ClassVar[Ports] = Ports(internal=7432, health=7433, public=7401)

    async def start(self) -> None:
        s = self.settings
        self.db = ServiceDatabase(s)
        await self.db.open()
        self.stats = AuthMetrics(self.runtime.metrics.registry)
        self.policy = throttle.ThrottlePolicy(
            pair_free=s.login_free_failures, user_free=s.login_user_free_failures,
            address_free=s.login_address_free_failures, max_delay=s.login_max_delay_seconds,
            memory=s.login_failure_memory_seconds)
        self.changes: asyncio.Queue[dict[str, str]] = asyncio.Queue(maxsize=10_000)
        self.gss = ServiceClient(s.gss_url, self.runtime.tls.client(), timeout=5) \
            if s.gss_url else None
        if self.gss is None:
            log.warning("no --gss-url: a logout or a disabled user will not close open relay "
                        "sockets until their tokens expire")
        self.tasks = [asyncio.create_task(self._report_changes()),
                      asyncio.create_task(self._forget_old_failures())]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.gss is not None:
            await self.gss.close()
        self.db.close()

    async def authenticate(self, token: str) -> TokenHolder | None:
        def resolve(s: Tx) -> TokenHolder | None:
            found = accounts.live_token(s, token)
            if found is None:
                return None
            user, record = found
            return TokenHolder(user.id, user.name, user.admin, token, record.id)
        return await self.db.run(resolve)

    # access changes, told to gss ----------------------------------------------------------------

    def access_changed(self, kind: str, ident: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # then relays' periodic checks catch up
            self.changes.put_nowait({"kind": kind, "id": ident})

    async def _report_changes(self) -> None:
        """Deliver each change to gss, retrying while it is away; never give up on one."""
        while True:
            change = await self.changes.get()
            delay = 0.2
            while self.gss is not None:
                try:
                    await self.gss.call("access_change", change, idempotent=True)
                    break
                except ActionError as exc:
                    if exc.status < 500:
                        log.error("gss refused access change %s: %s", change, exc.message)
                        break
                except Exception:
                    log.exception("reporting access change %s failed", change)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _forget_old_failures(self) -> None:
        """Keep the throttle's table to what recent attempts left."""
        while True:
            try:
                now = utcnow()
                await self.db.run(functools.partial(
                    throttle.forget_before, failures=now - timedelta(seconds=self.policy.memory),
                    known=now - timedelta(days=30)))
            except ActionError as exc:
                log.warning("throttle housekeeping: %s", exc.message)
            except Exception:
                log.exception("throttle housekeeping failed")
            await asyncio.sleep(600)

    # public ---------------------------------------------------------------------------------

    @action(anonymous=True)
    async def login(self, call: Call, params: Login) -> dict[str, Any]:
        """A token for a right password; after repeated failures, a wait first (429), the same
        for every name, so the answer tells nothing about which accounts exist."""
        ttl = timedelta(hours=self.settings.token_ttl_hours)

        def begin(s: Tx) -> tuple[float | None, dict[str, int]]:
            keys = throttle.login_keys(s, params.user, call.remote, self.policy)
            return throttle.begin_attempt(s, keys, self.policy), keys

        wait, keys = await self.db.run(begin)
        if wait is not None:
            self.stats.logins.labels("throttled").inc()
            raise ActionError(429, "too_many_attempts",
                              f"too many failed logins for this user or from this address; "
                              f"try again in {math.ceil(wait)} s", retry_after=wait)

        def check(s: Tx) -> dict[str, Any] | None:
            user = accounts.check_password(s, params.user, params.password)
            if user is None:
                return None
            throttle.forgive(s, params.user, call.remote, keys)
            token = accounts.issue_token(s, user, ttl)
            return {"token": token, "expires_in_s": ttl.total_seconds(),
                    "user": {"name": user.name, "admin": user.admin}}

        reply = await self.db.run(check)
        self.stats.logins.labels("ok" if reply else "wrong_credentials").inc()
        if reply is None:
            raise unauthorized("wrong user name or password, or the user is disabled")
        return reply

    @action(public=True, allow=())
    async def logout(self, call: Call, params: NoParams) -> dict[str, Any]:
        holder: TokenHolder = call.principal
        await self.db.run(lambda s: accounts.revoke_token(s, holder.token))
        self.access_changed("token", str(holder.token_id))
        return {"revoked": True}

    @action(public=True, allow=())
    async def whoami(self, call: Call, params: NoParams) -> dict[str, Any]:
        holder: TokenHolder = call.principal
        return {"name": holder.name, "admin": holder.admin}

    @action(public=True, allow=())
    async def accounts(self, call: Call, params: NoParams) -> dict[str, Any]:
        """Every user and group, for an administrator's view of the platform."""
        holder: TokenHolder = call.principal
        if not holder.admin:
            raise forbidden("listing users and groups is for administrators")
        return await self.db.run(lambda s: {**user_list(s, params), **group_list(s, params)})


def _admin_action(name: str, params: type[BaseModel],
                  operation: Callable[[Tx, Any], dict[str, Any]]) -> Callable[..., Any]:
    """An internal action, for `admin` certificates only, that runs one operator verb."""
    async def run(self: AuthService, call: Call, params: BaseModel) -> dict[str, Any]:
        result = await self.db.run(lambda s: operation(s, params))
        log.info("%s ran %s", call.peer, name,
                 extra={"params": params.model_dump(exclude={"password"})})  # an audit trail
        affected = TAKES_ACCESS.get(name, lambda p: None)(params)
        if affected is not None:
            self.access_changed("user", affected)
        return result
    run.__annotations__ = {"call": Call, "params": params, "return": dict[str, Any]}
    run.__doc__ = operation.__doc__
    return action(allow=ADMINS, name=name)(run)


for _name, (_params, _operation) in ADMIN_OPERATIONS.items():
    setattr(AuthService, f"admin_{_name}", _admin_action(_name, _params, _operation))
