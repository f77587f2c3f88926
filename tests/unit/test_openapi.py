"""The OpenAPI documents of the public services: valid OpenAPI 3.1, every public action with its
security, and params schemas that accept exactly what the actions' pydantic models accept."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from twinstack.config import Settings
from twinstack.services import relay
from twinstack.services.auth import AuthService
from twinstack.services.gss import GssService
from twinstack.services.relay import RelayService
from twinstack.wire.actions import Action, collect_actions
from twinstack.wire.errors import ActionError
from twinstack.wire.openapi import build_document, service_document
from twinstack.wire.runtime import Runtime, ServiceBase

# What a thin client may call, by service: the contract this document must keep.
PUBLIC = {
    "gss": {"info", "create_project", "list_projects", "rename_project", "delete_project",
            "share_project", "unshare_project", "open_session", "list_sessions",
            "close_session", "list_nodes", "project_history"},
    "auth": {"login", "logout", "whoami", "accounts"},
}
ANONYMOUS = {"gss": {"info"}, "auth": {"login"}}
SERVICES: dict[str, type[ServiceBase]] = {"gss": GssService, "auth": AuthService,
                                          "relay": RelayService}
DETERMINISTIC = settings(derandomize=True, database=None, max_examples=150, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow])


def actions_of(name: str) -> dict[str, Action]:
    cls = SERVICES[name]
    return collect_actions(cls(Runtime(cls, Settings())))


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    return {name: service_document(name, actions_of(name)) for name in SERVICES}


def validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    """A JSON Schema 2020-12 validator for `schema`, its `#/components/...` refs resolved
    inside `document`."""
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": document["components"], **schema}
    return jsonschema.Draft202012Validator(root)


def body_schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    return document["paths"][path]["post"]["requestBody"]["content"]["application/json"][
        "schema"]


def server_accepts(found: Action, params: Any) -> bool:
    """Whether the service's own parsing (the path every call takes) accepts `params`."""
    try:
        found.parse(params)
    except ActionError as exc:
        assert exc.status == 422, exc
        return False
    return True


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_document_is_valid_openapi_31(documents, service):
    document = documents[service]
    validate(document)  # the OpenAPI 3.1 meta-schema, with the 2020-12 dialect of its schemas
    assert document["openapi"] == "3.1.0"
    assert orjson.loads(orjson.dumps(document)) == document  # plain JSON, served as it is


def test_the_builder_is_a_pure_function():
    actions = actions_of("gss")
    assert build_document("gss", "1", actions) == build_document("gss", "1", actions)
    assert build_document("gss", "1", actions)["info"]["version"] == "1"


@pytest.mark.parametrize("service", sorted(PUBLIC))
def test_every_public_action_is_an_operation_with_its_security(documents, service):
    paths = documents[service]["paths"]
    documented = {p.removeprefix("/actions/") for p in paths if p.startswith("/actions/")}
    assert documented == PUBLIC[service]
    for name in PUBLIC[service]:
        operation = paths[f"/actions/{name}"]["post"]
        expected = [] if name in ANONYMOUS[service] else [{"bearer": []}]
        assert operation["security"] == expected, name
        assert operation["operationId"] == name
        for status in ("400", "401", "403", "404", "409", "413", "422", "429"):
            content = operation["responses"][status]["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/ErrorReply"}
    assert documents[service]["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "a token from auth's `login` action"}


def test_internal_actions_stay_out(documents):
    text = orjson.dumps(documents).decode()
    for internal in ("lss_attach", "session_access", "tunnel_call", "access_changes",
                     "user_add", "group_member", "append"):
        assert internal not in text


def test_the_docstring_describes_the_operation(documents):
    operation = documents["gss"]["paths"]["/actions/open_session"]["post"]
    assert operation["summary"] == \
        "Join the project's live session, or start one on the least loaded LSS."


@pytest.mark.parametrize("service", sorted(PUBLIC))
def test_the_envelope_is_one_of_the_actions(documents, service):
    schema = body_schema(documents[service], "/execute")
    mapping = schema["discriminator"]["mapping"]
    assert set(mapping) == PUBLIC[service]
    assert [branch["$ref"] for branch in schema["oneOf"]] == list(mapping.values())
    assert documents[service]["paths"]["/execute"]["post"]["security"] == [{"bearer": []}, {}]


SAMPLES: list[tuple[str, str, Any, bool]] = [
    ("auth", "login", {"user": "ada", "password": "pw"}, True),
    ("auth", "login", {"user": "", "password": "pw"}, False),
    ("auth", "login", {"user": "a" * 64, "password": "p" * 1024}, True),
    ("auth", "login", {"user": "a" * 65, "password": "pw"}, False),
    ("auth", "login", {"user": "ada"}, False),
    ("auth", "login", {"user": "ada", "password": "pw", "otp": "1"}, False),
    ("auth", "login", {"user": 7, "password": "pw"}, False),
    ("auth", "login", None, False),
    ("auth", "logout", {}, True),
    ("auth", "logout", None, True),
    ("auth", "logout", {"all": True}, False),
    ("auth", "logout", [], False),
    ("gss", "create_project", {"name": "survey", "session_type": "data analysis"}, True),
    ("gss", "create_project", {"name": "x" * 201, "session_type": "data analysis"}, False),
    ("gss", "create_project", {"name": "survey", "session_type": None}, False),
    ("gss", "share_project", {"project": "p", "user": "bo", "role": "editor"}, True),
    ("gss", "share_project", {"project": "p", "group": None}, True),
    ("gss", "share_project", {"project": "p", "user": "bo", "role": "admin"}, False),
    ("gss", "share_project", {"project": ["p"]}, False),
    ("gss", "close_session", {"session": "s"}, True),
    ("gss", "close_session", {"session": True}, False),
    ("gss", "close_session", "s", False),
    ("gss", "list_projects", {}, True),
    ("gss", "list_projects", {"page": 2}, False),
]


@pytest.mark.parametrize(("service", "name", "params", "accepted"), SAMPLES)
def test_params_schema_accepts_what_the_model_accepts(documents, service, name, params,
                                                     accepted):
    schema = body_schema(documents[service], f"/actions/{name}")
    assert validator(documents[service], schema).is_valid(params) == accepted
    assert server_accepts(actions_of(service)[name], params) == accepted


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80), lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


DROP = object()


def variants(found: Action) -> st.SearchStrategy[Any]:
    """A valid params object with up to two edits (a key dropped, added or set to a string
    around the length limits, a role name, null or any JSON): where a schema and a model would
    disagree."""
    fields = found.params.model_fields
    valid = {name: "ok" for name, info in fields.items() if info.is_required()}
    texts = st.text(max_size=2) | st.text(min_size=60, max_size=70) \
        | st.text(min_size=195, max_size=205) | st.sampled_from(["viewer", "editor", "owner"])
    values = st.one_of(texts, st.none(), json_values, st.just(DROP))
    edits = st.lists(st.tuples(st.sampled_from([*fields, "extra"]), values), max_size=2)

    def edited(changes: list[tuple[str, Any]]) -> dict[str, Any]:
        params = dict(valid)
        for key, value in changes:
            if value is DROP:
                params.pop(key, None)
            else:
                params[key] = value
        return params

    return st.one_of(edits.map(edited), edits.map(edited), edits.map(edited), json_values)


@pytest.mark.parametrize(("service", "name"),
                         sorted((s, n) for s, names in PUBLIC.items() for n in names))
def test_schema_and_model_agree_on_generated_params(documents, service, name):
    found = actions_of(service)[name]
    document = documents[service]
    check = validator(document, body_schema(document, f"/actions/{name}"))
    envelope = validator(document, body_schema(document, "/execute"))

    @DETERMINISTIC
    @given(variants(found))
    def agree(params: Any) -> None:
        accepted = server_accepts(found, params)
        assert check.is_valid(params) == accepted, params
        assert envelope.is_valid({"action": name, "params": params}) == accepted, params

    agree()


def test_relay_document_describes_the_session_socket(documents):
    document = documents["relay"]
    assert not any(p.startswith("/actions/") or p == "/execute" for p in document["paths"])
    operation = document["paths"]["/session"]["get"]
    assert operation["security"] == [{"bearer": []}]
    (session_id,) = operation["parameters"]
    assert session_id["in"] == "query" and session_id["required"]
    assert session_id["schema"]["pattern"] == f"^{relay.SESSION_ID.pattern}$"
    socket = operation["x-websocket"]
    assert set(socket["close_codes"]) == {str(relay.CLOSE_TOKEN), str(relay.CLOSE_ACCESS),
                                          str(relay.CLOSE_SLOW), "1009"}
    call = validator(document, socket["client_message"])
    assert call.is_valid({"id": 1, "service": "kriging", "action": "interpolate",
                          "params": {"points": []}})
    assert call.is_valid({"id": "a", "service": "kriging", "cancel": True})
    assert not call.is_valid({"id": 2**63, "service": "kriging", "action": "x"})
    assert not call.is_valid({"id": 1, "action": "x"})
    server = validator(document, socket["server_message"])
    assert server.is_valid({"id": 1, "result": {"grid": []}})
    assert server.is_valid({"id": 1, "error": {"code": "not_found", "message": "no x",
                                               "status": 404}})
    assert server.is_valid({"event": {"type": "log", "message": "hi"}})
