"""The CI guard in tests/ci_skips.py: under CI=true a skip fails the run; elsewhere it does not."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SUITE = """
import pytest

def test_runs():
    assert True

@pytest.mark.skipif(True, reason="needs a frobnicator (apt-get install frobnicator)")
def test_needs_a_tool():
    pass

def test_skips_itself():
    pytest.skip("no widget here (pip install widget)")
"""
CONFTEST = """
from tests import ci_skips

def pytest_configure(config):
    ci_skips.register(config)
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def test_skips_fail_the_run_under_ci(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest()
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*skipped under CI=true*",
        "2 test(s) skipped: under CI every test must run, so this run fails.",
        "*test_suite.py::test_needs_a_tool: Skipped: needs a frobnicator (apt-get install*",
        "*test_suite.py::test_skips_itself: Skipped: no widget here (pip install widget)*",
    ])


@pytest.mark.parametrize("value", [None, "", "false"])
def test_skips_pass_outside_ci(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                               value: str | None):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    result = suite.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*SKIPPED*needs a frobnicator (apt-get install frobnicator)"])
    result.stdout.no_fnmatch_line("*skipped under CI=true*")


def test_a_run_without_skips_passes_under_ci(pytester: pytest.Pytester,
                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CI", "true")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_clean="def test_runs():\n    assert True\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.OK


def test_a_skipped_module_fails_the_run_under_ci(pytester: pytest.Pytester,
                                                 monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CI", "true")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_whole="import pytest\n"
                        "pytest.skip('no podman (apt-get install podman)', "
                        "allow_module_level=True)\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*test_whole.py: Skipped: no podman (apt-get install podman)*"])


def test_failures_keep_their_own_exit_status_under_ci(pytester: pytest.Pytester,
                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CI", "true")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_bad="import pytest\n"
                        "def test_fails():\n    assert False\n"
                        "def test_skips():\n    pytest.skip('no tool')\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*test_bad.py::test_skips: Skipped: no tool*"])
