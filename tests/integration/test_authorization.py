"""Who may do what: project ACLs, sessions through the relay, revoked and expired tokens.

The tests share one running platform (for speed) and nothing else: each makes its own users,
group, project and, where it needs one, live session, under names no other test uses, and
closes its session afterwards. So they pass in any order, alone or together.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from tests.platform_fixtures import PASSWORD, Platform, start_platform, stop_platform
from twinstack.client import ActionError, Client, Session
from twinstack.store import Database, accounts, sqlite_url


@pytest.fixture(scope="module")
def module_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One platform for the module; tests add what they need under their own names."""
    platform = start_platform(tmp_path_factory.mktemp("authz"))
    try:
        yield platform
    finally:
        stop_platform(platform)


@dataclass
class World:
    """One test's own users (ada owns `project`; dave is in `team`), and its session."""

    platform: Platform
    names: dict[str, str]
    team: str
    ada: Client
    project: dict[str, Any]
    _sessions: list[Session] = field(default_factory=list)

    def client(self, who: str | None = None) -> Client:
        """A client logged in as this test's `who` (ada, bob, carol, dave), or anonymous."""
        return self.platform.client(None if who is None else self.names[who])

    def session(self) -> Session:
        """Ada's live session of the project, closed when the test ends."""
        if not self._sessions:
            self._sessions.append(self.ada.open_session(self.project["id"]))
        return self._sessions[0]

    def close(self) -> None:
        for session in self._sessions:
            session.close()


@pytest.fixture
def world(module_platform: Platform) -> Iterator[World]:
    platform, tag = module_platform, uuid.uuid4().hex[:8]
    names = {who: f"{who}-{tag}" for who in ("ada", "bob", "carol", "dave")}
    team = f"team-{tag}"
    db = Database(sqlite_url(platform.data))
    try:
        with db.transaction() as s:  # the store directly: the CLI's own test is below
            for name in names.values():
                accounts.add_user(s, name, PASSWORD)
            accounts.add_group(s, team)
            accounts.add_member(s, team, names["dave"])
    finally:
        db.dispose()
    ada = platform.client(names["ada"])
    project = ada.create_project(f"survey-{tag}", "data analysis")
    created = World(platform, names, team, ada, project)
    try:
        yield created
    finally:
        created.close()


def refused(status: int, code: str, call: Callable[..., Any], *args: Any,
            **kwargs: Any) -> ActionError:
    """The call fails with exactly this status and error code (not just any error)."""
    with pytest.raises(ActionError) as err:
        call(*args, **kwargs)
    assert (err.value.status, err.value.code) == (status, code), err.value
    return err.value


def attach(tw: Client, session: Session) -> Session:
    return Session(tw, {"id": session.id, "project": session.project_id, "state": "ready"})


def test_a_stranger_cannot_touch_another_users_project(world):
    project, session = world.project, world.session()
    bob = world.client("bob")
    assert bob.projects() == []
    assert bob.sessions() == []
    for call, kwargs in ((bob.open_session, {}), (bob.delete_project, {}),
                         (bob.rename_project, {"name": "mine"}),
                         (bob.share, {"user": world.names["bob"], "role": "owner"})):
        err = refused(404, "not_found", call, project["id"], **kwargs)
        assert "no project" in err.message
    refused(404, "not_found", bob.gss, "close_session", session=session.id)
    refused(404, "refused", attach, bob, session)  # the relay asks gss, which says no
    assert [p["name"] for p in world.ada.projects()] == [project["name"]]  # untouched


def test_the_relay_reaches_only_the_sessions_own_services(world):
    session = world.session()
    for service in ("logger", "gss", "auth", "lss", "relay", "../kriging"):
        err = refused(404, "unknown_service", session.call, service, "query")
        assert "has kriging" in err.message


def test_a_viewer_can_join_but_not_edit(world):
    project, session = world.project, world.session()
    world.ada.share(project["id"], user=world.names["carol"], role="viewer")
    carol = world.client("carol")
    assert [(p["name"], p["role"]) for p in carol.projects()] == [(project["name"], "viewer")]
    refused(403, "forbidden", carol.rename_project, project["id"], "renamed")
    refused(403, "forbidden", carol.delete_project, project["id"])
    refused(403, "forbidden", carol.share, project["id"], user=world.names["bob"],
            role="viewer")
    refused(403, "forbidden", carol.gss, "close_session", session=session.id)
    joined = carol.open_session(project["id"])  # joining the live session is viewing
    assert joined.id == session.id
    joined.detach()


def test_a_group_share_grants_its_role(world):
    project = world.project
    world.ada.share(project["id"], group=world.team, role="editor")
    dave = world.client("dave")
    assert dave.rename_project(project["id"], "survey 2")["name"] == "survey 2"
    refused(403, "forbidden", dave.delete_project, project["id"])  # owner only
    world.ada.unshare(project["id"], group=world.team)
    refused(404, "not_found", dave.rename_project, project["id"], "again")


def test_a_revoked_token_is_refused_everywhere(world):
    world.ada.share(world.project["id"], user=world.names["bob"], role="editor")
    bob = world.client("bob")
    assert bob.projects()
    token = bob.token
    bob.logout()
    bob.token = token  # keep using it after the logout revoked it
    _refused_everywhere(bob, world.session())


def test_a_disabled_user_is_locked_out(world):
    world.ada.share(world.project["id"], user=world.names["carol"], role="editor")
    carol, name = world.client("carol"), world.names["carol"]
    assert carol.projects()
    assert world.platform.twinstack("user", "disable", name).returncode == 0
    _refused_everywhere(carol, world.session())
    refused(401, "unauthorized", world.client().login, name, PASSWORD)
    assert world.platform.twinstack("user", "enable", name).returncode == 0
    assert world.client("carol").projects()


def test_an_expired_token_is_refused_everywhere(world):
    db = Database(sqlite_url(world.platform.data))
    try:
        with db.transaction() as s:
            ada = accounts.get_user(s, world.names["ada"])
            expired = accounts.issue_token(s, ada, timedelta(seconds=-1))
    finally:
        db.dispose()
    tw = world.client()
    tw.token = expired
    _refused_everywhere(tw, world.session())


def _refused_everywhere(tw: Client, session: Session) -> None:
    refused(401, "unauthorized", tw.projects)  # gss
    refused(401, "unauthorized", tw.gss, "open_session", project=session.project_id)
    refused(401, "unauthorized", tw.auth, "whoami")  # auth
    refused(401, "refused", attach, tw, session)  # relay


def test_wrong_password_and_unknown_user_look_the_same(world):
    tw = world.client()
    wrong = refused(401, "unauthorized", tw.login, world.names["ada"], "not the password")
    unknown = refused(401, "unauthorized", tw.login, f"nobody-{uuid.uuid4().hex[:8]}",
                      "not the password")
    assert wrong.message == unknown.message


def test_the_cli_manages_users_offline_and_online(tmp_path):
    """`twinstack user` writes the database directly when the platform is down."""
    offline = Platform(tmp_path / "data", 0, None, {})  # type: ignore[arg-type]
    created = offline.twinstack("user", "add", "erin", "--admin", "--password-stdin",
                                "--create-database", stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr  # no database yet: created on request only
    listed = offline.twinstack("user", "list")
    assert listed.returncode == 0 and "erin" in listed.stdout and "admin" in listed.stdout
    duplicate = offline.twinstack("user", "add", "erin", "--password-stdin", stdin="x" * 9)
    assert duplicate.returncode != 0 and "already exists" in duplicate.stderr
    short = offline.twinstack("user", "add", "fay", "--password-stdin", stdin="short\n")
    assert short.returncode != 0 and "8" in short.stderr

    platform = start_platform(tmp_path)  # same data dir: erin is there, and the CLI goes online
    try:
        platform.add_user("gus")
        assert platform.client("erin").projects() == []
        assert platform.client("gus").projects() == []
        audit = platform.twinstack("logs", "--json", "--service", "auth")  # through auth
        assert "admin ran user_add" in audit.stdout and "gus" in audit.stdout
    finally:
        stop_platform(platform)
