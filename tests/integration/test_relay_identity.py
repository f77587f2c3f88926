"""The relay checks whom it reaches: a session's service endpoint pointed elsewhere (as a
compromised LSS certificate could record it) is refused, whatever is listening there, and what
users see never names an internal address."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.platform_fixtures import running_platform
from twinstack.client import ActionError
from twinstack.pki.tls import TlsFiles, client_context
from twinstack.store import Database, projects, sqlite_url
from twinstack.wire.client import ServiceClient


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with running_platform(tmp_path_factory.mktemp("identity"), "ada", "bob") as running:
        yield running


def recorded_services(platform, session_id: str) -> dict:
    db = Database(sqlite_url(platform.data))
    try:
        with db.transaction() as s:
            return dict(projects.get_session(s, session_id).services)
    finally:
        db.dispose()


def report_ready_as_the_lss(platform, session_id: str, services: dict) -> None:
    """What a stolen LSS certificate allows: telling gss where a session's services are."""
    pki = platform.data / "pki"
    lss = TlsFiles(pki / "lss-chain.pem", pki / "lss-key.pem", pki / "ca.pem")

    async def report() -> None:
        async with ServiceClient(platform.info()["gss_url"], client_context(lss)) as gss:
            await gss.call("session_event", {"session": session_id, "type": "ready",
                                             "lss": "local", "services": services})
    asyncio.run(report())


def internal_addresses(platform) -> list[str]:
    found = [address for service in platform.info()["services"].values()
             for key, address in service.items() if key in ("internal", "health")]
    return found


def test_a_redirected_endpoint_is_refused(platform):
    ada, bob = platform.client("ada"), platform.client("bob")
    session = ada.open_session(ada.create_project("survey", "data analysis")["id"])
    other = bob.open_session(bob.create_project("other", "data analysis")["id"])
    real = recorded_services(platform, session.id)
    elsewhere = {
        "the logger": platform.info()["services"]["logger"]["internal"],
        "another session's kriging": recorded_services(platform, other.id)["kriging"]["endpoint"],
    }
    for what, endpoint in elsewhere.items():
        report_ready_as(platform, session, {"kriging": {"endpoint": endpoint}})
        with pytest.raises(ActionError) as refused:
            session.call("kriging", "info")
        assert refused.value.status == 502 and refused.value.code == "wrong_peer", what
        assert "could not be verified" in refused.value.message
        assert not any(a in refused.value.message for a in internal_addresses(platform))
    relay_log = (platform.data / "logs" / "relay.out").read_text()
    assert "presented logger, not kriging@" in relay_log
    assert f"presented kriging@{other.id}, not kriging@{session.id}" in relay_log

    report_ready_as(platform, session, real)  # the true endpoint works again
    assert session.call("kriging", "info")["service"] == "kriging"


def report_ready_as(platform, session, services: dict) -> None:
    """Report the endpoints as the LSS, and wait until the relay has taken them: it updates
    its routes before it passes the event on, so once the client has the event, it has them."""
    list(session.events())  # earlier ready events are not the one to wait for
    report_ready_as_the_lss(platform, session.id, services)
    session.wait_for_event(lambda e: e.get("type") == "ready", timeout=60)


def test_users_never_see_internal_endpoints(platform):
    ada = platform.client("ada")
    project = ada.create_project("look", "data analysis")
    session = ada.open_session(project["id"])
    shown = json.dumps([ada.sessions(), ada.gss("open_session", project=project["id"]),
                        session.call("kriging", "info"), list(session.events(timeout=0.5))])
    for address in [*internal_addresses(platform),
                    recorded_services(platform, session.id)["kriging"]["endpoint"]]:
        assert address not in shown
    assert session.services == ["kriging"]
