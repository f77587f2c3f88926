"""Each documented exit code, produced by a real failure of a real `twinstack serve` process."""

from __future__ import annotations

import json
import resource
import signal
import socket

import pytest

from tests.conftest import Pki, Services, free_port
from twinstack.exitcodes import ExitCode


def test_clean_stop_on_sigterm_and_sigint(services: Services, pki: Pki):
    for sig in (signal.SIGTERM, signal.SIGINT):
        service = services.start("logger", pki.identity("logger"))
        service.proc.send_signal(sig)
        assert service.proc.wait(timeout=60) == ExitCode.OK  # timeout: hang guard


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--log-level", "loud"], {}, "log_level"),
    ([], {"TWINSTACK_CERT_RELOAD_SECONDS": "-1"}, "cert_reload_seconds"),
    (["--bind", "localhost"], {}, "is not host:port"),
    (["--bind-fd", "1"], {}, "--bind-fd 1: Socket operation on non-socket"),  # its stdout
])
def test_bad_configuration(services: Services, pki: Pki, args, env, message):
    code, output = services.run_to_exit("logger", pki.identity("logger"), *args, env=env)
    assert code == ExitCode.CONFIG_ERROR, output
    assert message in output


def test_bad_config_file_and_unknown_service(services: Services, pki: Pki, tmp_path):
    config = tmp_path / "twinstack.toml"
    config.write_text('log_level = "info"\ncolour = "red"\n')
    code, output = services.run_to_exit("logger", pki.identity("logger"), "--config", str(config))
    assert code == ExitCode.CONFIG_ERROR and "colour" in output
    code, output = services.run_to_exit("teleporter", pki.identity("logger"))
    assert code == ExitCode.CONFIG_ERROR and "unknown service 'teleporter'" in output


def test_settings_precedence_flag_over_env_over_file(services: Services, pki: Pki, tmp_path):
    config = tmp_path / "twinstack.toml"
    config.write_text('log_level = "loud"\n')  # overridden by the environment: never read
    env = {"TWINSTACK_CONFIG": str(config), "TWINSTACK_LOG_LEVEL": "chatty"}
    code, output = services.run_to_exit("logger", pki.identity("logger"), env=env)
    assert code == ExitCode.CONFIG_ERROR and "log_level" in output  # env beats file
    service = services.start("logger", pki.identity("logger"), "--log-level", "debug", env=env)
    assert service.proc.poll() is None  # the flag beats both


def test_missing_key_file(services: Services, pki: Pki, tmp_path):
    identity = pki.identity("logger")
    code, output = services.run_to_exit(
        "logger", None, "--cert", str(identity.cert), "--key", str(tmp_path / "gone-key.pem"),
        "--ca", str(identity.ca))
    assert code == ExitCode.CERTIFICATE_ERROR, output
    assert "gone-key.pem does not exist" in output


def test_key_that_does_not_match_the_certificate(services: Services, pki: Pki):
    logger, other = pki.identity("logger"), pki.identity("gss")
    code, output = services.run_to_exit(
        "logger", None, "--cert", str(logger.cert), "--key", str(other.key), "--ca", str(logger.ca))
    assert code == ExitCode.CERTIFICATE_ERROR, output


def test_port_already_bound(services: Services, pki: Pki):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = services.run_to_exit("logger", pki.identity("logger"),
                                             "--bind", f"127.0.0.1:{port}")
    assert code == ExitCode.PORT_IN_USE, output
    assert f"127.0.0.1:{port}" in output


def test_required_logger_unreachable(services: Services, pki: Pki):
    """A forwarding service that must have its logger gives up after --dependency-timeout.

    Its message names the 1 s it waited (the default is 10 s): the flag, not the clock, is
    what is checked; run_to_exit's hang guard catches a service that never gives up.
    """
    code, output = services.run_to_exit(
        "kriging", pki.identity("kriging"), "--logger-url", f"https://127.0.0.1:{free_port()}",
        "--logger-required", "--dependency-timeout", "1")
    assert code == ExitCode.DEPENDENCY_UNREACHABLE, output
    assert "logger" in output and "did not answer within 1 s" in output


def test_internal_error_when_the_log_disk_fails(services: Services, pki: Pki, tmp_path):
    """A logger that cannot persist what it accepted stops rather than losing records.

    The failure is a real one: a file-size limit (a quota) that the log file has reached.
    """
    limit = 256 * 1024
    data = tmp_path / "quota"
    data.mkdir()
    old = json.dumps({"ts": 1.0, "level": "info", "service": "gss", "msg": "x" * 100}) + "\n"
    (data / "logs.jsonl").write_text(old * (limit // len(old)))

    def quota() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    service = services.start("logger", pki.identity("logger"), "--data-dir", str(data),
                             preexec=quota)
    assert service.proc.wait(timeout=60) == ExitCode.INTERNAL_ERROR  # timeout: hang guard
    assert "File too large" in service.output.read_text()


def test_usage_error_for_an_unknown_flag(services: Services, pki: Pki):
    code, output = services.run_to_exit("logger", pki.identity("logger"), "--colour", "red")
    assert code == ExitCode.USAGE, output
    assert "unrecognized arguments: --colour red" in output
