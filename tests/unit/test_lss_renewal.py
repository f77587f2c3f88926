"""The LSS's certificate renewal loop (SessionRunner._renew_certificates) with a real PKI: a
certificate in its second half-life is issued anew and handed to the service's spawner
(`Spawner.renewed`: a Kubernetes pod's Secret), and a hand-over that fails is tried again on
the next round instead of being forgotten with the files already renewed.

The spawner is a recording one that fails its first hand-over on purpose; the LSS it belongs
to is only its settings and folders."""

from __future__ import annotations

import asyncio
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from twinstack.config import Settings
from twinstack.pki import init_authority
from twinstack.pki.identity import issue_identity
from twinstack.services import lss as lss_module
from twinstack.services.lss import SessionRunner, Supervised
from twinstack.spawners.base import Spawner
from twinstack.supervision import RestartCounter, RestartPolicy

SESSION = "5e551011a2b3c4d5e6f708192a3b4c5d"


class RecordingSpawner(Spawner):
    """Takes renewals (the first one fails, as an API error would); runs nothing."""

    def __init__(self) -> None:
        self.renewals: list[str] = []
        self.delivered = asyncio.Event()

    async def renewed(self) -> None:
        if not self.renewals:
            self.renewals.append("failed")
            raise OSError("the API server answered 503")
        self.renewals.append("delivered")
        self.delivered.set()

    async def start(self, timeout: float = 60.0) -> str:
        raise NotImplementedError

    def poll(self) -> int | None:
        return None

    async def stop(self, grace: float = 5.0) -> None:
        return None

    def get_state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        return None

    def output_tail(self, lines: int = 20) -> list[str]:
        return []


def test_a_renewed_certificate_reaches_the_spawner_even_after_a_failed_hand_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = tmp_path / "pki"
    init_authority(pki)
    lss = types.SimpleNamespace(
        settings=Settings(session_ca=pki, ca=pki / "ca.pem"), sessions_dir=tmp_path / "sessions",
        service_hosts=lambda session, service: ["127.0.0.1"])
    runner = SessionRunner(lss=lss, session=SESSION, services=["kriging"])  # type: ignore[arg-type]
    folder = runner.workdir / "kriging"
    folder.mkdir(parents=True)
    now = datetime.now(UTC)
    old = issue_identity(pki, "kriging", folder / "identity", session=SESSION,
                         hosts=["127.0.0.1"], issuer="intermediate",
                         not_before=now - timedelta(hours=13), not_after=now + timedelta(hours=11))
    first = old.cert.read_bytes()  # less than half its day left: due for renewal
    spawner = RecordingSpawner()
    runner.children["kriging"] = Supervised(spawner, RestartCounter(RestartPolicy()))
    monkeypatch.setattr(lss_module, "CERT_CHECK_SECONDS", 0.01)

    async def scenario() -> None:
        renewing = asyncio.create_task(runner._renew_certificates())
        try:
            await asyncio.wait_for(spawner.delivered.wait(), timeout=60)  # a hang guard
        finally:
            renewing.cancel()
    asyncio.run(scenario())
    assert spawner.renewals == ["failed", "delivered"]
    assert old.cert.read_bytes() != first  # issued anew once, then handed over on the retry
