"""cfssl-style certificate request (CSR JSON) files.

TwinStack keeps the cfssl JSON format so existing ``csr.json`` files keep working after the
move away from cfssl scripts.  Example::

    {
      "CN": "$HOSTNAME$",
      "hosts": ["$HOSTNAME$", "$IP_ADDRESS$"],
      "key": {"algo": "ecdsa", "size": 256},
      "names": [{"O": "TwinStack", "OU": "simulation"}]
    }

``$HOSTNAME$`` and ``$IP_ADDRESS$`` are filled in from the local machine so the same file can
be shipped to every node.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from twinstack.pki.errors import PkiError

HOSTNAME_PLACEHOLDER = "$HOSTNAME$"
IP_ADDRESS_PLACEHOLDER = "$IP_ADDRESS$"

_FALLBACK_IP = "127.0.0.1"
_ALWAYS_HOSTS = ("localhost", "127.0.0.1")

RSA_SIZES = (2048, 3072, 4096)
EC_CURVES: dict[int, type[ec.EllipticCurve]] = {
    256: ec.SECP256R1,
    384: ec.SECP384R1,
    521: ec.SECP521R1,
}
# cfssl picks the size from the algorithm when "size" is omitted; keep that behaviour so
# {"algo": "rsa"} means RSA-2048 rather than an invalid RSA-256.
_DEFAULT_SIZES = {"rsa": 2048, "ecdsa": 256}

# RFC 5280 upper bounds; cryptography rejects an over-long CN only at signing time.
_Text64 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
_Text128 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]


class CsrKey(BaseModel):
    """Key algorithm and size; validated so a typo fails at load time, not at signing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algo: Literal["rsa", "ecdsa"] = "ecdsa"
    size: int = 256

    @model_validator(mode="before")
    @classmethod
    def _default_size_for_algo(cls, data: Any) -> Any:
        if isinstance(data, dict) and "size" not in data and data.get("algo") in _DEFAULT_SIZES:
            return {**data, "size": _DEFAULT_SIZES[data["algo"]]}
        return data

    @field_validator("size")
    @classmethod
    def _check_size(cls, size: int, info: ValidationInfo) -> int:
        algo = info.data.get("algo")
        if algo == "rsa" and size not in RSA_SIZES:
            raise ValueError(f"RSA keys must be 2048, 3072 or 4096 bits, not {size}")
        if algo == "ecdsa" and size not in EC_CURVES:
            raise ValueError(f"ECDSA keys must be 256, 384 or 521 bits, not {size}")
        return size

    def generate_private_key(self) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
        """Generate a fresh private key of this algorithm and size."""
        if self.algo == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=self.size)
        return ec.generate_private_key(EC_CURVES[self.size]())


class CsrName(BaseModel):
    """One entry of ``names``: subject attributes besides the CN."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    C: str | None = None
    ST: _Text128 | None = None
    L: _Text128 | None = None
    O: _Text64 | None = None  # noqa: E741 - cfssl field name
    OU: _Text64 | None = None

    @field_validator("C")
    @classmethod
    def _check_country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if len(value) != 2 or not value.isascii() or not value.isalpha():
            raise ValueError(f"country must be a two-letter code such as 'US', not {value!r}")
        return value.upper()


class CertificateRequest(BaseModel):
    """A parsed CSR JSON file: what to put in the certificate and which key to make."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    CN: _Text64
    hosts: list[str] = Field(default_factory=list)
    key: CsrKey = Field(default_factory=CsrKey)
    names: list[CsrName] = Field(default_factory=list)

    @field_validator("hosts")
    @classmethod
    def _check_hosts(cls, hosts: list[str]) -> list[str]:
        cleaned = []
        for host in hosts:
            host = host.strip()
            if not host:
                raise ValueError("host names must not be empty")
            if not host.isascii() or any(ch.isspace() for ch in host):
                raise ValueError(
                    f"invalid host {host!r}: use ASCII (punycode xn-- form for IDNs), no spaces"
                )
            cleaned.append(host)
        return cleaned


def _default_ip_address(hostname: str) -> str:
    """First IPv4 address the resolver gives for ``hostname``; never opens a connection."""
    try:
        infos = socket.getaddrinfo(hostname, None, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return _FALLBACK_IP
    for _family, _type, _proto, _canonname, sockaddr in infos:
        return str(sockaddr[0])
    return _FALLBACK_IP


def _fill_placeholders(value: Any, replacements: dict[str, str]) -> Any:
    if isinstance(value, str):
        for placeholder, replacement in replacements.items():
            value = value.replace(placeholder, replacement)
        return value
    if isinstance(value, list):
        return [_fill_placeholders(item, replacements) for item in value]
    if isinstance(value, dict):
        return {key: _fill_placeholders(item, replacements) for key, item in value.items()}
    return value


def _describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    return "; ".join(parts)


def load_request(
    path: Path, *, hostname: str | None = None, ip_address: str | None = None
) -> CertificateRequest:
    """Read and validate a CSR JSON file, filling ``$HOSTNAME$`` / ``$IP_ADDRESS$``.

    Placeholders default to this machine's host name and its first IPv4 address (127.0.0.1 if
    the name does not resolve), so one file serves every node.  Any problem raises
    :class:`PkiError` naming the file, so the CLI can print it as is.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PkiError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise PkiError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise PkiError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PkiError(
            f"{path}: invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise PkiError(f"{path}: expected a JSON object, got {type(data).__name__}")

    # Resolve defaults only when a placeholder is used: no resolver call for plain files.
    if HOSTNAME_PLACEHOLDER in text or IP_ADDRESS_PLACEHOLDER in text:
        if hostname is None:
            hostname = socket.gethostname()
        if ip_address is None:
            ip_address = _default_ip_address(hostname)
        data = _fill_placeholders(
            data, {HOSTNAME_PLACEHOLDER: hostname, IP_ADDRESS_PLACEHOLDER: ip_address}
        )
    try:
        return CertificateRequest.model_validate(data)
    except ValidationError as exc:
        raise PkiError(f"{path}: {_describe_validation_error(exc)}") from None


def request_hosts(req: CertificateRequest) -> list[str]:
    """The SANs to issue: the request's hosts plus localhost and 127.0.0.1, de-duplicated.

    Local names are always added so a service can be reached by a co-located sidecar or a
    health check without a special CSR.
    """
    return list(dict.fromkeys([*req.hosts, *_ALWAYS_HOSTS]))
