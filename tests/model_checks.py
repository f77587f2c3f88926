"""Checks shared by the model and modeling tests: where the head is, and refusals that must
leave it there."""

from __future__ import annotations

from typing import Any

import pytest

from twinstack.client import ActionError


def head_id(session: Any) -> int | None:
    """The head state's id (None before the first change)."""
    head = session.model.head()
    return None if head is None else int(head["state"]["id"])


def refused(session: Any, status: int, call: Any, *args: Any, **kwargs: Any) -> str:
    """Run a call that must be refused with `status`; check that the head did not move.
    Returns the message the user got."""
    before = head_id(session)
    with pytest.raises(ActionError) as caught:
        call(*args, **kwargs)
    assert caught.value.status == status, caught.value.message
    assert head_id(session) == before  # nothing was written
    return caught.value.message


def shared_project(platform: Any, name: str) -> tuple[Any, Any, Any, str]:
    """Clients of ada (owner), bob (editor) and cy (viewer) of a new "3D simulation" project;
    the three users must exist."""
    ada, bob, cy = (platform.client(user) for user in ("ada", "bob", "cy"))
    project = ada.create_project(name, "3D simulation")["id"]
    ada.share(project, user="bob", role="editor")
    ada.share(project, user="cy", role="viewer")
    return ada, bob, cy, project
