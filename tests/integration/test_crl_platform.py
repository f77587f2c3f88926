"""Revocation on a real `twinstack up`: gss serves the CRL its certificates point at (no token),
`twinstack certs revoke` makes the running services refuse that certificate on the internal mTLS
channel while every other certificate keeps working, and the dev PKI follows the platform's
address from one start to the next.

Needs the `crl_dir` setting (`--crl-dir`, passed by the launcher to every service) and gss's
`public_routes` returning `pki.crl.crl_routes(settings.crl_dir)`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509

from tests.platform_fixtures import Platform, start_platform, stop_platform, wait_until
from twinstack.launcher import admin_identity
from twinstack.pki.authority import crl_urls
from twinstack.pki.identity import issue_identity
from twinstack.pki.revocation import read_certificate
from twinstack.pki.tls import TlsFiles, client_context
from twinstack.wire.client import ServiceClient
from twinstack.wire.errors import ServiceUnavailable

# Services look at their certificate and CRL files this often; the test waits for the effect.
RELOAD = {"TWINSTACK_CERT_RELOAD_SECONDS": "0.2"}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = start_platform(tmp_path_factory.mktemp("crl"), env=RELOAD)
    try:
        yield platform
    finally:
        stop_platform(platform)


def fetch(url: str, ca: Path) -> tuple[int, str, bytes]:
    """GET without any token or client certificate, trusting only the platform's CA."""
    try:
        with urllib.request.urlopen(url, context=ssl.create_default_context(cafile=ca),
                                    timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def info_error(url: str, files: TlsFiles) -> str | None:
    """Call `info` on an internal channel with `files`; the error text, or None if it worked."""
    async def call() -> str | None:
        async with ServiceClient(url, client_context(files), timeout=10) as client:
            try:
                await client.call("info")
            except ServiceUnavailable as exc:
                return exc.message
        return None
    return asyncio.run(call())


def answers(url: str, files: TlsFiles) -> bool:
    """Whether the service completes a TLS connection with `files` and answers HTTP on it.

    A refused client certificate shows only as a closed connection: asyncio drops the TLS alert
    that would say why (tests/unit/test_crl.py checks OpenSSL's reason, "certificate revoked")."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as raw, \
                client_context(files).wrap_socket(raw, server_hostname=parts.hostname) as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return tls.recv(5) == b"HTTP/"
    except (ssl.SSLError, ConnectionError):
        return False


def twinstack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "twinstack", *args], capture_output=True,
                          text=True, timeout=60)


def test_gss_serves_the_crl_its_certificates_name(running: Platform) -> None:
    pki = running.data / "pki"
    url = f"https://127.0.0.1:{running.port}/pki/ca.crl"
    for service in ("gss", "auth", "relay"):
        assert crl_urls(read_certificate(pki / f"{service}.pem")) == [url]

    status, content_type, body = fetch(url, running.ca)
    assert (status, content_type) == (200, "application/pkix-crl")
    crl = x509.load_der_x509_crl(body)
    root = read_certificate(running.ca)
    assert crl.issuer == root.subject
    assert crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]

    status, content_type, body = fetch(url.replace("ca.crl", "intermediate.crl"), running.ca)
    assert status == 200 and x509.load_der_x509_crl(body).issuer == \
        read_certificate(pki / "intermediate.pem").subject
    status, content_type, body = fetch(url.replace("ca.crl", "nope.crl"), running.ca)
    assert status == 404


def test_a_revoked_certificate_is_refused_on_the_internal_channel(running: Platform,
                                                                  tmp_path: Path) -> None:
    pki = running.data / "pki"
    logger_url = running.info()["logger_url"]
    probe = issue_identity(pki, "relay", tmp_path / "probe")
    compute = issue_identity(pki, "kriging", tmp_path / "compute", session="s1",
                             issuer="intermediate")
    admin = admin_identity(running.data)
    for files in (probe, compute, admin):
        assert answers(logger_url, files)
        assert info_error(logger_url, files) is None

    done = twinstack("certs", "revoke", "--dir", str(pki), str(probe.cert),
                     "--reason", "key-compromise")
    assert done.returncode == 0, done.stderr
    serial = read_certificate(probe.cert).serial_number
    served = x509.load_der_x509_crl(fetch(f"{running.url}/pki/ca.crl", running.ca)[2])
    assert served.get_revoked_certificate_by_serial_number(serial) is not None

    wait_until(lambda: not answers(logger_url, probe), timeout=60,
               what="the logger to refuse the revoked certificate")
    assert info_error(logger_url, probe) is not None
    wait_until(lambda: not answers(running.info()["gss_url"], probe), timeout=60,
               what="gss to refuse the revoked certificate")
    for files in (compute, admin):
        assert answers(logger_url, files)
        assert info_error(logger_url, files) is None


def test_the_dev_pki_follows_the_platforms_address(tmp_path: Path) -> None:
    """Another --port means another CRL URL: re-issued at start; the same one keeps them."""
    first = start_platform(tmp_path)
    try:
        before = read_certificate(first.data / "pki" / "gss.pem")
    finally:
        stop_platform(first)
    second = start_platform(tmp_path)  # the same data directory, another port
    try:
        after = read_certificate(second.data / "pki" / "gss.pem")
        assert after.serial_number != before.serial_number
        assert crl_urls(after) == [f"https://127.0.0.1:{second.port}/pki/ca.crl"]
        assert second.client().info()["service"] == "gss"  # the new certificate is in use
    finally:
        stop_platform(second)
    third = start_platform(tmp_path, "--port", str(second.port))  # the last --port wins
    try:
        assert read_certificate(third.data / "pki" / "gss.pem") == after
    finally:
        stop_platform(third)
