"""Settings: flags > TWINSTACK_* environment > config file > defaults, and clear errors."""

from __future__ import annotations

import argparse

import pytest

from twinstack.config import Settings, add_setting_flags, load_settings, split_host_port
from twinstack.exitcodes import ExitCode, FatalError


def test_precedence(tmp_path, monkeypatch):
    config = tmp_path / "t.toml"
    config.write_text('log_level = "warning"\nbind = "127.0.0.1:1"\ndependency_timeout = 3\n')
    monkeypatch.setenv("TWINSTACK_CONFIG", str(config))
    assert load_settings({}).log_level == "warning"
    monkeypatch.setenv("TWINSTACK_LOG_LEVEL", "error")
    settings = load_settings({"bind": "127.0.0.1:2"})
    assert (settings.log_level, settings.bind, settings.dependency_timeout) == \
        ("error", "127.0.0.1:2", 3.0)
    assert load_settings({"log_level": "debug"}).log_level == "debug"


def test_errors_name_the_setting(tmp_path):
    with pytest.raises(FatalError) as err:
        load_settings({"publish": "nohost"})
    assert err.value.code == ExitCode.CONFIG_ERROR and "publish" in err.value.message
    with pytest.raises(FatalError) as err:
        load_settings({"cert": "a.pem"})
    assert "cert and key must be given together" in err.value.message
    with pytest.raises(FatalError) as err:
        load_settings({"config": str(tmp_path / "missing.toml")})
    assert "does not exist" in err.value.message


def test_every_setting_has_a_flag_with_help():
    parser = argparse.ArgumentParser()
    add_setting_flags(parser)
    text = parser.format_help()
    for name, field in Settings.model_fields.items():
        assert "--" + name.replace("_", "-") in text
        assert field.description
    args = parser.parse_args(["--health-bind", "[::1]:9", "--verbose"])
    assert vars(args) == {"health_bind": "[::1]:9", "verbose": True}


@pytest.mark.parametrize(("text", "parsed"), [
    ("0.0.0.0:7410", ("0.0.0.0", 7410)), ("[::1]:80", ("::1", 80)),
    ("gss.local:0", ("gss.local", 0)),
])
def test_split_host_port(text, parsed):
    assert split_host_port(text) == parsed


@pytest.mark.parametrize("text", ["7410", "host:", ":80", "host:99999", "host:port"])
def test_split_host_port_refuses(text):
    with pytest.raises(ValueError):
        split_host_port(text)
