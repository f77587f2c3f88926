"""Tests for twinstack.pki: CSR files, the CA, issued certificates and real mTLS handshakes."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import ssl
import stat
import threading
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from twinstack.pki import (
    Authority,
    CertificateRequest,
    IssuedCertificate,
    PkiError,
    describe_certificate,
    init_authority,
    load_request,
    request_hosts,
    write_issued,
)
from twinstack.pki.tls import TlsFiles, client_context, server_context


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA for the module: P-384 key generation is cheap but not free."""
    directory = tmp_path_factory.mktemp("pki") / "ca"
    init_authority(directory, name="Test")
    return directory


def _request(cn: str, **kwargs: Any) -> CertificateRequest:
    return CertificateRequest.model_validate({"CN": cn, **kwargs})


def _ext(cert: x509.Certificate, kind: type) -> Any:
    return cert.extensions.get_extension_for_class(kind)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- CSR files


def test_placeholders_are_filled(tmp_path: Path) -> None:
    path = _write_json(
        tmp_path / "csr.json",
        {
            "CN": "$HOSTNAME$",
            "hosts": ["$HOSTNAME$", "$IP_ADDRESS$", "api.$HOSTNAME$.internal"],
            "names": [{"O": "TwinStack", "OU": "$HOSTNAME$-ou"}],
        },
    )
    req = load_request(path, hostname="node7", ip_address="10.1.2.3")
    assert req.CN == "node7"
    assert req.hosts == ["node7", "10.1.2.3", "api.node7.internal"]
    assert req.names[0].OU == "node7-ou"


def test_placeholder_defaults_come_from_this_machine(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "csr.json", {"CN": "$HOSTNAME$", "hosts": ["$IP_ADDRESS$"]})
    req = load_request(path)
    assert socket.gethostname() == req.CN
    assert ipaddress.ip_address(req.hosts[0]).version == 4


def test_request_hosts_always_has_localhost() -> None:
    req = _request("svc", hosts=["svc.example", "127.0.0.1", "svc.example", "10.0.0.5"])
    assert request_hosts(req) == ["svc.example", "127.0.0.1", "10.0.0.5", "localhost"]
    assert request_hosts(_request("bare")) == ["localhost", "127.0.0.1"]


def test_bad_key_size_names_file_and_field(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "csr.json", {"CN": "x", "key": {"algo": "rsa", "size": 1024}})
    with pytest.raises(
        PkiError, match=r"csr\.json: key\.size: RSA keys must be 2048, 3072 or 4096"
    ):
        load_request(path)
    path = _write_json(tmp_path / "csr.json", {"CN": "x", "key": {"algo": "ecdsa", "size": 2048}})
    with pytest.raises(PkiError, match=r"key\.size: ECDSA keys must be 256, 384 or 521"):
        load_request(path)


def test_unknown_field_and_bad_json_are_reported(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "csr.json", {"CN": "x", "names": [{"O": "a", "Org": "b"}]})
    with pytest.raises(PkiError, match=r"csr\.json: names\.0\.Org: unknown field"):
        load_request(path)
    path = _write_json(tmp_path / "extra.json", {"CN": "x", "profile": "server"})
    with pytest.raises(PkiError, match=r"extra\.json: profile: unknown field"):
        load_request(path)
    (tmp_path / "broken.json").write_text('{"CN": ', encoding="utf-8")
    with pytest.raises(PkiError, match=r"broken\.json: invalid JSON"):
        load_request(tmp_path / "broken.json")
    path = _write_json(tmp_path / "empty.json", {"CN": ""})
    with pytest.raises(PkiError, match=r"empty\.json: CN"):
        load_request(path)
    with pytest.raises(PkiError, match=r"missing\.json: file not found"):
        load_request(tmp_path / "missing.json")


def test_rsa_algo_without_size_defaults_to_2048(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "csr.json", {"CN": "x", "key": {"algo": "rsa"}})
    assert load_request(path).key.size == 2048


# --------------------------------------------------------------------------- the CA


def test_init_creates_ca_files_with_private_keys(pki_dir: Path) -> None:
    names = sorted(p.name for p in pki_dir.iterdir())
    assert names == ["ca-crl.pem", "ca-key.pem", "ca.pem", "intermediate-crl.pem",
                     "intermediate-key.pem", "intermediate.pem"]
    for key_file in ("ca-key.pem", "intermediate-key.pem"):
        assert _mode(pki_dir / key_file) == 0o600
    root = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
    inter = x509.load_pem_x509_certificate((pki_dir / "intermediate.pem").read_bytes())
    assert root.subject == root.issuer
    assert inter.issuer == root.subject
    inter.verify_directly_issued_by(root)
    for cert in (root, inter):
        assert _ext(cert, x509.BasicConstraints).critical
        assert _ext(cert, x509.BasicConstraints).value.ca
        usage = _ext(cert, x509.KeyUsage)
        assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
        _ext(cert, x509.SubjectKeyIdentifier)
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp384r1"
    assert _ext(inter, x509.BasicConstraints).value.path_length == 0
    aki = _ext(inter, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(root, x509.SubjectKeyIdentifier).value.digest


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    init_authority(tmp_path / "ca", days=30)
    before = (tmp_path / "ca" / "ca.pem").read_bytes()
    with pytest.raises(PkiError, match=r"ca\.pem"):
        init_authority(tmp_path / "ca")
    assert (tmp_path / "ca" / "ca.pem").read_bytes() == before
    init_authority(tmp_path / "ca", force=True)
    assert (tmp_path / "ca" / "ca.pem").read_bytes() != before
    assert not [p for p in (tmp_path / "ca").iterdir() if p.name.endswith(".tmp")]


def test_load_errors_are_clear(tmp_path: Path, pki_dir: Path) -> None:
    with pytest.raises(PkiError, match=r"ca\.pem: CA certificate not found"):
        Authority.load(tmp_path)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "ca.pem").write_bytes((pki_dir / "ca.pem").read_bytes())
    (mixed / "ca-key.pem").write_bytes((pki_dir / "intermediate-key.pem").read_bytes())
    with pytest.raises(PkiError, match=r"ca-key\.pem: key does not match"):
        Authority.load(mixed)


# --------------------------------------------------------------------------- issuing


@pytest.mark.parametrize(("algo", "size"), [("rsa", 2048), ("ecdsa", 256)])
def test_issue_rsa_and_ecdsa(pki_dir: Path, algo: str, size: int) -> None:
    req = _request(
        "svc-a",
        hosts=["svc-a.twin", "10.9.8.7"],
        key={"algo": algo, "size": size},
        names=[{"O": "TwinStack", "C": "de"}, {"OU": "solvers", "L": "Berlin"}],
    )
    issued = Authority.load(pki_dir).issue(req, profile="server")
    cert = issued.certificate
    assert cert.public_key().key_size == size
    expected_type = rsa.RSAPublicKey if algo == "rsa" else ec.EllipticCurvePublicKey
    assert isinstance(cert.public_key(), expected_type)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "svc-a"
    assert cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "DE"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == (
        "solvers"
    )
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["svc-a.twin", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [
        "10.9.8.7",
        "127.0.0.1",
    ]
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert usage.value.key_encipherment == (algo == "rsa")
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    assert issued.chain == []


def test_server_profile_has_no_client_auth(pki_dir: Path) -> None:
    authority = Authority.load(pki_dir)
    ekus = {}
    for profile in ("server", "client", "peer"):
        cert = authority.issue(_request("p"), profile=profile).certificate
        ekus[profile] = list(_ext(cert, x509.ExtendedKeyUsage).value)
    assert ekus["server"] == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ekus["client"] == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert set(ekus["peer"]) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_chain_from_intermediate_verifies(pki_dir: Path, tmp_path: Path) -> None:
    authority = Authority.load(pki_dir, "intermediate")
    issued = authority.issue(_request("session-1", hosts=["session-1.local"]), days=1)
    assert issued.chain == [authority.certificate]
    paths = write_issued(issued, tmp_path / "out" / "session-1")
    assert [p.name for p in paths] == ["session-1.pem", "session-1-key.pem", "session-1-chain.pem"]
    assert _mode(paths[1]) == 0o600
    chain = x509.load_pem_x509_certificates(paths[2].read_bytes())
    assert chain == [issued.certificate, authority.certificate]
    assert x509.load_pem_x509_certificates(paths[0].read_bytes()) == [issued.certificate]

    root = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
    verifier = (
        PolicyBuilder()
        .store(Store([root]))
        .time(datetime.now(UTC))
        .build_server_verifier(x509.DNSName("session-1.local"))
    )
    built = verifier.verify(chain[0], chain[1:])
    assert built[-1] == root
    assert _ext(chain[0], x509.AuthorityKeyIdentifier).value.key_identifier == (
        _ext(authority.certificate, x509.SubjectKeyIdentifier).value.digest
    )


def test_explicit_validity_window(pki_dir: Path) -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    issued = Authority.load(pki_dir).issue(_request("old"), not_before=start, days=2)
    assert issued.certificate.not_valid_before_utc == start
    assert issued.certificate.not_valid_after_utc == start + timedelta(days=2)
    with pytest.raises(PkiError, match="must be after"):
        Authority.load(pki_dir).issue(_request("bad"), not_before=start, not_after=start)


# --------------------------------------------------------------------------- TLS handshakes


def _issue_files(
    pki_dir: Path,
    out: Path,
    name: str,
    issuer: Literal["root", "intermediate"],
    profile: Literal["server", "client", "peer"],
    **kwargs: Any,
) -> tuple[Path, Path]:
    """Issue a certificate and write it; return (chain file, key file) for load_cert_chain."""
    issued: IssuedCertificate = Authority.load(pki_dir, issuer).issue(
        _request(name), profile=profile, **kwargs
    )
    _cert, key, chain = write_issued(issued, out / name)
    return chain, key


def _context(side: ssl.Purpose, ca: Path, chain: Path, key: Path) -> ssl.SSLContext:
    if side is ssl.Purpose.CLIENT_AUTH:  # server side
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cafile=ca)
    ctx.load_cert_chain(chain, key)
    return ctx


def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> tuple[dict[str, Any], BaseException | None]:
    """Run one TLS connection on 127.0.0.1; return what the server saw and any client error."""
    server: dict[str, Any] = {}
    client_error: BaseException | None = None
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _addr = listener.accept()
                conn.settimeout(10)
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    server["peer"] = tls.getpeercert()
                    server["version"], server["cipher"] = tls.version(), tls.cipher()
                    tls.sendall(b"ok")
            except Exception as exc:
                server["error"] = exc

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                server["client_read"] = tls.recv(2)
                server["client_ticket"] = tls.session is not None and tls.session.has_ticket
        except (ssl.SSLError, OSError) as exc:
            client_error = exc
        thread.join(10)
        assert not thread.is_alive()
    return server, client_error


def test_mutual_tls_handshake_with_strict_verification(pki_dir: Path, tmp_path: Path) -> None:
    ca = pki_dir / "ca.pem"
    server_files = _issue_files(pki_dir, tmp_path, "server-1", "intermediate", "server")
    client_files = _issue_files(pki_dir, tmp_path, "client-1", "root", "client")
    server, client_error = _handshake(
        _context(ssl.Purpose.CLIENT_AUTH, ca, *server_files),
        _context(ssl.Purpose.SERVER_AUTH, ca, *client_files),
    )
    assert client_error is None
    assert "error" not in server
    assert server["client_read"] == b"ok"
    assert (("commonName", "client-1"),) in server["peer"]["subject"]


def test_expired_server_certificate_is_rejected(pki_dir: Path, tmp_path: Path) -> None:
    ca = pki_dir / "ca.pem"
    now = datetime.now(UTC)
    server_files = _issue_files(
        pki_dir,
        tmp_path,
        "stale",
        "intermediate",
        "server",
        not_before=now - timedelta(days=10),
        not_after=now - timedelta(days=1),
    )
    client_files = _issue_files(pki_dir, tmp_path, "client-2", "root", "client")
    server, client_error = _handshake(
        _context(ssl.Purpose.CLIENT_AUTH, ca, *server_files),
        _context(ssl.Purpose.SERVER_AUTH, ca, *client_files),
    )
    assert isinstance(client_error, ssl.SSLCertVerificationError)
    assert "expired" in client_error.verify_message
    assert "peer" not in server


def test_expired_client_certificate_is_rejected(pki_dir: Path, tmp_path: Path) -> None:
    ca = pki_dir / "ca.pem"
    now = datetime.now(UTC)
    server_files = _issue_files(pki_dir, tmp_path, "server-3", "intermediate", "server")
    client_files = _issue_files(
        pki_dir,
        tmp_path,
        "old-client",
        "root",
        "client",
        not_before=now - timedelta(days=3),
        not_after=now - timedelta(hours=1),
    )
    server, _client_error = _handshake(
        _context(ssl.Purpose.CLIENT_AUTH, ca, *server_files),
        _context(ssl.Purpose.SERVER_AUTH, ca, *client_files),
    )
    assert isinstance(server.get("error"), ssl.SSLCertVerificationError)
    assert "expired" in server["error"].verify_message
    assert server.get("client_read") in (None, b"")


def test_server_only_certificate_cannot_act_as_client(pki_dir: Path, tmp_path: Path) -> None:
    ca = pki_dir / "ca.pem"
    server_files = _issue_files(pki_dir, tmp_path, "server-4", "root", "server")
    wrong_client = _issue_files(pki_dir, tmp_path, "server-only", "root", "server")
    server, _client_error = _handshake(
        _context(ssl.Purpose.CLIENT_AUTH, ca, *server_files),
        _context(ssl.Purpose.SERVER_AUTH, ca, *wrong_client),
    )
    assert isinstance(server.get("error"), ssl.SSLError)
    assert "peer" not in server


# --------------------------------------------------------------------------- TLS policy

# CBC suites an ECDSA certificate can serve: with SHA-2 (TLS 1.2 only) and with SHA-1.
CBC_SUITES = ("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:"
              "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")
# What a client or server of another era accepts, and what our contexts must refuse.
LEGACY = {
    "cbc": (CBC_SUITES, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, "NO_SHARED_CIPHER"),
    "tls1.1": ("DEFAULT", ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1, "UNSUPPORTED_PROTOCOL"),
}


def _legacy(side: ssl.Purpose, files: TlsFiles, kind: str) -> ssl.SSLContext:
    """A context willing to use CBC suites (kind "cbc") or only TLS 1.0/1.1 (kind "tls1.1")."""
    ciphers, oldest, newest, _reason = LEGACY[kind]
    ctx = _context(side, files.ca, files.cert, files.key)
    ctx.verify_mode = ssl.CERT_NONE if side is ssl.Purpose.CLIENT_AUTH else ssl.CERT_REQUIRED
    with warnings.catch_warnings():  # setting TLS 1.0 / 1.1 on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version, ctx.maximum_version = oldest, newest
    ctx.set_ciphers(f"{ciphers}:@SECLEVEL=0")  # OpenSSL 3 speaks TLS < 1.2 only at level 0
    return ctx


def _assert_legacy_pair_connects(files: TlsFiles, kind: str) -> None:
    """The legacy client and server get what they ask for from each other: they really offer it."""
    server, client_error = _handshake(_legacy(ssl.Purpose.CLIENT_AUTH, files, kind),
                                      _legacy(ssl.Purpose.SERVER_AUTH, files, kind))
    assert client_error is None and server["client_read"] == b"ok", server
    if kind == "cbc":
        assert server["cipher"][0] in CBC_SUITES.split(":")
    else:
        assert server["version"] == "TLSv1.1"


@pytest.fixture(scope="module")
def policy_files(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    out = tmp_path_factory.mktemp("policy")
    return TlsFiles(*_issue_files(pki_dir, out, "policy-peer", "root", "peer"), pki_dir / "ca.pem")


@pytest.mark.parametrize("kind", sorted(LEGACY))
@pytest.mark.parametrize("require_client_cert", [True, False], ids=["internal", "public-health"])
def test_server_contexts_refuse_cbc_and_tls11(policy_files: TlsFiles, kind: str,
                                              require_client_cert: bool) -> None:
    _assert_legacy_pair_connects(policy_files, kind)
    server, client_error = _handshake(
        server_context(policy_files, require_client_cert=require_client_cert),
        _legacy(ssl.Purpose.SERVER_AUTH, policy_files, kind))
    assert isinstance(client_error, ssl.SSLError)
    assert isinstance(server.get("error"), ssl.SSLError)
    assert server["error"].reason == LEGACY[kind][3]


@pytest.mark.parametrize("kind", sorted(LEGACY))
@pytest.mark.parametrize("mutual", [True, False], ids=["mtls", "one-way"])
def test_client_contexts_refuse_cbc_and_tls11(policy_files: TlsFiles, kind: str,
                                              mutual: bool) -> None:
    _assert_legacy_pair_connects(policy_files, kind)
    client = client_context(policy_files) if mutual else client_context(ca=policy_files.ca)
    server, client_error = _handshake(_legacy(ssl.Purpose.CLIENT_AUTH, policy_files, kind),
                                      client)
    assert isinstance(client_error, ssl.SSLError)
    # The server finds nothing it may use in what our client offers.
    assert isinstance(server.get("error"), ssl.SSLError)
    assert server["error"].reason == LEGACY[kind][3]


def test_policy_contexts_agree_on_aead_without_tickets(policy_files: TlsFiles) -> None:
    """Our server and client settle on an AEAD suite, and the server issues no session ticket."""
    files = policy_files
    for newest, version in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (None, "TLSv1.3")):
        client = client_context(ca=files.ca)
        if newest is not None:
            client.maximum_version = newest
        server, client_error = _handshake(server_context(files, require_client_cert=False),
                                          client)
        assert client_error is None and "error" not in server, server
        assert server["version"] == version
        assert re.search("GCM|CHACHA20", server["cipher"][0]), server["cipher"]
        assert server["client_ticket"] is False  # no resumption keys to steal
    # A server with OpenSSL's defaults does hand out tickets: the check above can fail.
    default_server = _context(ssl.Purpose.CLIENT_AUTH, files.ca, files.cert, files.key)
    default_server.verify_mode = ssl.CERT_NONE
    server, client_error = _handshake(default_server, client_context(ca=files.ca))
    assert client_error is None and server["client_ticket"] is True


# --------------------------------------------------------------------------- describe


def test_describe_certificate(pki_dir: Path, tmp_path: Path) -> None:
    authority = Authority.load(pki_dir, "intermediate")
    now = datetime.now(UTC)
    fresh = authority.issue(_request("web-1", hosts=["web-1.twin", "10.0.0.9"]), days=30)
    paths = write_issued(fresh, tmp_path / "web-1")
    text = describe_certificate(paths[2])
    assert text.count("Subject:") == 2
    assert "CN=web-1" in text
    assert "DNS:web-1.twin" in text and "DNS:localhost" in text and "IP:127.0.0.1" in text
    assert "IP:10.0.0.9" in text
    assert "leaf" in text and "CA (path length 0)" in text
    assert "serverAuth" in text and "clientAuth" in text
    assert "ECDSA secp256r1" in text
    assert "valid for 30 days" in text
    assert "EXPIRED" not in text

    old = authority.issue(
        _request("gone"), not_before=now - timedelta(days=9), not_after=now - timedelta(days=2)
    )
    text = describe_certificate(write_issued(old, tmp_path / "gone")[0])
    assert "CN=gone" in text and "EXPIRED" in text


def test_describe_certificate_errors(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match=r"nope\.pem: file not found"):
        describe_certificate(tmp_path / "nope.pem")
    (tmp_path / "junk.pem").write_text("not a certificate\n", encoding="utf-8")
    with pytest.raises(PkiError, match=r"junk\.pem: no PEM certificate"):
        describe_certificate(tmp_path / "junk.pem")


def test_a_claimed_pod_follows_only_its_own_sessions_renewals(pki_dir: Path,
                                                               tmp_path: Path) -> None:
    """follow_identity: what a claimed warm pool pod does with its mounted Secret."""
    from twinstack.pki.identity import follow_identity, issue_identity

    served = issue_identity(pki_dir, "kriging", tmp_path / "served", session="s1",
                            issuer="intermediate")
    mount = tmp_path / "mount"
    mount.mkdir()

    def mounted(cert: TlsFiles, key: TlsFiles) -> None:
        (mount / "tls.crt").write_bytes(cert.cert.read_bytes())
        (mount / "tls.key").write_bytes(key.key.read_bytes())
    before = served.cert.read_bytes()
    assert not follow_identity(mount, served, "s1")  # nothing mounted yet
    pool = issue_identity(pki_dir, "kriging", tmp_path / "pool", session="pool-kriging-1",
                          issuer="intermediate")
    renewed = issue_identity(pki_dir, "kriging", tmp_path / "renewed", session="s1",
                             issuer="intermediate")
    other = issue_identity(pki_dir, "kriging", tmp_path / "other", session="s2",
                           issuer="intermediate")
    for cert, key in ((pool, pool), (other, other), (renewed, pool)):  # not its session's,
        mounted(cert, key)                                            # or a half-written pair
        assert not follow_identity(mount, served, "s1")
        assert served.cert.read_bytes() == before
    mounted(renewed, renewed)
    assert follow_identity(mount, served, "s1")
    assert served.cert.read_bytes() == renewed.cert.read_bytes()
    assert served.key.read_bytes() == renewed.key.read_bytes()
    assert not follow_identity(mount, served, "s1")  # taken: nothing more to do
