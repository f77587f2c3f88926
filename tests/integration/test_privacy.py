"""Answers reveal nothing about other users' things: a missing session and someone else's get
the same answer, and sharing answers the same whether an account name exists or not (the share
waits as an invitation and applies when the account is created)."""

from __future__ import annotations

import pytest

from tests.platform_fixtures import PASSWORD, running_platform
from twinstack.client import ActionError


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with running_platform(tmp_path_factory.mktemp("privacy"), "ada", "bob") as running:
        yield running


def refusal(call, *args, **kwargs) -> tuple[int, str, str]:
    with pytest.raises(ActionError) as err:
        call(*args, **kwargs)
    return err.value.status, err.value.code, err.value.message


def test_missing_and_not_yours_look_the_same(platform):
    ada, bob = platform.client("ada"), platform.client("bob")
    project = ada.create_project("secret", "data analysis")
    session = ada.open_session(project["id"])
    missing_session, missing_project = "f" * 32, "e" * 32
    for action, params, theirs, missing in (
            ("close_session", "session", session.id, missing_session),
            ("open_session", "project", project["id"], missing_project),
            ("rename_project", "project", project["id"], missing_project),
            ("delete_project", "project", project["id"], missing_project)):
        extra = {"name": "x"} if action == "rename_project" else {}
        status, code, message = refusal(bob.gss, action, **{params: theirs}, **extra)
        other = refusal(bob.gss, action, **{params: missing}, **extra)
        assert (status, code) == other[:2] == (404, "not_found"), action
        assert message.replace(theirs, "ID") == other[2].replace(missing, "ID"), action


def test_sharing_does_not_tell_which_names_exist(platform):
    ada = platform.client("ada")
    project = ada.create_project("shared", "data analysis")["id"]
    ada.share(project, user="bob", role="viewer")
    ada.share(project, user="zoe", role="editor")  # no such account yet
    shares = ada.gss("share_project", project=project, group="nobody-yet", role="viewer")
    assert shares["shares"] == [{"user": "bob", "group": None, "role": "viewer"},
                                {"user": "zoe", "group": None, "role": "editor"},
                                {"user": None, "group": "nobody-yet", "role": "viewer"}]
    platform.add_user("zoe")  # the invitation becomes her share
    zoe = platform.client("zoe")
    assert [(p["id"], p["role"]) for p in zoe.projects()] == [(project, "editor")]
    assert zoe.login("zoe", PASSWORD)["user"]["name"] == "zoe"
    bad = refusal(ada.share, project, user="no/slash", role="viewer")
    assert bad[0] == 422 and "params.user" in bad[2] and "pattern" in bad[2]
