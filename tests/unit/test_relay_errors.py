"""What the relay tells a user when a call cannot reach its service or the service fails:
never where the service runs (the details go to the relay's log)."""

from __future__ import annotations

import re

import pytest

from twinstack.services.relay import RelayService
from twinstack.wire.client import WrongPeer
from twinstack.wire.errors import ActionError, ServiceUnavailable
from twinstack.wire.identity import PeerIdentity

ADDRESS = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:]+\]|:\d{2,5}\b")
WHERE = "https://10.1.2.3:7450"
relay = RelayService.__new__(RelayService)  # the error rules need no running relay


@pytest.mark.parametrize("err", [
    ServiceUnavailable(f"{WHERE}/ws: Cannot connect to host 10.1.2.3:7450"),
    ActionError(404, "refused", f"{WHERE}/ws refused: Not Found"),
    ActionError(403, "refused", "https://[fd00::5]:7450/ws refused: Forbidden"),
    WrongPeer(WHERE, PeerIdentity("kriging", "s-1"), PeerIdentity("logger")),
])
def test_a_service_out_of_reach_is_named_not_located(err: ActionError):
    shown = relay._unreachable("kriging", err)
    assert shown.status in (502, 503) and "kriging" in shown.message
    assert not ADDRESS.search(shown.message), shown.message


@pytest.mark.parametrize(("err", "status"), [
    (ActionError(500, "internal", f"failed near {WHERE}; see request abc"), 500),
    (ActionError(503, "unavailable", f"{WHERE} execute: timed out"), 503),
    (ActionError(422, "invalid_params", "points near 10.1.2.3:7450 are odd", "params"), 422),
])
def test_a_service_error_keeps_its_status_not_its_addresses(err: ActionError, status: int):
    shown = relay._for_user("kriging", err)
    assert shown.status == status
    assert not ADDRESS.search(shown.message), shown.message
