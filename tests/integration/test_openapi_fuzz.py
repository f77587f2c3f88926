"""Fuzzing a real platform through the OpenAPI documents its public services serve.

One `twinstack up` for the module. Every operation of gss's, auth's and the relay's
`/openapi.json` is fuzzed with schemathesis, with data that fits the document (positive) and
data that does not (negative), and the raw request bodies are fuzzed with hypothesis (any
JSON, deep nesting, huge numbers, lone surrogates, NUL, bytes that are not UTF-8). No answer
may be a 5xx, every refusal must carry the documented error body, and no request may hang.

Calls that change state are fuzzed with a live token all the same; what could spoil the run is
designed for:
- `logout` revokes the token it is called with, so after any successful logout the fuzzing user
  logs in again (a 401 to a token call with a token believed live fails the test, so a token
  lost unnoticed cannot turn the rest of the run into 401s);
- projects: each operation that takes a project gets one of the user's own projects in some of
  its positive examples, so renaming, sharing, unsharing and deleting reach the database rather
  than stopping at "no project"; open_session is left to random ids (a real one would start
  compute processes in the middle of the run; tests/integration/test_sessions.py covers it);
- login failures are throttled per address, so this platform allows many of them (the throttle
  itself is tested in test_login_throttle.py); otherwise fuzzing `login` would lock the fuzzing
  user out of logging in again after a logout.
Runs are deterministic (derandomized hypothesis, no example database); the server is real, so
hypothesis's deadline and speed health checks are off.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks as openapi_checks

from tests.platform_fixtures import PASSWORD, Platform, start_platform, stop_platform
from twinstack.config import Settings
from twinstack.services.auth import AuthService
from twinstack.services.gss import GssService
from twinstack.services.relay import RelayService
from twinstack.wire.actions import collect_actions
from twinstack.wire.openapi import service_document
from twinstack.wire.runtime import Runtime, ServiceBase

EXAMPLES = 25  # per operation and generation mode
# Fewer where each example costs an argon2 hash (a login, or a logout and the login after it).
COSTLY = {("auth", "/actions/login"): 10, ("auth", "/actions/logout"): 10,
          ("auth", "/execute"): 15}
RAW_EXAMPLES = 300
TIMEOUT = 30.0  # seconds one request may take before it counts as a hang
SERVICES: dict[str, tuple[type[ServiceBase], int]] = {  # name -> class, offset from gss's port
    "gss": (GssService, 0), "auth": (AuthService, 1), "relay": (RelayService, 2)}
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])
CHECKS = [schemathesis.checks.not_a_server_error, openapi_checks.status_code_conformance,
          openapi_checks.content_type_conformance, openapi_checks.response_schema_conformance,
          openapi_checks.negative_data_rejection, openapi_checks.ignored_auth]


def built_document(service: str) -> dict[str, Any]:
    cls = SERVICES[service][0]
    return service_document(service, collect_actions(cls(Runtime(cls, Settings()))))


def operations() -> Iterator[tuple[str, str, str]]:
    """(service, method, path) of every operation the documents list, but the document
    itself."""
    for service in SERVICES:
        for path, methods in built_document(service)["paths"].items():
            if path != "/openapi.json":
                for method in methods:
                    yield service, method.upper(), path


@dataclass
class Fuzzing:
    """The platform as the fuzzer uses it: addresses, one HTTPS session, a live token."""

    platform: Platform
    user: str
    token: str = ""
    http: requests.Session = field(default_factory=requests.Session)
    logins: int = 0
    projects: int = 0

    def __post_init__(self) -> None:
        self.http.trust_env = False  # loopback only; no proxy or CA bundle from the environment
        self.http.verify = str(self.platform.ca)
        self.relogin()

    def url(self, service: str) -> str:
        return f"https://127.0.0.1:{self.platform.port + SERVICES[service][1]}"

    def post(self, service: str, path: str, body: bytes, token: str | None
             ) -> requests.Response:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.post(self.url(service) + path, data=body, headers=headers,
                              timeout=TIMEOUT)

    def relogin(self) -> None:
        reply = self.post("auth", "/actions/login",
                          orjson.dumps({"user": self.user, "password": PASSWORD}), None)
        assert reply.status_code == 200, reply.text
        self.token = reply.json()["result"]["token"]
        self.logins += 1

    def project(self) -> str:
        """A new project of the fuzzing user, for positive examples to act on."""
        self.projects += 1
        reply = self.post("gss", "/actions/create_project", orjson.dumps(
            {"name": f"fuzz {self.projects}", "session_type": "data analysis"}), self.token)
        assert reply.status_code == 200, reply.text
        return str(reply.json()["result"]["id"])

    def after(self, path: str, sent: Any, status: int) -> None:
        """Log in again once a call has logged the fuzzing user out."""
        action = path.removeprefix("/actions/") if path.startswith("/actions/") else \
            sent.get("action") if isinstance(sent, dict) else None
        if action == "logout" and 200 <= status < 300:
            self.relogin()


@pytest.fixture(scope="module")
def fuzzing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzing]:
    platform = start_platform(tmp_path_factory.mktemp("openapi"),
                              env={"TWINSTACK_LOGIN_ADDRESS_FREE_FAILURES": "1000000"})
    try:
        platform.add_user("fuzzer")
        fuzzer = Fuzzing(platform, "fuzzer")
        yield fuzzer
        fuzzer.http.close()
    finally:
        stop_platform(platform)


@pytest.fixture(scope="module")
def documents(fuzzing: Fuzzing) -> dict[str, dict[str, Any]]:
    """The documents as the services serve them, without a token."""
    found = {}
    for service in SERVICES:
        reply = fuzzing.http.get(fuzzing.url(service) + "/openapi.json", timeout=TIMEOUT)
        assert reply.status_code == 200, reply.text
        assert reply.headers["Content-Type"].startswith("application/json")
        found[service] = reply.json()
    return found


def error_body(document: dict[str, Any]) -> jsonschema.Validator:
    return jsonschema.Draft202012Validator({"components": document["components"],
                                            "$ref": "#/components/schemas/ErrorReply"})


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_public_service_serves_its_document(documents, service):
    validate(documents[service])
    assert documents[service] == built_document(service)


def test_actions_route_is_the_envelope_with_the_name_in_the_path(fuzzing):
    def call(service: str, path: str, body: Any, token: str | None) -> tuple[int, Any]:
        reply = fuzzing.post(service, path, orjson.dumps(body), token)
        return reply.status_code, reply.json()

    me = {"result": {"name": "fuzzer", "admin": False}}
    assert call("auth", "/actions/whoami", {}, fuzzing.token) == (200, me)
    assert call("auth", "/actions/whoami", None, fuzzing.token) == (200, me)
    assert call("auth", "/execute", {"action": "whoami"}, fuzzing.token) == (200, me)
    status, body = call("auth", "/actions/whoami", {}, None)
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    status, body = call("gss", "/actions/info", {}, None)
    assert status == 200 and body["result"]["service"] == "gss"
    status, body = call("auth", "/actions/login", {"user": "fuzzer"}, None)
    assert (status, body["error"]["field"]) == (422, "params.password")
    status, body = call("auth", "/actions/whoami", [], fuzzing.token)
    assert (status, body["error"]["code"]) == (422, "invalid_params")
    for hidden in ("session_access", "lss_attach", "no_such_action"):
        status, body = call("gss", f"/actions/{hidden}", {}, fuzzing.token)
        assert (status, body["error"]["code"]) == (404, "unknown_action")
        assert hidden not in body["error"]["message"].split(";")[1]


@pytest.mark.parametrize("service", ["gss", "auth"])
def test_token_operations_refuse_a_missing_or_forged_token(fuzzing, documents, service):
    for path, methods in documents[service]["paths"].items():
        operation = methods.get("post")
        if operation is None or operation["security"] != [{"bearer": []}]:
            continue
        for token in (None, "forged", fuzzing.token + "x"):
            reply = fuzzing.post(service, path, b"{}", token)
            assert reply.status_code == 401, (path, token, reply.text)
            assert reply.json()["error"]["code"] == "unauthorized"


def with_own_project(fuzzing: Fuzzing, case: schemathesis.Case) -> schemathesis.Case:
    """The case acting on a project of the fuzzing user, where its body names one."""
    if isinstance(case.body, dict) and isinstance(case.body.get("project"), str) \
            and case.operation.path != "/actions/open_session":
        case.body = {**case.body, "project": fuzzing.project()}
    return case


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("service", "method", "path"), list(operations()))
def test_schemathesis_finds_no_server_error(fuzzing, documents, service, method, path, mode):
    schema = schemathesis.openapi.from_dict(documents[service])
    operation = schema[path][method]
    cases = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.POSITIVE:
        cases = st.one_of(cases, cases.map(lambda case: with_own_project(fuzzing, case)))
    token_needed = documents[service]["paths"][path][method.lower()]["security"] \
        == [{"bearer": []}]
    logins = fuzzing.logins
    errors = error_body(documents[service])

    @settings(FUZZ, max_examples=COSTLY.get((service, path), EXAMPLES))
    @given(case=cases)
    def fuzz(case: schemathesis.Case) -> None:
        live = fuzzing.token
        response = case.call_and_validate(
            base_url=fuzzing.url(service), session=fuzzing.http, checks=CHECKS,
            headers={"Authorization": f"Bearer {live}"}, verify=str(fuzzing.platform.ca),
            timeout=TIMEOUT)
        status = response.status_code
        if status >= 400 and response.headers.get("Content-Type", "").startswith(
                "application/json"):
            errors.validate(response.json())
        sent_live = response.request.headers.get("Authorization") == f"Bearer {live}"
        if token_needed and sent_live and path != "/actions/login":
            assert status != 401, f"a live token was refused: {response.text}"
        fuzzing.after(path, case.body if isinstance(case.body, dict) else None, status)

    fuzz()
    if path == "/actions/logout" and mode is GenerationMode.POSITIVE:
        assert fuzzing.logins > logins  # logged out for real, and in again for the rest


# Raw bodies: what a client may send that no schema describes.

ACTIONS = {"gss": ["info", "create_project", "rename_project", "share_project",
                   "close_session", "list_projects", "no_such_action"],
           "auth": ["login", "logout", "whoami", "accounts"]}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=5),
    max_leaves=30)


def encoded(value: Any) -> st.SearchStrategy[bytes]:
    """`value` as JSON text, escaped or raw UTF-8 (lone surrogates always escaped)."""
    ascii_ = json.dumps(value, allow_nan=True).encode()
    return st.sampled_from([ascii_, json.dumps(value, ensure_ascii=False, allow_nan=True)
                           .encode("utf-8", "surrogatepass")])


def nested(depth: int, leaf: str) -> bytes:
    return ("[" * depth + leaf + "]" * depth).encode()


numbers = st.one_of(
    st.integers(min_value=1, max_value=2000).map(lambda n: "9" * n),
    st.integers(min_value=-400, max_value=400).map(lambda e: f"1e{e}"),
    st.sampled_from(["-0", "1E+999", "-1e309", "0.0000000000000000000000001", "NaN",
                     "Infinity", "0x10", "01", "1.", ".5", "+1"]))
strings = st.lists(st.sampled_from(["\\ud800", "\\udfff", "\\udc00\\ud800", "\\u0000", "\\u0000x",
                                    "\\\\u0000", "\\uD83D\\uDE00", "a", "\\", "\\\"", "\\x41"]),
                   min_size=1, max_size=6).map(lambda parts: f'"{"".join(parts)}"')
leaves = st.one_of(numbers, strings, st.just(""))
raw_params = st.one_of(
    json_values.flatmap(encoded),
    st.tuples(st.integers(min_value=0, max_value=3000), leaves).map(lambda t: nested(*t)),
    st.integers(min_value=0, max_value=3000).map(
        lambda d: ('{"a":' * d + "1" + "}" * d).encode()),
    leaves.map(str.encode),
    leaves.map(lambda leaf: f'{{"user": {leaf}, "password": {leaf}, "name": {leaf}}}'.encode()),
    st.binary(max_size=64),
)


@st.composite
def raw_requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(service, path, body): params in the path form or inside an envelope, or any body."""
    service = draw(st.sampled_from(sorted(ACTIONS)))
    action = draw(st.sampled_from(ACTIONS[service]))
    params = draw(raw_params)
    shape = draw(st.sampled_from(["path", "envelope", "bare"]))
    if shape == "path":
        return service, f"/actions/{action}", params
    if shape == "envelope":
        return service, "/execute", b'{"action": "%s", "params": %s}' % (action.encode(), params)
    return service, "/execute", params


def test_raw_bodies_get_a_4xx_that_names_the_problem_never_a_5xx(fuzzing, documents):
    seen: dict[int, int] = {}

    @settings(FUZZ, max_examples=RAW_EXAMPLES)
    @given(request=raw_requests())
    def fuzz(request: tuple[str, str, bytes]) -> None:
        service, path, body = request
        response = fuzzing.post(service, path, body, fuzzing.token)
        status = response.status_code
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, (status, response.text)
        answer = response.json()
        if status >= 400:
            error_body(documents[service]).validate(answer)
            assert answer["error"]["message"]
            if status == 401:  # only a wrong password; the token stays live
                assert b"login" in body or path == "/actions/login", response.text
        else:
            assert set(answer) == {"result"}
        try:
            sent = orjson.loads(body)
        except orjson.JSONDecodeError:
            sent = None
        fuzzing.after(path, sent, status)

    fuzz()
    assert {400, 422}.issubset(seen), seen  # both the decoder and the models refused things


header_values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF), max_size=200)
WITH_TOKEN = [("gss", "POST", "/actions/list_projects"), ("gss", "GET", "/ws"),
              ("auth", "POST", "/execute"), ("relay", "GET", "/session?id=s1")]


@pytest.mark.parametrize(("service", "method", "path"), WITH_TOKEN)
def test_forged_authorization_headers_are_refused(fuzzing, service, method, path):
    """Any header value a client can send: refused with a 401 that says why. Bytes that HTTP
    forbids in a header (controls) are refused by aiohttp's parser itself, with a plain-text
    400, before any handler runs."""
    @settings(FUZZ, max_examples=RAW_EXAMPLES // 4)
    @given(scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", ""]), token=header_values)
    def fuzz(scheme: str, token: str) -> None:
        reply = fuzzing.http.request(
            method, fuzzing.url(service) + path, data=b'{"action": "whoami"}',
            headers={"Authorization": scheme + token}, timeout=TIMEOUT)
        if reply.status_code == 400 and reply.headers["Content-Type"].startswith("text/plain"):
            assert "Invalid header value char" in reply.text
            return
        assert reply.status_code == 401, (ascii(scheme + token), reply.text)
        assert reply.json()["error"]["code"] == "unauthorized"

    fuzz()
