"""Failed logins slow down further attempts for that user and address (429 + Retry-After), the
same for names that exist and names that do not, while other users log in normally and the real
user is never locked out for longer than the cap.

Loopback is 127.0.0.0/8: connecting from 127.0.0.2 or 127.0.0.3 gives the auth service other
client addresses without leaving this machine.
"""

from __future__ import annotations

import aiohttp
import pytest

from tests.platform_fixtures import PASSWORD, running_platform, wait_until
from tests.probes import run, tls

CAP = 4.0  # login_max_delay_seconds for this platform: short, so "not forever" is testable


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with running_platform(tmp_path_factory.mktemp("throttle"), "ada", "bob", "cy", "dot",
                          env={"TWINSTACK_LOGIN_MAX_DELAY_SECONDS": str(CAP)}) as running:
        yield running


def login(platform, user: str, password: str, source: str = "127.0.0.1"
          ) -> tuple[int, dict, dict[str, str]]:
    """One login attempt from `source`: status, body, headers."""
    async def attempt() -> tuple[int, dict, dict[str, str]]:
        connector = aiohttp.TCPConnector(ssl=tls(platform.ca), local_addr=(source, 0))
        async with aiohttp.ClientSession(connector=connector) as http, http.post(
                f"https://127.0.0.1:{platform.port + 1}/execute",
                json={"action": "login", "params": {"user": user, "password": password}},
                timeout=aiohttp.ClientTimeout(total=60)) as resp:
            return resp.status, await resp.json(), dict(resp.headers)
    return run(attempt())


def hammer(platform, user: str, source: str, times: int = 20) -> list[int]:
    return [login(platform, user, "wrong password", source)[0] for _ in range(times)]


def right_after_a_failure(platform, user: str, password: str, source: str = "127.0.0.1"
                          ) -> tuple[int, dict, dict[str, str]]:
    """Once throttled, the attempt that follows a failure that counted (which blocks for the
    whole cap here), made at once."""
    wait_until(lambda: login(platform, user, "wrong password", source)[0] == 401,
               timeout=CAP * 10, interval=0.2, what="a failure that counts")
    return login(platform, user, password, source)


def test_wrong_passwords_slow_that_user_and_address_down(platform):
    statuses = hammer(platform, "ada", "127.0.0.1")
    assert statuses[:5] == [401] * 5, statuses  # five free failures (login_free_failures)
    assert 429 in statuses[5:], statuses
    status, body, headers = right_after_a_failure(platform, "ada", PASSWORD)  # must wait too
    assert status == 429, body
    assert body["error"]["code"] == "too_many_attempts"
    assert int(headers["Retry-After"]) >= 1
    assert "try again in" in body["error"]["message"]
    assert login(platform, "bob", PASSWORD)[0] == 200  # same address, another user: normal

    # Not forever: after the wait (capped), the right password works and resets the count.
    wait_until(lambda: login(platform, "ada", PASSWORD)[0] == 200, timeout=CAP * 10,
               interval=CAP / 4, what="ada to be let in again")
    assert login(platform, "ada", "wrong password")[0] == 401


def test_unknown_names_are_throttled_the_same_way(platform):
    known = hammer(platform, "cy", "127.0.0.2")
    unknown = hammer(platform, "nobody-at-all", "127.0.0.2")
    assert known[:5] == unknown[:5] == [401] * 5
    assert 429 in known and 429 in unknown
    _, known_body, _ = right_after_a_failure(platform, "cy", "x" * 9, "127.0.0.2")
    _, unknown_body, _ = right_after_a_failure(platform, "nobody-at-all", "x" * 9, "127.0.0.2")
    assert known_body["error"]["code"] == unknown_body["error"]["code"] == "too_many_attempts"


def test_guessing_from_elsewhere_does_not_lock_the_user_out_of_a_known_address(platform):
    assert login(platform, "dot", PASSWORD, "127.0.0.1")[0] == 200  # dot's usual address
    for source in ("127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"):  # a spread attack
        hammer(platform, "dot", source, times=6)
    # 24 failures: over login_user_free_failures (20), so dot is throttled from new places...
    assert right_after_a_failure(platform, "dot", PASSWORD, "127.0.0.8")[0] == 429
    # ...but not from where she logged in before.
    assert login(platform, "dot", PASSWORD, "127.0.0.1")[0] == 200
