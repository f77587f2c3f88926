"""When the warm parent replaces claimed children: after a quiet moment (so a session's services
are all claimed before any fork), and no later than REFILL_LATEST_SECONDS however busy."""

from __future__ import annotations

import pytest

from twinstack.spawners import forked
from twinstack.spawners.forked import REFILL_LATEST_SECONDS, REFILL_QUIET_SECONDS, Refills


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(forked.time, "monotonic", clock)
    return clock


def test_nothing_pending_means_no_timeout(clock: Clock) -> None:
    refills = Refills()
    assert refills.wait() is None
    assert refills.due() == set()


def test_refills_wait_for_a_quiet_moment(clock: Clock) -> None:
    refills = Refills()
    refills.claimed("model")
    clock.now += REFILL_QUIET_SECONDS / 2
    refills.claimed("modeling")  # the session's next service: the quiet moment starts again
    assert refills.wait() == pytest.approx(REFILL_QUIET_SECONDS)
    assert refills.due() == set()
    clock.now += REFILL_QUIET_SECONDS
    assert refills.wait() == 0.0
    assert refills.due() == {"model", "modeling"}
    assert refills.wait() is None and refills.due() == set()  # done, and forgotten


def test_refills_come_at_the_latest_however_busy(clock: Clock) -> None:
    refills = Refills()
    start = clock.now
    while clock.now - start < REFILL_LATEST_SECONDS:
        assert refills.due() == set()
        refills.claimed("kriging")  # a claim every half quiet moment: never quiet
        clock.now += REFILL_QUIET_SECONDS / 2
    assert refills.due() == {"kriging"}
