"""Checks shared by the model and modeling tests: where the head is, and refusals that must
leave it there."""

from __future__ import annotations

from typing import Any

import pytest

from twinstack.client import ActionError


def head_id(session: Any) -> int:
    return int(session.model.head()["state"]["id"])


def refused(session: Any, status: int, call: Any, *args: Any, **kwargs: Any) -> str:
    """Run a call that must be refused with `status`; check that the head did not move.
    Returns the message the user got."""
    before = head_id(session)
    with pytest.raises(ActionError) as caught:
        call(*args, **kwargs)
    assert caught.value.status == status, caught.value.message
    assert head_id(session) == before  # nothing was written
    return caught.value.message
