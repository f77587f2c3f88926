"""One settings object for every process: flags > TWINSTACK_* environment > file > defaults.

Each setting is declared once, with its type, default and help text; the command line flags of
`twinstack serve` are generated from these declarations so `--help` always shows all of them.
"""

from __future__ import annotations

import argparse
import os
import socket
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from twinstack.exitcodes import ExitCode, FatalError
from twinstack.sessiontypes import default_capacity

ENV_PREFIX = "TWINSTACK_"


def split_host_port(address: str) -> tuple[str, int]:
    """Split `host:port` (or `[v6]:port`) into its parts, refusing anything else."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{address!r} is not host:port (e.g. 0.0.0.0:7410 or [::1]:7410)")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} in {address!r} is outside 0-65535")
    return host.strip("[]"), port


def join_host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def published_address(host: str, port: int) -> str:
    """Where others reach a listener bound to host:port: the machine's name for a wildcard."""
    if host in ("0.0.0.0", "::"):
        return f"{socket.gethostname()}:{port}"
    return join_host_port(host, port)


def _valid_address(address: str) -> str:
    split_host_port(address)
    return address


Address = Annotated[str, AfterValidator(_valid_address)]


def _auto_capacity(value: Any) -> Any:
    """`auto` (the default) becomes the capacity derived from this machine."""
    return default_capacity() if value == "auto" else value


LogLevel = Literal["debug", "info", "warning", "error"]

_config_file: ContextVar[Path | None] = ContextVar("twinstack_config_file", default=None)


class _TomlFileSource(PydanticBaseSettingsSource):
    """The lowest-precedence source: a TOML file whose keys are the setting names."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _config_file.get()
        if path is None:
            return {}
        try:
            return tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise FatalError(ExitCode.CONFIG_ERROR, f"config file {path} does not exist") from exc
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise FatalError(ExitCode.CONFIG_ERROR, f"config file {path}: {exc}") from exc


class Settings(BaseSettings):
    """Every knob of a TwinStack process. Not every service uses every setting."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    bind: Address | None = Field(
        None, description="internal (mutual TLS) listener, host:port; port 0 picks a free port; "
        "default 0.0.0.0 and the service's own port")
    bind_fd: int | None = Field(
        None, ge=0, description="internal listener: a listening socket inherited as this file "
        "descriptor (from the LSS, which knows its address before the service starts), instead "
        "of --bind")
    claim_bind: Address | None = Field(
        None, description="wait, warmed up and of no session, until an LSS claims this "
        "process for a session at this address (mutual TLS; a Kubernetes warm pool's pod), "
        "then serve that session")
    publish: Address | None = Field(
        None, description="address other services use to reach the internal listener "
        "(host:port); default: this machine's host name and the bound port")
    health_bind: Address | None = Field(
        None, description="health listener (/healthz, /readyz, /metrics; TLS, no client "
        "certificate), host:port")
    public_bind: Address | None = Field(
        None, description="public listener for thin clients (TLS + bearer token), host:port; "
        "only services with a public channel open it")
    cert: Path | None = Field(
        None, description="this service's certificate chain (PEM: leaf first, then intermediates)")
    identity_from: Path | None = Field(
        None, description="a directory (a mounted Kubernetes Secret: tls.crt, tls.key) whose "
        "certificate and key of this session replace --cert and --key whenever they change: "
        "how a claimed warm pool pod takes its renewed certificates")
    key: Path | None = Field(None, description="private key of --cert (PEM)")
    ca: Path | None = Field(None, description="CA bundle that peers' certificates must chain to")
    crl_dir: Path | None = Field(
        None, description="directory with the CAs' CRLs (ca-crl.pem, intermediate-crl.pem and "
        "intermediate.pem; a PKI directory is one): peers' certificates are checked against "
        "them while they are valid, and gss serves them at /pki/ca.crl and /pki/intermediate.crl")
    cert_reload_seconds: float = Field(
        5.0, gt=0, description="how often certificate files are checked for changes on disk")
    session: str | None = Field(None, description="session id (compute services only)")
    project: str | None = Field(
        None, description="project id of the session (the model service: whose history it "
        "writes)")
    model_url: str | None = Field(
        None, description="internal URL of the session's model service (compute services that "
        "read and write project data)")
    data_dir: Path = Field(Path("data"), description="directory for this service's files")
    log_level: LogLevel = Field("info", description="lowest level of log records kept")
    verbose: bool = Field(False, description="human-readable logs instead of JSON lines")
    logger_url: str | None = Field(
        None, description="internal URL of the logger service (https://host:port); "
        "log records are forwarded there in batches")
    logger_required: bool = Field(
        False, description="exit if the logger does not answer at start-up")
    dependency_timeout: float = Field(
        10.0, gt=0, description="seconds to wait for a required dependency at start-up")
    ready_file: Path | None = Field(
        None, description="file to write the bound addresses to (JSON) once the service is ready")

    parent_pid: int | None = Field(
        None, description="stop when this process exits (set by the launcher for platform "
        "services)")
    lease_file: Path | None = Field(
        None, description="stop when this file is gone or not renewed for --lease-seconds (set "
        "by the LSS for its compute services: they outlive an LSS restart, not its loss)")
    lease_seconds: float = Field(
        20.0, gt=0, description="how long a compute service runs on without its LSS renewing "
        "its lease")

    # data
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the platform database (postgresql+psycopg://...); "
        "default: a SQLite file in --data-dir")
    blob_dir: Path | None = Field(
        None, description="directory of content-addressed blobs (B-rep files, meshes, fields), "
        "shared by every service of a project's sessions; default: blobs in --data-dir")
    token_ttl_hours: float = Field(12.0, gt=0, description="lifetime of a login token")

    # front door and relay
    gss_url: str | None = Field(
        None, description="internal URL of the global session service (https://host:port)")
    auth_public_url: str | None = Field(
        None, description="public URL of the auth service, told to clients by gss")
    relay_public_url: str | None = Field(
        None, description="public URL of the relay, told to clients by gss")
    web_origins: str = Field(
        "", description="comma-separated origins (https://host:port) of the web page allowed "
        "to call this public listener from a browser (CORS, WebSocket Origin); the launcher "
        "passes the front door's")
    lss_timeout_seconds: float = Field(
        15.0, gt=0, description="an LSS silent this long is marked lost with its sessions")
    queue_timeout_seconds: float = Field(
        600.0, gt=0, description="a session waiting this long for a session node with room "
        "fails (it is queued while every LSS is full)")

    # local session service
    lss_name: str | None = Field(None, description="this LSS's name (default: host name)")
    capacity: Annotated[int, BeforeValidator(_auto_capacity)] = Field(
        "auto", ge=1, validate_default=True, description="sessions this LSS runs at most; "
        "'auto': as many as this machine's cores and memory hold at the session types' declared "
        "needs (twinstack.sessiontypes; give it for a Kubernetes LSS)")
    session_memory_mb: float | None = Field(
        None, gt=0, description="memory (MB) an LSS's sessions may take in all: gss places a "
        "session only where what the live ones reserve (their session types' declared needs, "
        "twinstack.sessiontypes) leaves room for it; default: this machine's memory less a "
        "reserve (with the Kubernetes spawner, none: give it there)")
    gpus: int = Field(0, ge=0, description="GPUs this LSS offers to solver services")
    session_ca: Path | None = Field(
        None, description="PKI directory with intermediate.pem and intermediate-key.pem, "
        "used to sign the compute services' certificates")
    spawner: Literal["process", "forked", "kubernetes"] = Field(
        "process", description="how the LSS runs compute services: local processes, local "
        "processes forked from a warm parent that has imported the platform once, or one pod "
        "each (from inside a cluster)")
    warm_pool: int = Field(
        0, ge=0, le=16, description="this many waiting, warmed-up compute services of each "
        "kind (at most --capacity), which sessions claim instead of starting one (one each): "
        "children of the warm parent (forked spawner) or pods in the namespace (kubernetes "
        "spawner)")
    namespace: str = Field("twinstack", description="Kubernetes namespace for compute pods")
    compute_image: str = Field(
        "twinstack-compute:0.1.0", description="image of compute pods (kubernetes spawner)")
    tunnel: bool = Field(
        False, description="the relay cannot reach this LSS's compute services (it is behind "
        "NAT): carry calls to them over the LSS's own outbound link to the GSS")
    spawn_host: str = Field(
        "127.0.0.1", description="address compute services bind and publish")
    heartbeat_seconds: float = Field(5.0, gt=0, description="LSS heartbeat interval")
    restart_backoff: float = Field(
        0.5, gt=0, description="first delay before restarting a crashed service (compute "
        "services, and platform services under twinstack up); doubles each time")
    restart_backoff_max: float = Field(30.0, gt=0, description="longest restart delay")
    restart_limit: int = Field(
        5, ge=0, description="restarts in a row after which the session fails")
    restart_reset_seconds: float = Field(
        60.0, gt=0, description="uptime after which a service's restart count starts over")
    ready_timeout_seconds: float = Field(
        60.0, gt=0, description="how long a started service (platform or compute) may take to "
        "become ready")
    liveness_seconds: float = Field(
        5.0, gt=0, description="how often `twinstack up` asks each platform service's /healthz; "
        "after 3 failures in a row (an essential loop ended, or no answer in that time) it kills "
        "the service, which is then restarted")
    stop_grace_seconds: float = Field(
        5.0, gt=0, description="how long a stopped compute service gets between SIGTERM and "
        "SIGKILL")
    spawner_factory: str | None = Field(
        None, description="for tests only: module:callable(spec, lss) returning the spawner "
        "of each compute service, instead of --spawner")

    # limits: what one request, one user and one compute action may use (see README "Limits")
    max_message_bytes: int = Field(
        16 * 2**20, ge=1024, description="largest request body or WebSocket message a "
        "listener accepts, and largest reply a service sends (bytes)")
    max_json_depth: int = Field(
        32, ge=2, le=512, description="deepest nesting of arrays and objects in a request")
    compute_memory_mb: int = Field(
        512, ge=64, description="memory one compute action may plan to use; larger requests "
        "are refused before anything is allocated")
    compute_workers: int = Field(
        0, ge=0, le=64, description="worker processes one compute service may run side by "
        "side for one action (phreeqc splits a speciation batch between them); 0: one per "
        "core it may use, up to 4")
    compute_work_gflop: float = Field(
        200.0, gt=0, description="floating-point work (GFLOP) one compute action may plan to "
        "do; larger requests are refused before they start")
    relay_sockets_per_user: int = Field(
        16, ge=1, description="open relay WebSockets one user may hold at once")
    relay_calls_per_user: int = Field(
        32, ge=1, description="calls one user may have in flight through the relay at once")
    relay_buffer_mb: int = Field(
        64, ge=1, description="request and reply bytes the relay holds in flight for all "
        "users together; one user may take a quarter of it (at least one largest message)")
    login_free_failures: int = Field(
        5, ge=1, description="failed logins for one user from one address before each "
        "further attempt must wait (the wait doubles with every failure)")
    login_user_free_failures: int = Field(
        20, ge=1, description="failed logins for one user from all addresses together before "
        "attempts on that user must wait")
    login_address_free_failures: int = Field(
        100, ge=1, description="failed logins from one address for all users together before "
        "attempts from that address must wait")
    login_max_delay_seconds: float = Field(
        900.0, gt=0, description="longest wait imposed after failed logins")
    login_failure_memory_seconds: float = Field(
        3600.0, gt=0, description="failed logins older than this are forgotten")

    def blob_path(self) -> Path:
        """Where blobs are: --blob-dir, else blobs in --data-dir."""
        return self.blob_dir or self.data_dir / "blobs"

    @model_validator(mode="after")
    def _key_with_cert(self) -> Settings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key must be given together")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment is read only where it sets something: scanning it for 63 fields
        # costs ~4 ms, and compute services (forked in ~20 ms) get their settings as flags.
        with_env = any(key.upper().startswith(ENV_PREFIX) for key in os.environ)
        return (init_settings, *((env_settings,) if with_env else ()),
                _TomlFileSource(settings_cls))


def add_setting_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Add one `--flag` per setting; unset flags stay absent so lower-precedence sources apply."""
    parser.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS,
        help=f"TOML file of settings (env {ENV_PREFIX}CONFIG)")
    for name, field in Settings.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        env = ENV_PREFIX + name.upper()
        help_text = f"{field.description} (env {env}; default {field.default})"
        if field.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, default=argparse.SUPPRESS, metavar=name.upper(),
                                help=help_text)


def load_settings(flags: dict[str, Any]) -> Settings:
    """Merge flags, environment and config file; a bad value is a CONFIG_ERROR naming it."""
    values = {k: v for k, v in flags.items() if k in Settings.model_fields}
    config = flags.get("config") or os.environ.get(ENV_PREFIX + "CONFIG")
    token = _config_file.set(Path(config) if config else None)
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors())
        raise FatalError(ExitCode.CONFIG_ERROR, f"invalid settings: {problems}") from exc
    finally:
        _config_file.reset(token)
