"""The shared supervisor: restart policy, readiness wait, leases and signals to verified pids."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from twinstack.config import load_settings
from twinstack.pki.tls import TlsFiles
from twinstack.spawners import ServiceSpec
from twinstack.spawners.process import ProcessSpawner
from twinstack.supervision import (
    NotReady,
    RestartCounter,
    RestartPolicy,
    hold_lease,
    process_start_time,
    read_ready_file,
    send_signal,
    wait_ready,
)

IGNORES_SIGTERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   "print('ready', flush=True); time.sleep(60)")


def test_policy_from_settings_doubles_to_its_cap():
    policy = RestartPolicy.from_settings(load_settings(
        {"restart_backoff": 0.5, "restart_backoff_max": 3, "restart_limit": 4}))
    assert [policy.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_counter_gives_up_past_the_limit_and_starts_over_after_uptime():
    counter = RestartCounter(RestartPolicy(backoff=1, limit=2, reset_after=10))
    assert [counter.next_delay(), counter.next_delay(), counter.next_delay()] == [1, 2, None]
    counter.started_at = time.monotonic() - 11  # it stayed up longer than reset_after
    assert counter.next_delay() == 1


def test_wait_ready_returns_what_the_check_found():
    found = iter([None, None, {"publish": "x"}])
    assert asyncio.run(wait_ready(lambda: next(found), timeout=5, what="svc")) == \
        {"publish": "x"}


def test_wait_ready_fails_at_once_when_the_process_exits():
    with pytest.raises(NotReady, match="svc exited with 3") as failed:
        asyncio.run(wait_ready(lambda: None, timeout=60, what="svc", exited=lambda: 3))
    assert failed.value.exit_code == 3


def test_wait_ready_fails_after_its_deadline():
    with pytest.raises(NotReady, match=r"not ready after 0\.05 s") as failed:
        asyncio.run(wait_ready(lambda: None, timeout=0.05, what="svc"))
    assert failed.value.exit_code is None


def test_a_bad_ready_file_is_a_fault_not_a_wait(tmp_path):
    path = tmp_path / "svc.ready"
    assert read_ready_file(path) is None
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="does not name"):
        read_ready_file(path)


def test_lease_expires_when_not_renewed_or_removed(tmp_path):
    lease = tmp_path / "lease"
    lease.touch()
    old = time.time() - 30
    os.utime(lease, (old, old))
    reasons: list[str] = []
    asyncio.run(asyncio.wait_for(hold_lease(lease, 10, reasons.append), 5))
    assert "not renewed for 30 s" in reasons[0]
    lease.unlink()
    asyncio.run(asyncio.wait_for(hold_lease(lease, 10, reasons.append), 5))
    assert "is gone" in reasons[1]


def test_signals_go_only_to_the_process_that_was_started():
    proc = subprocess.Popen(["sleep", "60"])
    try:
        started = process_start_time(proc.pid)
        assert started is not None
        assert not send_signal(proc.pid, started + 1, signal.SIGTERM)  # a reused pid
        assert proc.poll() is None
        assert send_signal(proc.pid, started, signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM
        assert process_start_time(proc.pid) is None
        assert not send_signal(proc.pid, started, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


def _adopted(tmp_path, pid: int, started: int | None) -> ProcessSpawner:
    """A process spawner that adopts `pid`, as a restarted LSS does from a checkpoint."""
    files = TlsFiles(tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem")
    spawner = ProcessSpawner(ServiceSpec("kriging", "s-1", files, tmp_path / "kriging"))
    spawner.load_state({"pid": pid, "started": started, "port": 0})
    return spawner


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        spawner = _adopted(tmp_path, proc.pid, process_start_time(proc.pid))
        assert spawner.poll() is None
        asyncio.run(spawner.stop(grace=0.2))
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert spawner.poll() == -1
    finally:
        proc.kill()
        proc.wait()


def test_stop_leaves_a_process_alone_whose_pid_was_reused(tmp_path):
    proc = subprocess.Popen(["sleep", "60"])
    try:
        started = process_start_time(proc.pid)
        assert started is not None
        spawner = _adopted(tmp_path, proc.pid, started - 1)  # another process had this pid
        assert spawner.poll() == -1
        asyncio.run(spawner.stop(grace=0.2))
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
