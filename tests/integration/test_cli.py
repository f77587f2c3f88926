"""The command line as a user runs it: certs from a CSR file, and `twinstack up` / `logs`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509

from tests.platform_fixtures import free_port_block


def twinstack(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "twinstack", *args], text=True,
                          capture_output=True, timeout=60, **kw)  # type: ignore[call-overload]


def test_certs_init_issue_show(tmp_path: Path):
    pki = tmp_path / "pki"
    assert twinstack("certs", "init", "--dir", str(pki)).returncode == 0
    again = twinstack("certs", "init", "--dir", str(pki))
    assert again.returncode == 11 and "ca.pem" in again.stderr
    csr = tmp_path / "gss.json"
    csr.write_text(json.dumps({"CN": "gss", "hosts": ["$HOSTNAME$", "$IP_ADDRESS$", "gss.example"],
                               "key": {"algo": "rsa", "size": 2048},
                               "names": [{"O": "TwinStack", "OU": "public"}]}))
    issued = twinstack("certs", "issue", "--dir", str(pki), "--csr", str(csr), "--out",
                       str(pki / "gss"), "--hostname", "front-1", "--ip-address", "10.1.2.3",
                       "--profile", "server", "--issuer", "intermediate")
    assert issued.returncode == 0, issued.stderr
    chain = x509.load_pem_x509_certificates((pki / "gss-chain.pem").read_bytes())
    assert len(chain) == 2  # leaf + intermediate
    sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"front-1", "gss.example", "localhost"}
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == \
        {"10.1.2.3", "127.0.0.1"}
    assert oct((pki / "gss-key.pem").stat().st_mode & 0o777) == "0o600"
    shown = twinstack("certs", "show", str(pki / "gss-chain.pem"))
    assert "CN=gss" in shown.stdout and "front-1" in shown.stdout and "10.1.2.3" in shown.stdout

    csr.write_text('{"CN": "gss", "key": {"algo": "rsa", "size": 1024}}')
    bad = twinstack("certs", "issue", "--dir", str(pki), "--csr", str(csr), "--out",
                    str(pki / "bad"))
    assert bad.returncode == 11 and "2048, 3072 or 4096" in bad.stderr
    assert not (pki / "bad.pem").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_runs_the_platform_and_stops_everything(tmp_path: Path):
    data = tmp_path / "data"
    port = free_port_block()  # the platform takes --port and the 19 above it
    up = subprocess.Popen([sys.executable, "-m", "twinstack", "up", "--data-dir", str(data),
                           "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        lines = []
        while not any("TwinStack is up" in line for line in lines):
            assert time.monotonic() < deadline and up.poll() is None, lines
            lines.append(up.stdout.readline())  # type: ignore[union-attr]
        platform = json.loads((data / "platform.json").read_text())
        pids = [s["pid"] for s in platform["services"].values()]
        assert pids and all(_alive(pid) for pid in pids)

        logs = twinstack("logs", "--data-dir", str(data), "--json")
        assert logs.returncode == 0, logs.stderr
        assert any(json.loads(line)["msg"] == "logger ready" for line in logs.stdout.splitlines())
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(timeout=30)
    assert code == 0
    assert not any(_alive(pid) for pid in pids)
    assert not (data / "platform.json").exists()
