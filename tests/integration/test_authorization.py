"""Who may do what: project ACLs, sessions through the relay, revoked and expired tokens."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.platform_fixtures import PASSWORD, Platform, start_platform, stop_platform
from twinstack.client import ActionError, Client, Session
from twinstack.store import Database, accounts, sqlite_url


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One platform for the module: ada owns a project with a live session."""
    platform = start_platform(tmp_path_factory.mktemp("authz"))
    try:
        for name in ("ada", "bob", "carol", "dave"):
            platform.add_user(name)
        assert platform.twinstack("group", "add", "team").returncode == 0
        assert platform.twinstack("group", "add-member", "team", "dave").returncode == 0
        ada = platform.client("ada")
        project = ada.create_project("survey", "data analysis")
        session = ada.open_session(project["id"])
        yield platform, ada, project, session
    finally:
        stop_platform(platform)


def refused(status: int, call, *args, **kwargs) -> ActionError:
    with pytest.raises(ActionError) as err:
        call(*args, **kwargs)
    assert err.value.status == status, err.value
    return err.value


def attach(tw: Client, session: Session) -> Session:
    return Session(tw, {"id": session.id, "project": session.project_id, "state": "ready"})


def test_a_stranger_cannot_touch_another_users_project(shared):
    platform, _, project, session = shared
    bob = platform.client("bob")
    assert bob.projects() == []
    assert bob.sessions() == []
    for call, kwargs in ((bob.open_session, {}), (bob.delete_project, {}),
                         (bob.rename_project, {"name": "mine"}),
                         (bob.share, {"user": "bob", "role": "owner"})):
        err = refused(404, call, project["id"], **kwargs)
        assert "no project" in err.message
    refused(404, bob.gss, "close_session", session=session.id)
    err = refused(404, attach, bob, session)  # the relay asks gss, which says no
    assert "refused" in err.code


def test_the_relay_reaches_only_the_sessions_own_services(shared):
    _, _, _, session = shared
    for service in ("logger", "gss", "auth", "lss", "relay", "../kriging"):
        err = refused(404, session.call, service, "query")
        assert err.code == "unknown_service" and "has kriging" in err.message


def test_a_viewer_can_join_but_not_edit(shared):
    platform, ada, project, session = shared
    ada.share(project["id"], user="carol", role="viewer")
    carol = platform.client("carol")
    assert [(p["name"], p["role"]) for p in carol.projects()] == [("survey", "viewer")]
    refused(403, carol.rename_project, project["id"], "renamed")
    refused(403, carol.delete_project, project["id"])
    refused(403, carol.share, project["id"], user="bob", role="viewer")
    refused(403, carol.gss, "close_session", session=session.id)
    joined = carol.open_session(project["id"])  # joining the live session is viewing
    assert joined.id == session.id
    joined.detach()


def test_a_group_share_grants_its_role(shared):
    platform, ada, project, _ = shared
    ada.share(project["id"], group="team", role="editor")
    dave = platform.client("dave")
    assert dave.rename_project(project["id"], "survey 2")["name"] == "survey 2"
    refused(403, dave.delete_project, project["id"])  # owner only
    ada.unshare(project["id"], group="team")
    refused(404, dave.rename_project, project["id"], "again")


def test_a_revoked_token_is_refused_everywhere(shared):
    platform, ada, project, session = shared
    ada.share(project["id"], user="bob", role="editor")
    bob = platform.client("bob")
    assert bob.projects()
    token = bob.token
    bob.logout()
    bob.token = token  # keep using it after the logout revoked it
    _refused_everywhere(bob, session)


def test_a_disabled_user_is_locked_out(shared):
    platform, ada, project, session = shared
    ada.share(project["id"], user="carol", role="editor")
    carol = platform.client("carol")
    assert platform.twinstack("user", "disable", "carol").returncode == 0
    _refused_everywhere(carol, session)
    refused(401, platform.client().login, "carol", PASSWORD)
    assert platform.twinstack("user", "enable", "carol").returncode == 0
    assert platform.client("carol").projects()


def test_an_expired_token_is_refused_everywhere(shared):
    platform, _, _, session = shared
    db = Database(sqlite_url(platform.data))
    try:
        with db.transaction() as s:
            expired = accounts.issue_token(s, accounts.get_user(s, "ada"), timedelta(seconds=-1))
    finally:
        db.dispose()
    tw = platform.client()
    tw.token = expired
    _refused_everywhere(tw, session)


def _refused_everywhere(tw: Client, session: Session) -> None:
    refused(401, tw.projects)  # gss
    refused(401, tw.gss, "open_session", project=session.project_id)
    refused(401, tw._call, tw.info()["auth_url"], "whoami")  # auth
    refused(401, attach, tw, session)  # relay


def test_wrong_password_and_unknown_user_look_the_same(shared):
    platform = shared[0]
    tw = platform.client()
    wrong = refused(401, tw.login, "ada", "not the password")
    unknown = refused(401, tw.login, "nobody", "not the password")
    assert wrong.message == unknown.message


def test_the_cli_manages_users_offline_and_online(tmp_path):
    """`twinstack user` writes the database directly when the platform is down."""
    offline = Platform(tmp_path / "data", 0, None, {})  # type: ignore[arg-type]
    offline.add_user("erin", admin=True)
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
