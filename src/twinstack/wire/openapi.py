"""The OpenAPI 3.1 document of a service's public channel, built from its declared actions.

Every public action is one operation, `POST /actions/{name}`, whose body is the action's
params model, so that documentation readers and fuzzers (schemathesis) see one operation per
action, each with its own security: a bearer token, or none for anonymous actions. The envelope
route `POST /execute` is documented as well, as a `oneOf` of one envelope per action told apart
by the `action` constant. The schemas are pydantic's own (`models_json_schema`), their `$defs`
placed in `components/schemas`; nothing about the params is written by hand. WebSocket routes
(`/ws`, the relay's `/session`) are described as far as OpenAPI can: the handshake as a `GET`
with its parameters and refusals, the messages in `x-websocket`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonSchemaMode, SkipJsonSchema, models_json_schema

from twinstack import __version__
from twinstack.wire.actions import Action
from twinstack.wire.limits import encode

REF = "#/components/schemas/{model}"
BEARER = "bearer"
WEBSOCKET_ERRORS = (401, 403, 404, 429, 503)  # and 400, documented apart
ERROR_STATUSES: dict[int, str] = {
    400: "malformed request: not JSON, too deep, a number too large, invalid text, a bad "
         "envelope",
    401: "no token, or a token that is invalid, expired or revoked (or a wrong password)",
    403: "the caller may not do this",
    404: "no such action, or no such thing (or not yours: the answer is the same)",
    409: "conflicts with the current state",
    413: "the body is over max_message_bytes",
    422: "the params do not fit the action's model; `field` names the one at fault",
    429: "too many attempts or too much in flight; wait `retry_after` seconds",
    503: "a dependency (database, session node) is unavailable right now; try again later",
}


# What travels besides params: pydantic models too, so every schema comes from one generator.

def _optional(schema: dict[str, Any]) -> None:
    """A key that is absent rather than null: no `default: null` against its type."""
    schema.pop("default", None)


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a message to act on, the field at fault."""

    code: str
    message: str
    field: str | SkipJsonSchema[None] = Field(None, json_schema_extra=_optional)
    retry_after: float | SkipJsonSchema[None] = Field(
        None, description="seconds to wait before trying again", json_schema_extra=_optional)


class ErrorReply(BaseModel):
    """The body of every refused call."""

    error: ErrorDetail


class ActionReply(BaseModel):
    """The body of a successful call; each action documents its result in its description."""

    result: Any


class CallId(BaseModel):
    """A call id as a caller chose it: a 64-bit integer or a string of at most 128 characters."""

    model_config = ConfigDict(extra="allow")
    id: Annotated[int, Field(ge=-(2**63), lt=2**63)] | Annotated[str, Field(max_length=128)] \
        | None = None


class WsCall(CallId):
    """A client message on `/ws`: one call (`cancel: true` cancels the call with that id)."""

    action: str
    params: dict[str, Any] | None = None
    request: str | None = Field(None, description="a request id for the logs")
    cancel: bool = False


class RelayCall(CallId):
    """A client message on the relay: a call to one compute service of the socket's session,
    or `{"id", "service", "cancel": true}` to cancel one."""

    service: str
    action: str | None = None
    params: dict[str, Any] | None = None
    cancel: bool = False


class WsErrorDetail(ErrorDetail):
    status: int = Field(description="the HTTP status the same error would have")


class WsReply(CallId):
    """A server message answering one call: its result, an event of a streaming call, or its
    error."""

    result: Any = None
    event: Any = None
    error: WsErrorDetail | None = None


class RelayEvent(BaseModel):
    """A server message nobody asked for: session progress, a restart, a failure, a log
    record (`type: log`)."""

    model_config = ConfigDict(extra="allow")
    event: dict[str, Any]


@dataclass(frozen=True)
class WebSocketRoute:
    """A WebSocket on the public listener, described as far as OpenAPI can."""

    path: str
    summary: str
    description: str
    client: type[BaseModel]
    server: tuple[type[BaseModel], ...]
    query: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # name -> schema
    close_codes: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Schemas:
    """pydantic's schemas of many models at once: a `$ref` for each, their `$defs` shared."""

    refs: dict[type[BaseModel], dict[str, Any]]
    components: dict[str, Any]

    @classmethod
    def of(cls, models: Iterable[type[BaseModel]]) -> _Schemas:
        mode: JsonSchemaMode = "validation"
        unique = list(dict.fromkeys(models))
        by_key, defs = models_json_schema([(m, mode) for m in unique], ref_template=REF)
        return cls({m: by_key[(m, mode)] for m in unique}, defs.get("$defs", {}))


def _takes_nothing(model: type[BaseModel]) -> bool:
    """Whether `{}` is valid params; then `null` (or no params) is too: it stands for `{}`."""
    return not any(f.is_required() for f in model.model_fields.values())


def _params_schema(model: type[BaseModel], schemas: _Schemas) -> dict[str, Any]:
    ref = schemas.refs[model]
    return {"anyOf": [ref, {"type": "null"}]} if _takes_nothing(model) else ref


def _errors(statuses: Iterable[int]) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorReply")}}}}
    retry = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
    return {str(code): {"description": ERROR_STATUSES[code], **error,
                        **({"headers": retry} if code in (429, 503) else {})}
            for code in statuses}


def _security(anonymous: bool) -> list[dict[str, list[str]]]:
    return [] if anonymous else [{BEARER: []}]


def _describe(action: Action) -> tuple[str, str]:
    doc = inspect.getdoc(action.handler) or f"The {action.name} action."
    return doc.partition("\n")[0].strip(), doc


def _action_operation(action: Action, schemas: _Schemas) -> dict[str, Any]:
    summary, description = _describe(action)
    return {
        "operationId": action.name,
        "summary": summary,
        "description": description,
        "tags": ["actions"],
        "security": _security(action.anonymous),
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": _params_schema(action.params, schemas)}}},
        "responses": {
            "200": {"description": "the action's result",
                    "content": {"application/json": {
                        "schema": {"$ref": REF.format(model="ActionReply")}}}},
            **_errors(ERROR_STATUSES),
        },
    }


def _envelope_name(action: Action) -> str:
    return f"Execute_{action.name}"


def _envelope(action: Action, schemas: _Schemas) -> dict[str, Any]:
    """`{"action": NAME, "params": ...}` for one action; other keys are ignored."""
    return {"type": "object", "title": _envelope_name(action),
            "required": ["action"] if _takes_nothing(action.params) else ["action", "params"],
            "properties": {"action": {"const": action.name},
                           "params": _params_schema(action.params, schemas)}}


def _execute_operation(actions: list[Action]) -> dict[str, Any]:
    refs = {a.name: REF.format(model=_envelope_name(a)) for a in actions}
    anonymous = sorted(a.name for a in actions if a.anonymous)
    return {
        "operationId": "execute",
        "summary": "Call any public action with the envelope {\"action\", \"params\"}",
        "description": "The same actions as `/actions/{name}`, named in the body. A bearer "
                       "token is needed except for the anonymous actions: "
                       f"{', '.join(anonymous) or 'none'}.",
        "tags": ["envelope"],
        "security": [{BEARER: []}, {}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "oneOf": [{"$ref": ref} for ref in refs.values()],
            "discriminator": {"propertyName": "action", "mapping": refs}}}}},
        "responses": {
            "200": {"description": "the action's result", "content": {"application/json": {
                "schema": {"$ref": REF.format(model="ActionReply")}}}},
            **_errors(ERROR_STATUSES),
        },
    }


def _websocket_operation(route: WebSocketRoute, schemas: _Schemas) -> dict[str, Any]:
    def one_of(models: Iterable[type[BaseModel]]) -> dict[str, Any]:
        found = [schemas.refs[m] for m in models]
        return found[0] if len(found) == 1 else {"anyOf": found}

    return {
        "operationId": f"websocket{route.path.replace('/', '_')}",
        "summary": route.summary,
        "description": route.description + " OpenAPI cannot describe WebSocket messages: "
                       "`x-websocket` gives their schemas and the close codes.",
        "tags": ["websocket"],
        "security": _security(anonymous=False),
        "parameters": [{"name": name, "in": "query", "required": True, "schema": schema}
                       for name, schema in route.query.items()],
        "responses": {
            "101": {"description": "switched to the WebSocket protocol"},
            "400": {"description": "a bad handshake parameter, or not a WebSocket upgrade",
                    "content": {"application/json": {"schema": {
                        "$ref": REF.format(model="ErrorReply")}}}},
            **_errors(WEBSOCKET_ERRORS),
        },
        "x-websocket": {
            "client_message": one_of([route.client]),
            "server_message": one_of(route.server),
            "close_codes": {str(code): why for code, why in route.close_codes.items()},
        },
    }


def _document_operation() -> dict[str, Any]:
    return {"operationId": "openapi", "summary": "This document", "tags": ["meta"],
            "security": [], "responses": {"200": {
                "description": "the OpenAPI 3.1 document of this listener",
                "content": {"application/json": {"schema": {"type": "object"}}}}}}


def public_websocket(actions: Iterable[Action]) -> WebSocketRoute:
    """`GET /ws` of a public listener: the action envelope plus an `id`, pushed events."""
    streaming = sorted(a.name for a in actions if a.streams)
    return WebSocketRoute(
        "/ws", "The public actions over one WebSocket",
        "Each message is an action call with an `id`; replies carry the same `id`. Streaming "
        f"actions ({', '.join(streaming) or 'none here'}) answer with events, then a result.",
        client=WsCall, server=(WsReply,),
        close_codes={1009: "a message was over max_message_bytes"})


def build_document(service: str, version: str, actions: Mapping[str, Action],
                   websockets: Iterable[WebSocketRoute] = ()) -> dict[str, Any]:
    """The OpenAPI 3.1 document of one service's public listener (pure: same input, same
    document)."""
    public = sorted((a for a in actions.values() if a.public), key=lambda a: a.name)
    callable_ = [a for a in public if not a.streams]  # streaming ones only work over /ws
    sockets = list(websockets)
    schemas = _Schemas.of([ErrorReply, ActionReply, *(a.params for a in public),
                           *(m for ws in sockets for m in (ws.client, *ws.server))])
    paths: dict[str, Any] = {"/openapi.json": {"get": _document_operation()}}
    for found in callable_:
        paths[f"/actions/{found.name}"] = {"post": _action_operation(found, schemas)}
    if callable_:
        paths["/execute"] = {"post": _execute_operation(callable_)}
    for ws in sockets:
        paths[ws.path] = {"get": _websocket_operation(ws, schemas)}
    components = {**schemas.components,
                  **{_envelope_name(a): _envelope(a, schemas) for a in callable_}}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"TwinStack {service}", "version": version,
                 "description": f"The public channel of the TwinStack `{service}` service. "
                                "Errors are `{\"error\": {\"code\", \"message\", \"field\"?, "
                                "\"retry_after\"?}}` with a 4xx status."},
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items())),
                       "securitySchemes": {BEARER: {
                           "type": "http", "scheme": "bearer",
                           "description": "a token from auth's `login` action"}}},
    }


def relay_session() -> WebSocketRoute:
    """The relay's `GET /session?id=SESSION`: one WebSocket to the compute services of one
    session."""
    from twinstack.services import relay  # the relay builds on the runtime, which needs us

    return WebSocketRoute(
        "/session", "A WebSocket to the compute services of one session",
        "Calls go to the services of this session only; replies come back with the call's "
        "`id`, and session events and log records arrive unasked. Access is checked when the "
        "socket opens and again whenever it may have changed.",
        client=RelayCall, server=(WsReply, RelayEvent),
        query={"id": {"type": "string", "pattern": f"^{relay.SESSION_ID.pattern}$",
                      "description": "the session, from gss's open_session"}},
        close_codes={relay.CLOSE_TOKEN: "the token was revoked or has expired",
                     relay.CLOSE_ACCESS: "the user may no longer use this session",
                     relay.CLOSE_SLOW: "the client did not read its events",
                     1009: "a message was over max_message_bytes"})


def service_document(service: str, actions: Mapping[str, Action]) -> dict[str, Any]:
    """The document a running service serves: its public actions and WebSockets."""
    sockets = [public_websocket(a for a in actions.values() if a.public)] \
        if any(a.public for a in actions.values()) else []
    if service == "relay":
        sockets.append(relay_session())
    return build_document(service, __version__, actions, sockets)


def document_route(document: Mapping[str, Any]) -> web.RouteDef:
    """`GET /openapi.json`, unauthenticated, the document encoded once."""
    body = encode(document)

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return web.get("/openapi.json", serve)

