"""Revocation is pushed: a logout, a withdrawn share, a disabled user, a new password or an
expired token ends the relay sockets it affects, with a close code and a reason, within a second;
sockets it does not affect keep working."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from tests.platform_fixtures import PASSWORD, running_platform
from tests.probes import RawSocket, run
from twinstack.store import Database, accounts, sqlite_url

pytestmark = pytest.mark.alone  # latency bounds: nothing may run beside it (make test)

PUSHED_WITHIN = 1.0  # seconds from the revoking answer to the closed socket


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with running_platform(tmp_path_factory.mktemp("revocation"),
                          "ada", "bob", "carol", "dave", "erin") as running:
        assert running.twinstack("group", "add", "team").returncode == 0
        yield running


def shared_session(platform, guest: str, role: str = "viewer", *, group: bool = False):
    """ada's new project with a live session, shared with `guest` (or guest's group)."""
    ada = platform.client("ada")
    project = ada.create_project(f"p-{guest}-{time.monotonic_ns()}", "data analysis")
    if group:
        ada.share(project["id"], group="team", role=role)
    else:
        ada.share(project["id"], user=guest, role=role)
    return ada, project, ada.open_session(project["id"])


def relay_url(platform, session_id: str) -> str:
    return f"wss://127.0.0.1:{platform.port + 2}/session?id={session_id}"


async def attach(platform, token: str, session_id: str) -> RawSocket:
    sock = await RawSocket.open(relay_url(platform, session_id), platform.ca, token)
    reply = await sock.call({"id": 1, "service": "kriging", "action": "info"})
    assert reply["result"]["service"] == "kriging"
    return sock


async def closed_after(sock: RawSocket, revoke) -> tuple[int | None, str, float]:
    """Revoke (blocking call, in a thread), then wait for the server to close the socket."""
    await asyncio.to_thread(revoke)
    revoked_at = time.monotonic()
    code, reason = await sock.ended()
    return code, reason, time.monotonic() - revoked_at


def assert_closed(outcome, code: int, words: str) -> None:
    got_code, reason, after = outcome
    assert (got_code, words in reason) == (code, True), outcome
    assert after < PUSHED_WITHIN, f"closed {after:.3f} s after the revocation"


def test_logout_closes_that_tokens_sockets_only(platform):
    _, _, session = shared_session(platform, "bob")
    phone, laptop = platform.client("ada"), platform.client("ada")  # two logins of one user

    async def scenario():
        on_phone = await attach(platform, phone.token, session.id)
        on_laptop = await attach(platform, laptop.token, session.id)
        try:
            assert_closed(await closed_after(on_phone, phone.logout), 4401, "revoked")
            again = await on_laptop.call({"id": 2, "service": "kriging", "action": "info"})
            assert "result" in again  # the other token is untouched
        finally:
            await on_phone.close()
            await on_laptop.close()
    run(scenario())


def test_unsharing_closes_the_guests_socket_not_the_owners(platform):
    ada, project, session = shared_session(platform, "bob")
    bob = platform.client("bob")

    async def scenario():
        guest = await attach(platform, bob.token, session.id)
        owner = await attach(platform, ada.token, session.id)
        try:
            outcome = await closed_after(guest, lambda: ada.unshare(project["id"], user="bob"))
            assert_closed(outcome, 4403, "no longer have access")
            assert "result" in await owner.call({"id": 3, "service": "kriging",
                                                 "action": "info"})
        finally:
            await guest.close()
            await owner.close()
    run(scenario())


def test_leaving_the_group_closes_the_socket(platform):
    assert platform.twinstack("group", "add-member", "team", "dave").returncode == 0
    _, _, session = shared_session(platform, "dave", group=True)
    dave = platform.client("dave")

    async def scenario():
        sock = await attach(platform, dave.token, session.id)
        try:
            outcome = await closed_after(sock, lambda: platform.twinstack(
                "group", "remove-member", "team", "dave"))
            assert_closed(outcome, 4403, "no longer have access")
        finally:
            await sock.close()
    run(scenario())


@pytest.mark.parametrize("verb", ["disable", "passwd"])
def test_disabling_or_a_new_password_closes_every_socket_of_the_user(platform, verb):
    guest = "carol" if verb == "disable" else "erin"
    _, _, session = shared_session(platform, guest)
    first, second = platform.client(guest), platform.client(guest)

    def revoke():
        args = ["user", verb, guest] + (["--password-stdin"] if verb == "passwd" else [])
        done = platform.twinstack(*args, stdin=PASSWORD + "\n" if verb == "passwd" else None)
        assert done.returncode == 0, done.stderr

    async def scenario():
        socks = [await attach(platform, tw.token, session.id) for tw in (first, second)]
        try:
            assert_closed(await closed_after(socks[0], revoke), 4401, "revoked")
            code, reason = await socks[1].ended()
            assert code == 4401 and "revoked" in reason
        finally:
            for sock in socks:
                await sock.close()
            if verb == "disable":
                platform.twinstack("user", "enable", guest)
    run(scenario())


def test_a_socket_closes_when_its_token_expires(platform):
    _, _, session = shared_session(platform, "bob")
    db = Database(sqlite_url(platform.data))
    try:
        with db.transaction() as s:
            brief = accounts.issue_token(s, accounts.get_user(s, "ada"), timedelta(seconds=3))
    finally:
        db.dispose()

    async def scenario():
        sock = await attach(platform, brief, session.id)
        try:
            code, reason = await sock.ended()
            assert code == 4401 and "expired" in reason
        finally:
            await sock.close()
    run(scenario())
