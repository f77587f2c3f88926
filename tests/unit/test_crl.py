"""Revocation: CRLs signed per CA, CRL Distribution Points, `ensure_identity`'s re-issue rules,
revocation checks in real TLS handshakes, and the CRLs served over HTTP."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from multidict import CIMultiDict

from tests.unit.test_pki import _handshake
from twinstack import cli
from twinstack.exitcodes import FatalError
from twinstack.pki import PkiError, describe_certificate, init_authority
from twinstack.pki.authority import CA_CRL, INTERMEDIATE_CRL, Authority, crl_urls, write_crl
from twinstack.pki.crl import MAX_AGE_SECONDS, crl_routes
from twinstack.pki.crlcheck import STALE_MARGIN
from twinstack.pki.identity import ensure_identity, issue_identity, service_request
from twinstack.pki.revocation import (
    REASONS,
    crl_number,
    crl_url,
    load_crl,
    read_certificate,
    refresh_crls,
    revoke,
    sign_crl,
    status_text,
)
from twinstack.pki.tls import ReloadingContexts, TlsFiles, client_context, server_context

URL = "https://gss.example:7400/pki/ca.crl"


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A fresh PKI per test: these tests change its CRLs."""
    directory = tmp_path / "pki"
    init_authority(directory)
    return directory


def _identity(pki: Path, name: str, issuer: str = "root", **kwargs: Any) -> TlsFiles:
    return issue_identity(pki, name, pki / name, issuer=issuer, **kwargs)  # type: ignore[arg-type]


def _leaf(files: TlsFiles) -> x509.Certificate:
    return read_certificate(files.cert)


def _crl(pki: Path, name: str = CA_CRL) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl((pki / name).read_bytes())


def _write_crl_at(pki: Path, issuer: str, now: datetime, days: float) -> None:
    """A CRL signed as if at `now` (e.g. one long expired), keeping the current entries."""
    old = load_crl(pki, issuer)  # type: ignore[arg-type]
    crl = Authority.load(pki, issuer).sign_crl(  # type: ignore[arg-type]
        list(old if old is not None else ()), number=crl_number(old) + 1, days=days, now=now)
    write_crl(crl, pki / (CA_CRL if issuer == "root" else INTERMEDIATE_CRL))


# --------------------------------------------------------------------------- signing


def test_init_writes_empty_signed_crls(pki: Path) -> None:
    for name, ca in ((CA_CRL, "ca.pem"), (INTERMEDIATE_CRL, "intermediate.pem")):
        crl = _crl(pki, name)
        issuer = x509.load_pem_x509_certificate((pki / ca).read_bytes())
        assert crl.issuer == issuer.subject
        assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        assert len(crl) == 0 and crl_number(crl) == 1
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == ski.digest
        now = datetime.now(UTC)
        assert crl.last_update_utc < now - timedelta(minutes=4)  # back-dated for slow clocks
        assert crl.next_update_utc is not None
        assert timedelta(days=6.9) < crl.next_update_utc - now <= timedelta(days=7)


def test_issue_with_and_without_crl_url(pki: Path) -> None:
    authority = Authority.load(pki)
    with_url = authority.issue(service_request("gss"), crl_url=URL).certificate
    points = with_url.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert not points.critical
    assert crl_urls(with_url) == [URL]
    assert crl_urls(authority.issue(service_request("gss")).certificate) == []


@pytest.mark.parametrize(("url", "problem"), [
    ("ftp://gss/pki/ca.crl", "http://HOST"),
    ("https:///pki/ca.crl", "http://HOST"),
    ("pki/ca.crl", "http://HOST"),
    ("https://gss:7400/pki/ca crl", "without spaces"),
    ("https://gss:70000/pki/ca.crl", "not a valid URL"),
    ("https://gss:0/pki/ca.crl", "port 0"),
    ("https://user:pw@gss/pki/ca.crl", "credentials"),
    ("https://gss/pki/ca.crl#x", "fragment"),
    ("https://gss\u00e9/ca.crl", "ASCII"),
    ("https://gss/" + "a" * 1100, "at most 1024"),
])
def test_bad_crl_urls_are_refused(pki: Path, url: str, problem: str) -> None:
    with pytest.raises(PkiError, match=problem):
        Authority.load(pki).issue(service_request("gss"), crl_url=url)


def test_crl_url_is_a_pure_function_of_its_inputs() -> None:
    assert crl_url("127.0.0.1", 7400) == "https://127.0.0.1:7400/pki/ca.crl"
    assert crl_url("gss.example.org", 443, "intermediate") == \
        "https://gss.example.org:443/pki/intermediate.crl"
    assert crl_url("::1", 7400) == "https://[::1]:7400/pki/ca.crl"
    with pytest.raises(PkiError, match="outside 1-65535"):
        crl_url("gss", 0)


def test_revoke_lists_the_serial_on_the_issuers_crl(pki: Path) -> None:
    platform = _leaf(_identity(pki, "relay"))
    compute = _leaf(_identity(pki, "kriging", issuer="intermediate"))

    done = revoke(pki, platform, reason="key-compromise")
    assert (done.issuer, done.serial, done.already) == ("root", platform.serial_number, False)
    root_crl = _crl(pki)
    entry = root_crl.get_revoked_certificate_by_serial_number(platform.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.key_compromise
    assert crl_number(root_crl) == 2 and len(_crl(pki, INTERMEDIATE_CRL)) == 0

    done = revoke(pki, compute)
    assert done.issuer == "intermediate"
    entry = _crl(pki, INTERMEDIATE_CRL).get_revoked_certificate_by_serial_number(
        compute.serial_number)
    assert entry is not None
    with pytest.raises(x509.ExtensionNotFound):  # RFC 5280: no reason rather than unspecified
        entry.extensions.get_extension_for_class(x509.CRLReason)


def test_revoking_twice_changes_nothing(pki: Path) -> None:
    cert = _leaf(_identity(pki, "auth"))
    first = revoke(pki, cert, reason="superseded")
    before = (pki / CA_CRL).read_bytes()
    again = revoke(pki, cert, reason="key-compromise")
    assert again.already and again.reason == "superseded" and again.date == first.date
    assert (pki / CA_CRL).read_bytes() == before


def test_intermediate_goes_on_the_roots_list_and_the_root_cannot_be_revoked(pki: Path) -> None:
    intermediate = read_certificate(pki / "intermediate.pem")
    assert revoke(pki, intermediate, reason="ca-compromise").issuer == "root"
    assert _crl(pki).get_revoked_certificate_by_serial_number(intermediate.serial_number)
    with pytest.raises(PkiError, match="self-signed"):
        revoke(pki, read_certificate(pki / "ca.pem"))


def test_foreign_certificates_and_reasons_are_refused(pki: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_authority(other)
    stranger = _leaf(_identity(other, "gss"))
    with pytest.raises(PkiError, match="was not issued by the CAs in"):
        revoke(pki, stranger)
    with pytest.raises(PkiError, match="unknown reason 'lost'"):
        revoke(pki, _leaf(_identity(pki, "gss")), reason="lost")


@pytest.mark.parametrize("damage", ["garbage", "foreign"])
def test_a_damaged_crl_is_never_replaced_by_an_empty_one(pki: Path, tmp_path: Path,
                                                         damage: str) -> None:
    if damage == "garbage":
        (pki / CA_CRL).write_text("not a CRL\n")
    else:
        init_authority(tmp_path / "other")
        shutil.copy(tmp_path / "other" / CA_CRL, pki / CA_CRL)
    before = (pki / CA_CRL).read_bytes()
    with pytest.raises(PkiError, match="move it away to start an empty list"):
        revoke(pki, _leaf(_identity(pki, "gss")))
    with pytest.raises(PkiError, match="move it away"):
        sign_crl(pki, "root")
    assert (pki / CA_CRL).read_bytes() == before


def test_each_signing_has_a_later_last_update(pki: Path) -> None:
    """OpenSSL uses the valid CRL with the latest lastUpdate; a tie would hide a revocation."""
    times = [_crl(pki).last_update_utc]
    for name in ("a", "b", "c"):
        revoke(pki, _leaf(_identity(pki, name)))
        times.append(_crl(pki).last_update_utc)
    assert times == sorted(set(times))
    assert crl_number(_crl(pki)) == 4


def test_concurrent_revocations_all_land(pki: Path) -> None:
    certs = [_leaf(_identity(pki, f"svc-{i}")) for i in range(6)]
    errors: list[BaseException] = []

    def run(cert: x509.Certificate) -> None:
        try:
            revoke(pki, cert)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(cert,)) for cert in certs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    listed = {entry.serial_number for entry in _crl(pki)}
    assert listed == {cert.serial_number for cert in certs}


def test_refresh_resigns_only_what_is_due(pki: Path) -> None:
    assert refresh_crls(pki) == []
    now = datetime.now(UTC)
    _write_crl_at(pki, "root", now - timedelta(days=5), days=7)  # 2 days left: due
    revoked = _leaf(_identity(pki, "gss"))
    revoke(pki, revoked, now=now - timedelta(days=5))
    (pki / INTERMEDIATE_CRL).unlink()
    assert sorted(p.name for p in refresh_crls(pki)) == [CA_CRL, INTERMEDIATE_CRL]
    crl = _crl(pki)
    assert crl.next_update_utc is not None and crl.next_update_utc - now > timedelta(days=6)
    assert crl.get_revoked_certificate_by_serial_number(revoked.serial_number)  # kept
    assert len(_crl(pki, INTERMEDIATE_CRL)) == 0
    assert refresh_crls(pki) == []
    with pytest.raises(PkiError, match="must be shorter"):
        refresh_crls(pki, days=3, refresh_before=timedelta(days=3))


def test_status_and_describe(pki: Path) -> None:
    files = _identity(pki, "gss", crl_url=URL)
    leaf = _leaf(files)
    assert status_text(pki, leaf).startswith("no (ca-crl.pem #1, next update ")
    revoke(pki, leaf, reason="privilege-withdrawn")
    assert "YES, since" in status_text(pki, leaf)
    text = describe_certificate(files.cert, lambda cert: status_text(pki, cert))
    assert f"CRL:         {URL}" in text
    assert "Revoked:     YES" in text and "privilege-withdrawn" in text
    assert "Revoked:" not in describe_certificate(files.cert)
    inter = describe_certificate(pki / "intermediate.pem", lambda c: status_text(pki, c))
    assert "CRL:         (none)" in inter and "Revoked:     no (ca-crl.pem" in inter


def test_cli_revoke_crl_and_show(pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _identity(pki, "logger", issuer="intermediate")
    assert cli.run(["certs", "revoke", "--dir", str(pki), str(files.cert),
                    "--reason", "key-compromise"]) == 0
    out = capsys.readouterr().out
    assert "revoked by the intermediate CA (key-compromise)" in out
    assert "/pki/intermediate.crl" in out
    assert cli.run(["certs", "revoke", "--dir", str(pki), str(files.cert)]) == 0
    assert "already revoked" in capsys.readouterr().out
    assert cli.run(["certs", "crl", "--dir", str(pki), "--days", "3"]) == 0
    out = capsys.readouterr().out
    assert "ca-crl.pem: 0 revoked" in out and "intermediate-crl.pem: 1 revoked" in out
    assert cli.run(["certs", "show", str(files.cert), "--dir", str(pki)]) == 0
    assert "Revoked:     YES" in capsys.readouterr().out
    assert cli.run(["certs", "revoke", "--dir", str(pki), str(pki / "ca.pem")]) == 11
    assert "self-signed" in capsys.readouterr().err
    assert set(REASONS) >= {"key-compromise", "superseded", "unspecified"}


# --------------------------------------------------------------------------- ensure_identity


def _ensure(pki: Path, **kwargs: Any) -> str | None:
    wanted: dict[str, Any] = {"hosts": ["gss.example", "10.1.2.3"], "crl_url": URL, **kwargs}
    return ensure_identity(pki, "gss", pki / "gss", **wanted).reissued


def test_ensure_issues_once_then_keeps(pki: Path) -> None:
    assert _ensure(pki) == "no certificate yet (gss-chain.pem is missing)"
    before = (pki / "gss-chain.pem").read_bytes(), (pki / "gss-key.pem").read_bytes()
    assert _ensure(pki) is None
    assert _ensure(pki, hosts=["10.1.2.3", "gss.example", "localhost"]) is None  # same set
    assert ((pki / "gss-chain.pem").read_bytes(), (pki / "gss-key.pem").read_bytes()) == before
    leaf = read_certificate(pki / "gss-chain.pem")
    assert crl_urls(leaf) == [URL]


def test_ensure_follows_hosts_and_crl_url(pki: Path) -> None:
    _ensure(pki)
    reason = _ensure(pki, hosts=["gss.example", "10.9.9.9"])
    assert reason == "the host names changed: the new certificate adds 10.9.9.9 and drops 10.1.2.3"
    sans = read_certificate(pki / "gss.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "10.9.9.9" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    new_url = "https://gss.example:9000/pki/ca.crl"
    assert _ensure(pki, hosts=["gss.example", "10.9.9.9"], crl_url=new_url) == \
        f"its CRL URL is {URL}, not {new_url}"
    assert crl_urls(read_certificate(pki / "gss.pem")) == [new_url]
    assert _ensure(pki, hosts=["gss.example", "10.9.9.9"], crl_url=None) == \
        f"its CRL URL is {new_url}, not none"
    assert _ensure(pki, hosts=["gss.example", "10.9.9.9"], crl_url=None) is None


def test_ensure_renews_within_the_window(pki: Path) -> None:
    _ensure(pki)
    soon = datetime.now(UTC) + timedelta(days=340)  # 25 days left of 365
    reason = _ensure(pki, now=soon)
    assert reason is not None and "within the 30-day renewal window" in reason
    assert _ensure(pki, now=soon) is None  # the new one has a year again
    assert _ensure(pki, now=soon + timedelta(days=400)) == "it has expired"
    with pytest.raises(PkiError, match="must be shorter than the validity"):
        _ensure(pki, days=20)


def test_ensure_replaces_revoked_foreign_and_mismatched(pki: Path, tmp_path: Path) -> None:
    _ensure(pki)
    revoke(pki, read_certificate(pki / "gss.pem"))
    assert _ensure(pki) == "it was revoked"
    assert _ensure(pki) is None

    (pki / "gss-key.pem").write_bytes(issue_identity(pki, "x", tmp_path / "x").key.read_bytes())
    assert _ensure(pki) == "the key does not match the certificate"

    assert ensure_identity(pki, "auth", pki / "gss", hosts=["gss.example", "10.1.2.3"],
                           crl_url=URL).reissued == \
        "its subject is CN=gss,OU=platform,O=TwinStack, not CN=auth,OU=platform,O=TwinStack"

    init_authority(pki, force=True)
    assert ensure_identity(pki, "auth", pki / "gss", hosts=["gss.example", "10.1.2.3"],
                           crl_url=URL).reissued == "it was not issued by the current root CA"


def test_ensure_with_the_intermediate_checks_the_chain(pki: Path) -> None:
    def ensure() -> str | None:
        return ensure_identity(pki, "kriging", pki / "k", session="s1",
                               issuer="intermediate").reissued

    assert ensure() is not None
    assert ensure() is None
    chain = x509.load_pem_x509_certificates((pki / "k-chain.pem").read_bytes())
    (pki / "k-chain.pem").write_bytes(chain[0].public_bytes(serialization.Encoding.PEM))
    assert ensure() == "its chain file does not hold the issuer's current chain"


# --------------------------------------------------------------------------- TLS checks


def _checking_server(files: TlsFiles, pki: Path) -> tuple[ReloadingContexts, ssl.SSLContext]:
    tls = ReloadingContexts(TlsFiles(files.cert, files.key, files.ca, crl_dir=pki))
    return tls, tls.server(require_client_cert=True)


def _refused(server: dict[str, Any]) -> str | None:
    """The server's verification error for the client certificate, or None if it was let in."""
    error = server.get("error")
    if error is None:
        assert server["client_read"] == b"ok"
        return None
    assert isinstance(error, ssl.SSLCertVerificationError), error
    return str(error.verify_message)


def test_revoked_client_is_refused_and_others_pass(pki: Path) -> None:
    server_files = _identity(pki, "logger")
    tls, server_ctx = _checking_server(server_files, pki)
    good, bad = _identity(pki, "gss"), _identity(pki, "relay")
    compute = _identity(pki, "kriging", issuer="intermediate", session="s1")
    for files in (good, bad, compute):
        assert _refused(_handshake(server_ctx, client_context(files))[0]) is None

    revoke(pki, _leaf(bad))
    assert tls.revocation is not None and tls.revocation.active
    tls.reload_if_changed()  # what the service's watcher does every cert_reload_seconds
    assert _refused(_handshake(server_ctx, client_context(bad))[0]) == "certificate revoked"
    assert _refused(_handshake(server_ctx, client_context(good))[0]) is None
    assert _refused(_handshake(server_ctx, client_context(compute))[0]) is None
    # A context made after the revocation gets the CRLs in force at once.
    later = tls.server(require_client_cert=True)
    assert _refused(_handshake(later, client_context(bad))[0]) == "certificate revoked"


def test_revoked_intermediate_cuts_off_its_leaves(pki: Path) -> None:
    tls, server_ctx = _checking_server(_identity(pki, "lss"), pki)
    compute = _identity(pki, "kriging", issuer="intermediate", session="s1")
    revoke(pki, read_certificate(pki / "intermediate.pem"), reason="ca-compromise")
    tls.reload_if_changed()
    assert _refused(_handshake(server_ctx, client_context(compute))[0]) == "certificate revoked"
    assert _refused(_handshake(server_ctx, client_context(_identity(pki, "gss")))[0]) is None


def test_client_side_refuses_a_revoked_server(pki: Path) -> None:
    server_files = _identity(pki, "gss")
    revoke(pki, _leaf(server_files))
    relay = _identity(pki, "relay")
    checking = ReloadingContexts(TlsFiles(relay.cert, relay.key, relay.ca, crl_dir=pki)).client()
    server_ctx = server_context(server_files, require_client_cert=True)
    _server, error = _handshake(server_ctx, checking)
    assert isinstance(error, ssl.SSLCertVerificationError)
    assert error.verify_message == "certificate revoked"
    _server, error = _handshake(server_ctx, client_context(relay))  # no CRL directory: no check
    assert error is None


def test_stale_crl_turns_checks_off_not_every_peer(pki: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Fail open, loudly: OpenSSL would refuse every handshake with an expired CRL."""
    bad = _identity(pki, "relay")
    revoke(pki, _leaf(bad))
    tls, server_ctx = _checking_server(_identity(pki, "logger"), pki)
    assert _refused(_handshake(server_ctx, client_context(bad))[0]) == "certificate revoked"

    now = datetime.now(UTC)
    caplog.set_level(logging.INFO, logger="twinstack.pki.crlcheck")
    # A newer CRL whose nextUpdate is already inside the stale margin.
    _write_crl_at(pki, "root", now + timedelta(minutes=1),
                  days=(STALE_MARGIN / 2 - timedelta(minutes=1)) / timedelta(days=1))
    tls.reload_if_changed()
    assert tls.revocation is not None and not tls.revocation.active
    assert "stale" in tls.revocation.reason
    assert any("revocation checks OFF" in r.getMessage() and r.levelname == "ERROR"
               for r in caplog.records)
    good = _identity(pki, "gss")
    assert _refused(_handshake(server_ctx, client_context(good))[0]) is None
    assert _refused(_handshake(server_ctx, client_context(bad))[0]) is None  # open, not closed

    sign_crl(pki, "root")  # the operator's `twinstack certs crl`
    tls.reload_if_changed()
    assert tls.revocation.active
    assert any("revocation checks on" in r.getMessage() for r in caplog.records)
    assert _refused(_handshake(server_ctx, client_context(bad))[0]) == "certificate revoked"
    assert _refused(_handshake(server_ctx, client_context(good))[0]) is None


def test_expired_crl_at_start_leaves_checks_off(pki: Path) -> None:
    _write_crl_at(pki, "intermediate", datetime.now(UTC) - timedelta(days=9), days=7)
    tls, server_ctx = _checking_server(_identity(pki, "logger"), pki)
    assert tls.revocation is not None and not tls.revocation.active
    assert "intermediate-crl.pem is stale" in tls.revocation.reason
    compute = _identity(pki, "kriging", issuer="intermediate", session="s1")
    assert _refused(_handshake(server_ctx, client_context(compute))[0]) is None


def test_missing_damaged_and_foreign_crls(pki: Path, tmp_path: Path) -> None:
    bad = _identity(pki, "relay")
    revoke(pki, _leaf(bad))
    saved = (pki / CA_CRL).read_bytes()
    (pki / CA_CRL).unlink()
    tls, server_ctx = _checking_server(_identity(pki, "logger"), pki)
    assert tls.revocation is not None and not tls.revocation.active
    assert "ca-crl.pem does not exist" in tls.revocation.reason
    assert _refused(_handshake(server_ctx, client_context(bad))[0]) is None

    (pki / CA_CRL).write_bytes(saved)  # it appears: checks come on by themselves
    tls.reload_if_changed()
    assert tls.revocation.active
    assert _refused(_handshake(server_ctx, client_context(bad))[0]) == "certificate revoked"

    for replacement in (b"-----BEGIN X509 CRL-----\ntorn", None):
        if replacement is None:
            init_authority(tmp_path / "other")
            replacement = (tmp_path / "other" / CA_CRL).read_bytes()
        (pki / CA_CRL).write_bytes(replacement)
        tls.reload_if_changed()  # skipped: the CRL in force stays in force
        assert tls.revocation.active
        assert _refused(_handshake(server_ctx, client_context(bad))[0]) == "certificate revoked"


def test_a_crl_not_yet_valid_waits(pki: Path) -> None:
    tls, _server_ctx = _checking_server(_identity(pki, "logger"), pki)
    assert tls.revocation is not None
    in_force = tls.revocation.loaded[CA_CRL]
    _write_crl_at(pki, "root", datetime.now(UTC) + timedelta(hours=1), days=7)
    tls.reload_if_changed()
    assert tls.revocation.loaded[CA_CRL] == in_force and tls.revocation.active
    tls.revocation.poll(now=datetime.now(UTC) + timedelta(hours=1))
    assert tls.revocation.loaded[CA_CRL] != in_force


def test_a_missing_crl_directory_is_an_error(pki: Path) -> None:
    files = _identity(pki, "logger")
    with pytest.raises(FatalError, match=r"CRL directory .* does not exist"):
        ReloadingContexts(TlsFiles(files.cert, files.key, files.ca, crl_dir=pki / "nope"))


# --------------------------------------------------------------------------- serving


Answer = tuple[int, CIMultiDict[str], bytes]


async def _get(crl_dir: Path | None, *requests: tuple[str, str, dict[str, str]]
               ) -> list[Answer]:
    app = web.Application()
    app.router.add_routes(crl_routes(crl_dir))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        answers = []
        for method, path, headers in requests:
            async with client.request(method, path, headers=headers) as response:
                answers.append((response.status, CIMultiDict(response.headers),
                                await response.read()))
        return answers


def _fetch(crl_dir: Path | None, path: str, headers: dict[str, str] | None = None,
           method: str = "GET") -> Answer:
    return asyncio.run(_get(crl_dir, (method, path, headers or {})))[0]


def test_serves_der_crls_with_cache_headers(pki: Path) -> None:
    status, headers, body = _fetch(pki, "/pki/ca.crl")
    assert status == 200 and headers["Content-Type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(body)
    assert crl == _crl(pki)
    root = read_certificate(pki / "ca.pem")
    assert crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
    etag = headers["ETag"]
    max_age = int(headers["Cache-Control"].split("max-age=")[1].split(",")[0])
    assert 0 < max_age <= MAX_AGE_SECONDS and "public" in headers["Cache-Control"]
    assert headers["Last-Modified"].endswith("GMT")

    status, headers, body = _fetch(pki, "/pki/ca.crl", {"If-None-Match": etag})
    assert status == 304 and body == b"" and headers["ETag"] == etag
    status, _headers, body = _fetch(pki, "/pki/ca.crl", method="HEAD")
    assert status == 200 and body == b""

    revoked = _leaf(_identity(pki, "gss"))
    revoke(pki, revoked)  # read fresh on every request
    status, headers, body = _fetch(pki, "/pki/ca.crl", {"If-None-Match": etag})
    assert status == 200 and headers["ETag"] != etag
    assert x509.load_der_x509_crl(body).get_revoked_certificate_by_serial_number(
        revoked.serial_number)

    status, headers, body = _fetch(pki, "/pki/intermediate.crl")
    assert status == 200 and x509.load_der_x509_crl(body) == _crl(pki, INTERMEDIATE_CRL)


def test_missing_or_damaged_crls_answer_json(pki: Path) -> None:
    (pki / INTERMEDIATE_CRL).unlink()
    status, headers, body = _fetch(pki, "/pki/intermediate.crl")
    assert status == 404 and headers["Content-Type"].startswith("application/json")
    assert b'"not_found"' in body and b"intermediate.crl" in body
    status, _headers, body = _fetch(None, "/pki/ca.crl")
    assert status == 404 and b"publishes no CRL" in body
    (pki / CA_CRL).write_text("-----BEGIN X509 CRL-----\ntorn")
    status, _headers, body = _fetch(pki, "/pki/ca.crl")
    assert status == 503 and b'"unavailable"' in body
    assert _fetch(pki, "/pki/other.crl")[0] == 404
