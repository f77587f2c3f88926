"""Declaring a service's actions and dispatching calls to them.

A service marks methods with `@action(...)`. The method's `params` annotation is a pydantic
model that validates the call's parameters; `allow` lists the peer services (certificate CN)
that may call it over the internal channel; `public=True` also exposes it on the public channel
to bearer-token clients (`anonymous=True`: without a token). An async-generator method is a
*streaming* action: WebSocket only, each yielded item is pushed to the caller as an event.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ValidationError

from twinstack.wire.errors import ActionError, forbidden, malformed, unknown_action
from twinstack.wire.identity import PeerIdentity

ANY_PEER = "*"
_MARK = "__twinstack_action__"


PARTICIPANT_HEADERS = ("X-TwinStack-User", "X-TwinStack-Role")
"""Set by the relay on its links to a session's services: who the link is for. Believed only
from a peer whose certificate says it is the relay."""


@dataclass(frozen=True)
class Participant:
    """The user a relayed call is made for, and their role in the session's project."""

    user: str
    role: str

    @property
    def may_edit(self) -> bool:
        return self.role in ("editor", "owner")


@dataclass(frozen=True)
class Call:
    """What a handler knows about the call it is serving."""

    channel: Literal["internal", "public"]
    request_id: str
    peer: PeerIdentity | None = None  # internal channel: from the client certificate
    principal: Any = None  # public channel: whatever the service's token check returned
    remote: str | None = None  # public channel: the client's address
    on_behalf: Participant | None = None  # internal channel: the user a relayed call is for


def editing_user(call: Call) -> str | None:
    """The user a relayed call changes things for, or 403 when their role only lets them
    look; None for a call that no user makes (a platform or compute service's own)."""
    who = call.on_behalf
    if who is None:
        if call.peer is not None and call.peer.service == "relay":
            raise forbidden("a relayed call must say whom it is for")
        return None
    if not who.may_edit:
        raise forbidden(f"{who.user} is a {who.role} of this project: viewers may look but "
                        "not change the model")
    return who.user


def call_key(value: Any) -> str | int | None:
    """A WebSocket call id as a caller chose it: an integer or a short string (or none)."""
    if value is None or (isinstance(value, str) and len(value) <= 128):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    raise ActionError(400, "malformed_request",
                      "'id' must be an integer or a string of at most 128 characters", "id")


@dataclass(frozen=True)
class Action:
    name: str
    handler: Callable[..., Any]
    params: type[BaseModel]
    allow: frozenset[str]
    public: bool
    anonymous: bool
    streams: bool

    def permits(self, call: Call, own_session: str | None) -> None:
        """Raise `forbidden` unless the caller may run this action."""
        if call.channel == "public":
            return
        peer = call.peer
        if peer is None:
            raise forbidden("no verified client certificate")
        if own_session is not None and peer.session not in (None, own_session):
            raise forbidden(f"{peer} belongs to another session than this service ({own_session})")
        if ANY_PEER not in self.allow and peer.service not in self.allow:
            raise forbidden(f"{peer.service!r} may not call {self.name!r}; allowed: "
                            f"{', '.join(sorted(self.allow))}")

    def parse(self, raw: Any) -> BaseModel:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ActionError(422, "invalid_params", "params must be a JSON object", "params")
        try:
            return self.params.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in ("params", *err["loc"]))
            more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
            raise ActionError(422, "invalid_params", f"{field}: {err['msg']}{more}",
                              field) from exc


def action(*, allow: Iterable[str] = (ANY_PEER,), public: bool = False,
           anonymous: bool = False, name: str | None = None
           ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare an action; `anonymous` ones are public and need no token (e.g. login)."""
    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, _MARK, {"allow": frozenset(allow), "public": public or anonymous,
                            "anonymous": anonymous, "name": name})
        return fn
    return mark


_DECLARED: dict[type, tuple[tuple[str, Action], ...]] = {}


def declared_actions(cls: type) -> tuple[tuple[str, Action], ...]:
    """Every `@action` method of `cls`, unbound, with its attribute name; worked out once per
    class (the type hints cost a forked service ~4 ms of its start otherwise)."""
    if cls not in _DECLARED:
        _DECLARED[cls] = _declare(cls)
    return _DECLARED[cls]


def _declare(cls: type) -> tuple[tuple[str, Action], ...]:
    found: list[tuple[str, Action]] = []
    for attr in dir(cls):
        fn = getattr(cls, attr, None)
        mark = getattr(fn, _MARK, None)
        if fn is None or mark is None:
            continue
        hints = get_type_hints(fn)
        params = hints.get("params")
        if not (isinstance(params, type) and issubclass(params, BaseModel)):
            raise TypeError(f"action {attr} needs a `params: <pydantic model>` argument")
        found.append((attr, Action(name=mark["name"] or attr, handler=fn, params=params,
                                   allow=mark["allow"], public=mark["public"],
                                   anonymous=mark["anonymous"],
                                   streams=inspect.isasyncgenfunction(fn))))
    return tuple(found)


def collect_actions(service: object) -> dict[str, Action]:
    """Every `@action` method of `service`, bound to it, by action name."""
    return {declared.name: replace(declared, handler=getattr(service, attr))
            for attr, declared in declared_actions(type(service))}


def parse_envelope(body: Any) -> tuple[str, Any]:
    """Split `{"action": NAME, "params": {...}}`, naming what is wrong with a bad envelope."""
    if not isinstance(body, dict):
        raise malformed("the request body must be a JSON object {\"action\": ..., \"params\": ...}")
    name = body.get("action")
    if not isinstance(name, str) or not name:
        raise ActionError(400, "malformed_request", "missing or non-string 'action'", "action")
    return name, body.get("params")


def lookup(actions: dict[str, Action], name: str, channel: str) -> Action:
    found = actions.get(name)
    if found is None or (channel == "public" and not found.public):
        visible = [n for n, a in actions.items() if channel == "internal" or a.public]
        raise unknown_action(name, visible)
    return found
