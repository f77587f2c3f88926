"""Certificate authority for TwinStack's mutual TLS.

A PKI directory holds::

    ca.pem                 root CA certificate (self-signed, 10 years by default)
    ca-key.pem             root CA private key (ECDSA P-384, PKCS8 PEM, mode 0600)
    intermediate.pem       intermediate CA certificate, signed by the root, pathlen 0
    intermediate-key.pem   intermediate CA private key (ECDSA P-384, PKCS8 PEM, mode 0600)
    ca-crl.pem             the root's certificate revocation list (PEM; see revocation.py)
    intermediate-crl.pem   the intermediate's certificate revocation list (PEM)

Services and clients trust only ``ca.pem``.  The root key signs long-lived service
certificates; the intermediate key is handed to local session services so they can sign
short-lived session certificates without the root key leaving the operator's machine.
Because the intermediate has pathlen 0 it cannot mint further CAs.

Every certificate carries the extensions that Python 3.13's ``ssl.VERIFY_X509_STRICT``
demands (SubjectKeyIdentifier everywhere, AuthorityKeyIdentifier on issued certificates,
critical BasicConstraints and KeyUsage), so strict verification works out of the box.

All files are written atomically (temporary file in the same directory, then ``os.replace``)
and key files are created 0600 before any key byte is written.  ``ca.pem`` is written last
during ``init_authority``: its presence means the directory is complete.

A leaf may name where its issuer's CRL is served (a CRL Distribution Point); the URL is an
argument of ``Authority.issue``, never looked up, so issuing stays a function of its inputs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from twinstack.pki.csr import CertificateRequest, request_hosts
from twinstack.pki.errors import PkiError

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
INTERMEDIATE_CERT = "intermediate.pem"
INTERMEDIATE_KEY = "intermediate-key.pem"
CA_CRL = "ca-crl.pem"
INTERMEDIATE_CRL = "intermediate-crl.pem"
CRL_DAYS = 7.0  # a CRL's nextUpdate window; re-signed well before (revocation.refresh_crls)

Profile = Literal["server", "client", "peer"]
IssuerKind = Literal["root", "intermediate"]

_ExtT = TypeVar("_ExtT", bound=x509.ExtensionType)
RevocationText = Callable[[x509.Certificate], str]

_KEY_MODE = 0o600
_CERT_MODE = 0o644
CLOCK_SKEW = timedelta(minutes=5)
_MAX_URL = 1024
_PROFILE_EKUS: dict[str, list[x509.ObjectIdentifier]] = {
    "server": [ExtendedKeyUsageOID.SERVER_AUTH],
    "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
    "peer": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
}
_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
}


# --------------------------------------------------------------------------- file helpers


def _atomic_write(path: Path, data: bytes, mode: int, *, durable: bool = True) -> None:
    """Write ``data`` so readers see the old file or the whole new one, never a torn file;
    `durable`: on disk before it returns (fsync), so it survives a power cut too."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; set the final mode before any content lands.
        os.chmod(tmp_name, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    if durable:
        _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself; best effort because not every platform allows it."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{path}: {what} not found (run `twinstack certs init`?)") from None
    except OSError as exc:
        raise PkiError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- signing helpers


_SignatureHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None


def _signature_hash(key: CertificateIssuerPrivateKeyTypes) -> _SignatureHash:
    """Hash matched to the issuer key's strength (Ed25519/Ed448 take none)."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size >= 521:
            return hashes.SHA512()
        if key.curve.key_size >= 384:
            return hashes.SHA384()
    return hashes.SHA256()


def _public_der(obj: x509.Certificate | PrivateKeyTypes) -> bytes:
    return obj.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """AKI copied from the issuer's SKI so chain building matches even for foreign CAs."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        public_key = issuer.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey
                          | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            raise PkiError(f"{issuer.subject.rfc4514_string()}: a {type(public_key).__name__} "
                           "cannot be a CA key") from None
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC, as cryptography itself does."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _ca_name(name: str, role: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} {role}"),
        ]
    )


def _key_usage(*, ca: bool, key_encipherment: bool = False) -> x509.KeyUsage:
    """CAs only sign certificates and CRLs; leaves only sign handshakes (and RSA may encrypt)."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    """What every certificate here has: names, key, random serial, validity, its key id."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _build_ca(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer_cert: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    path_length: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    public_key = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    if issuer_cert is None:
        issuer_name = subject
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    else:
        issuer_name = issuer_cert.subject
        aki = _authority_key_identifier(issuer_cert)
    builder = (
        _builder(subject, issuer_name, public_key, not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(aki, critical=False)
    )
    return builder.sign(issuer_key, _signature_hash(issuer_key))


# --------------------------------------------------------------------------- public API


def init_authority(
    directory: Path, *, name: str = "TwinStack", days: int = 3650, force: bool = False
) -> None:
    """Create a root CA and an intermediate CA (both ECDSA P-384) in ``directory``.

    Refuses to replace an existing ``ca.pem`` unless ``force``: a new root silently
    invalidates every certificate already handed out.
    """
    directory = Path(directory)
    if days <= 0:
        raise PkiError(f"CA validity must be a positive number of days, not {days}")
    if not name.strip():
        raise PkiError("CA name must not be empty")
    ca_path = directory / CA_CERT
    if ca_path.exists() and not force:
        raise PkiError(f"{ca_path}: already exists; use --force to replace the CA")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise PkiError(f"{directory}: cannot create directory: {exc.strerror or exc}") from None

    not_before = datetime.now(UTC) - CLOCK_SKEW
    not_after = not_before + timedelta(days=days)
    try:
        root_key = ec.generate_private_key(ec.SECP384R1())
        root_cert = _build_ca(
            _ca_name(name, "Root CA"), root_key, None, root_key, 1, not_before, not_after
        )
        inter_key = ec.generate_private_key(ec.SECP384R1())
        inter_cert = _build_ca(
            _ca_name(name, "Intermediate CA"),
            inter_key,
            root_cert,
            root_key,
            0,
            not_before,
            not_after,
        )
    except ValueError as exc:  # e.g. a name longer than X.509 allows
        raise PkiError(f"cannot create CA {name!r}: {exc}") from None

    # A new CA starts with empty CRLs, replacing those of a CA it replaces (--force).
    root_crl = Authority(root_cert, root_key, []).sign_crl([], number=1)
    inter_crl = Authority(inter_cert, inter_key, [inter_cert]).sign_crl([], number=1)
    try:
        _atomic_write(directory / CA_KEY, _key_pem(root_key), _KEY_MODE)
        _atomic_write(directory / INTERMEDIATE_KEY, _key_pem(inter_key), _KEY_MODE)
        _atomic_write(directory / INTERMEDIATE_CERT, _cert_pem(inter_cert), _CERT_MODE)
        write_crl(inter_crl, directory / INTERMEDIATE_CRL)
        write_crl(root_crl, directory / CA_CRL)
        _atomic_write(ca_path, _cert_pem(root_cert), _CERT_MODE)  # last: marks completion
    except OSError as exc:
        raise PkiError(f"{directory}: cannot write CA files: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class IssuedCertificate:
    """A freshly issued leaf with its key and the CAs needed to chain it to the root."""

    certificate: x509.Certificate
    key: PrivateKeyTypes
    chain: list[x509.Certificate]  # issuing CAs below the root; [] when the root signed it


class Authority:
    """A CA (root or intermediate) loaded from a PKI directory, able to issue leaves."""

    def __init__(
        self,
        certificate: x509.Certificate,
        key: CertificateIssuerPrivateKeyTypes,
        chain: list[x509.Certificate],
    ) -> None:
        self.certificate = certificate
        self.chain = list(chain)
        self._key = key

    @classmethod
    def load(cls, directory: Path, issuer: IssuerKind = "root") -> Authority:
        """Load the root or intermediate CA, checking that key and certificate belong together."""
        directory = Path(directory)
        if issuer == "root":
            cert_path, key_path = directory / CA_CERT, directory / CA_KEY
        elif issuer == "intermediate":
            cert_path, key_path = directory / INTERMEDIATE_CERT, directory / INTERMEDIATE_KEY
        else:
            raise PkiError(f"unknown issuer {issuer!r}: expected 'root' or 'intermediate'")

        cert_data = _read_file(cert_path, "CA certificate")
        key_data = _read_file(key_path, "CA key")
        try:
            certificate = x509.load_pem_x509_certificates(cert_data)[0]
        except ValueError as exc:
            raise PkiError(f"{cert_path}: not a PEM certificate: {exc}") from None
        try:
            key = serialization.load_pem_private_key(key_data, password=None)
        except TypeError:
            raise PkiError(f"{key_path}: encrypted keys are not supported") from None
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise PkiError(f"{key_path}: not a PEM private key: {exc}") from None
        if not isinstance(
            key,
            rsa.RSAPrivateKey
            | ec.EllipticCurvePrivateKey
            | ed25519.Ed25519PrivateKey
            | ed448.Ed448PrivateKey,
        ):
            raise PkiError(f"{key_path}: {type(key).__name__} cannot sign certificates")
        if _public_der(key) != _public_der(certificate):
            raise PkiError(f"{key_path}: key does not match certificate {cert_path.name}")
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.value.ca:
            raise PkiError(f"{cert_path}: not a CA certificate")
        chain = [certificate] if issuer == "intermediate" else []
        return cls(certificate, key, chain)

    def issue(
        self,
        request: CertificateRequest,
        *,
        profile: Profile = "peer",
        days: float = 365,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        crl_url: str | None = None,
    ) -> IssuedCertificate:
        """Issue a leaf certificate for ``request`` with a freshly generated key.

        ``not_before`` defaults to five minutes ago so peers with slightly slow clocks accept
        the certificate at once; explicit bounds exist so tests can mint expired certificates.
        ``crl_url`` (http or https) becomes the certificate's CRL Distribution Point: where a
        client fetches this CA's CRL to learn whether the certificate was revoked.
        """
        if profile not in _PROFILE_EKUS:
            raise PkiError(f"unknown profile {profile!r}: expected server, client or peer")
        now = datetime.now(UTC)
        start = _utc(not_before) if not_before is not None else now - CLOCK_SKEW
        if not_after is not None:
            end = _utc(not_after)
        else:
            if days <= 0:
                raise PkiError(f"validity must be a positive number of days, not {days}")
            end = (start if not_before is not None else now) + timedelta(days=days)
        if end <= start:
            raise PkiError(f"not_after ({end.isoformat()}) must be after not_before")
        if crl_url is not None:
            check_crl_url(crl_url)

        key = request.key.generate_private_key()
        public_key = key.public_key()
        # RSA key exchange (TLS 1.2 and older) encrypts to the key: allow key encipherment.
        usage = _key_usage(ca=False, key_encipherment=isinstance(key, rsa.RSAPrivateKey))
        builder = (
            _builder(subject_name(request), self.certificate.subject, public_key, start, end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage(_PROFILE_EKUS[profile]), critical=False)
            .add_extension(x509.SubjectAlternativeName(subject_alt_names(request)),
                           critical=False)
            .add_extension(_authority_key_identifier(self.certificate), critical=False)
        )
        if crl_url is not None:
            builder = builder.add_extension(_distribution_points(crl_url), critical=False)
        certificate = builder.sign(self._key, _signature_hash(self._key))
        return IssuedCertificate(certificate=certificate, key=key, chain=list(self.chain))

    def sign_crl(
        self,
        revoked: Iterable[x509.RevokedCertificate],
        *,
        number: int,
        days: float = CRL_DAYS,
        now: datetime | None = None,
    ) -> x509.CertificateRevocationList:
        """This CA's CRL listing ``revoked``, valid from five minutes ago for ``days``.

        Back-dating lastUpdate like certificates' notBefore keeps peers with slightly slow
        clocks from seeing a CRL that is "not yet valid" (OpenSSL refuses the handshake then).
        ``number`` is the CRL Number extension RFC 5280 requires: it grows with every CRL.
        """
        if days <= 0:
            raise PkiError(f"CRL validity must be a positive number of days, not {days}")
        if number < 0:
            raise PkiError(f"CRL number must not be negative, not {number}")
        moment = _utc(now) if now is not None else datetime.now(UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(moment - CLOCK_SKEW)
            .next_update(moment + timedelta(days=days))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(_authority_key_identifier(self.certificate), critical=False)
        )
        for entry in revoked:
            builder = builder.add_revoked_certificate(entry)
        return builder.sign(self._key, _signature_hash(self._key))


def check_crl_url(url: str) -> None:
    """A CRL Distribution Point must be an absolute http(s) URL a client can fetch as is."""
    if len(url) > _MAX_URL:
        raise PkiError(f"CRL URL is {len(url)} characters; at most {_MAX_URL} are allowed")
    if not url.isascii() or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise PkiError(f"CRL URL {url!r} must be printable ASCII without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when out of range or not a number
    except ValueError as exc:
        raise PkiError(f"CRL URL {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PkiError(f"CRL URL {url!r} must be http://HOST/... or https://HOST/...")
    if parts.username is not None or parts.fragment or port == 0:
        raise PkiError(f"CRL URL {url!r} must not carry credentials, a fragment or port 0")


def _distribution_points(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints([x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)], relative_name=None, reasons=None,
        crl_issuer=None)])


def crl_urls(certificate: x509.Certificate) -> list[str]:
    """The URLs of the certificate's CRL Distribution Points, in order (none: [])."""
    points = _extension_value(certificate, x509.CRLDistributionPoints)
    return [name.value for point in points or () for name in point.full_name or ()
            if isinstance(name, x509.UniformResourceIdentifier)]


def subject_name(request: CertificateRequest) -> x509.Name:
    """Subject in the conventional C, ST, L, O, OU, CN order, one set per ``names`` entry."""
    attributes = []
    for entry in request.names:
        for oid, value in (
            (NameOID.COUNTRY_NAME, entry.C),
            (NameOID.STATE_OR_PROVINCE_NAME, entry.ST),
            (NameOID.LOCALITY_NAME, entry.L),
            (NameOID.ORGANIZATION_NAME, entry.O),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, entry.OU),
        ):
            if value is not None:
                attributes.append(x509.NameAttribute(oid, value))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, request.CN))
    return x509.Name(attributes)


def subject_alt_names(request: CertificateRequest) -> list[x509.GeneralName]:
    """The SANs a certificate for ``request`` carries: IP literals as IPs, the rest DNS names."""
    names: list[x509.GeneralName] = []
    for host in request_hosts(request):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def write_issued(issued: IssuedCertificate, prefix: Path, *, durable: bool = True) -> list[Path]:
    """Write ``PREFIX.pem``, ``PREFIX-key.pem`` (0600) and ``PREFIX-chain.pem`` atomically
    (`durable`: and fsync'd).

    The chain file (leaf first, then intermediates) is what ``load_cert_chain`` wants; the
    bare leaf is kept for tools that inspect a single certificate.
    """
    prefix = Path(prefix)
    cert_path = prefix.with_name(f"{prefix.name}.pem")
    key_path = prefix.with_name(f"{prefix.name}-key.pem")
    chain_path = prefix.with_name(f"{prefix.name}-chain.pem")
    try:
        prefix.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(key_path, _key_pem(issued.key), _KEY_MODE, durable=durable)
        _atomic_write(cert_path, _cert_pem(issued.certificate), _CERT_MODE, durable=durable)
        _atomic_write(chain_path, _cert_pem(issued.certificate, *issued.chain), _CERT_MODE,
                      durable=durable)
    except OSError as exc:
        raise PkiError(f"{prefix}: cannot write certificate files: {exc.strerror or exc}") from None
    return [cert_path, key_path, chain_path]


def replace_identity(cert_path: Path, key_path: Path, cert_pem: bytes, key_pem: bytes) -> None:
    """Put a certificate chain and its key (PEM) in place of a service's files, each
    atomically, the key first: a reload between the two finds a mismatched pair, fails, and
    keeps the old one (`pki.tls.ReloadingContexts`)."""
    _atomic_write(key_path, key_pem, _KEY_MODE, durable=False)
    _atomic_write(cert_path, cert_pem, _CERT_MODE, durable=False)


def write_crl(crl: x509.CertificateRevocationList, path: Path) -> None:
    """Write a CRL as PEM, atomically: a service reloading it sees the old list or the new one.

    PEM because OpenSSL (and so Python's ``ssl``) loads CRLs only from PEM files; gss turns it
    into DER when serving it, as RFC 5280 wants for a distribution point.
    """
    try:
        _atomic_write(path, crl.public_bytes(serialization.Encoding.PEM), _CERT_MODE)
    except OSError as exc:
        raise PkiError(f"{path}: cannot write the CRL: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- inspection


def _key_description(certificate: x509.Certificate) -> str:
    public_key = certificate.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size} bits"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ECDSA {public_key.curve.name} ({public_key.key_size} bits)"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(public_key).__name__


def _extension_value(certificate: x509.Certificate, kind: type[_ExtT]) -> _ExtT | None:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _general_name_text(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    return str(name.value)


def _validity_text(certificate: x509.Certificate, now: datetime) -> str:
    not_before = certificate.not_valid_before_utc
    not_after = certificate.not_valid_after_utc
    if now > not_after:
        return "EXPIRED"
    if now < not_before:
        return "NOT YET VALID"
    remaining = (not_after - now).total_seconds()
    if remaining < 86400:
        hours = int(remaining // 3600)
        return f"valid for {hours} hour{'' if hours == 1 else 's'}"
    # Round: a fresh 365-day certificate should say 365, not 364 days and 23:59:59.
    days = round(remaining / 86400)
    return f"valid for {days} day{'' if days == 1 else 's'}"


def _describe_one(
    certificate: x509.Certificate, now: datetime, status: RevocationText | None
) -> list[str]:
    constraints = _extension_value(certificate, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        pathlen = constraints.path_length
        kind = "CA" + (f" (path length {pathlen})" if pathlen is not None else "")
    else:
        kind = "leaf"
    sans = _extension_value(certificate, x509.SubjectAlternativeName)
    san_text = ", ".join(_general_name_text(name) for name in sans) if sans else "(none)"
    ekus = _extension_value(certificate, x509.ExtendedKeyUsage)
    eku_text = (
        ", ".join(_EKU_NAMES.get(oid, oid.dotted_string) for oid in ekus) if ekus else "(none)"
    )
    return [
        f"  Subject:     {certificate.subject.rfc4514_string()}",
        f"  Issuer:      {certificate.issuer.rfc4514_string()}",
        f"  Serial:      {certificate.serial_number:x}",
        f"  Not before:  {certificate.not_valid_before_utc.isoformat()}",
        f"  Not after:   {certificate.not_valid_after_utc.isoformat()}"
        f" ({_validity_text(certificate, now)})",
        f"  SANs:        {san_text}",
        f"  Key:         {_key_description(certificate)}",
        f"  Type:        {kind}",
        f"  EKU:         {eku_text}",
        f"  CRL:         {', '.join(crl_urls(certificate)) or '(none)'}",
        *([f"  Revoked:     {status(certificate)}"] if status is not None else []),
    ]


def describe_certificate(path: Path, status: RevocationText | None = None) -> str:
    """Human-readable summary of every certificate in a PEM file, for ``twinstack certs show``.

    Chain files hold several certificates; each is listed in file order (leaf first).
    ``status`` says whether a certificate is revoked (``revocation.status_text`` bound to a
    PKI directory); without it no revocation line is printed.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{path}: file not found") from None
    except OSError as exc:
        raise PkiError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise PkiError(f"{path}: no PEM certificate found") from None
    now = datetime.now(UTC)
    lines: list[str] = []
    for index, certificate in enumerate(certificates, start=1):
        if lines:
            lines.append("")
        lines.append(f"Certificate {index} of {len(certificates)} in {path}:")
        lines.extend(_describe_one(certificate, now, status))
    return "\n".join(lines)
