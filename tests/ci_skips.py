"""A pytest plugin: under CI (CI=true) a skipped test fails the run, listing what was skipped.

On a developer's machine a skip says "install X to run this"; on CI it would hide a test that
never ran, so there every skip turns the session's exit status into a failure. Registered by
tests/conftest.py (`register`), and by the conftest of this plugin's own test.
"""

from __future__ import annotations

import os
import shutil

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def required_tool(*names: str, install: str) -> str:
    """The path of the first of `names` on PATH; else the test skips, saying how to `install`
    it (which fails the run under CI)."""
    for name in names:
        if (found := shutil.which(name)) is not None:
            return found
    pytest.skip(f"needs {names[0]} ({install})")


class SkipsFailUnderCi:
    """Collects every skip (of a test or a whole module) and fails the session under CI."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def _record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):  # an xfail reports as skipped
            return
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        self.skipped.append(f"{report.nodeid}: {reason}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        passing = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
        if under_ci() and self.skipped and session.exitstatus in passing:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not (under_ci() and self.skipped):
            return
        terminalreporter.section("skipped under CI=true", red=True)
        terminalreporter.line(f"{len(self.skipped)} test(s) skipped: under CI every test must "
                              "run, so this run fails.", red=True)
        for line in sorted(self.skipped):
            terminalreporter.line(f"  {line}")


def register(config: pytest.Config) -> None:
    """Install the plugin once per pytest run (call from a conftest's pytest_configure)."""
    if not config.pluginmanager.has_plugin("twinstack-ci-skips"):
        config.pluginmanager.register(SkipsFailUnderCi(), "twinstack-ci-skips")
