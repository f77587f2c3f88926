"""`twinstack`: the one entry point. Verbs: certs, serve, up, user, group, deploy, logs, login,
logout, project, session, node.

Verbs that work on a data directory (up, user, group, logs, login) take it from --data-dir, else
TWINSTACK_DATA_DIR, else ./data, and never create a database as a side effect.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinstack import __version__
from twinstack.config import ENV_PREFIX, Settings, add_setting_flags, load_settings
from twinstack.exitcodes import ExitCode, FatalError

if TYPE_CHECKING:
    from twinstack.client import Client, Credentials
    from twinstack.store import Database

PRIVATE_UMASK = 0o077  # files of the platform (database, logs, sessions, keys) are the owner's


def _certs_init(args: argparse.Namespace) -> None:
    from twinstack.pki import init_authority

    init_authority(args.dir, name=args.name, days=args.days, force=args.force)
    print(f"root CA and intermediate CA written to {args.dir}")


def _certs_issue(args: argparse.Namespace) -> None:
    from twinstack.pki import Authority, load_request, write_issued

    request = load_request(args.csr, hostname=args.hostname, ip_address=args.ip_address)
    issued = Authority.load(args.dir, issuer=args.issuer).issue(
        request, profile=args.profile, days=args.days, crl_url=args.crl_url)
    for path in write_issued(issued, args.out):
        print(path)


def _certs_show(args: argparse.Namespace) -> None:
    from functools import partial

    from twinstack.pki import describe_certificate
    from twinstack.pki.revocation import status_text

    status = partial(status_text, args.dir) if args.dir is not None else None
    print(describe_certificate(args.file, status))


def _certs_revoke(args: argparse.Namespace) -> None:
    from twinstack.pki.revocation import CRL_URL_NAMES, read_certificate, revoke

    done = revoke(args.dir, read_certificate(args.cert), reason=args.reason, days=args.days)
    if done.already:
        print(f"{args.cert}: serial {done.serial:x} was already revoked on "
              f"{done.date.isoformat()} ({done.reason}); nothing changed")
        return
    print(f"{args.cert}: serial {done.serial:x} revoked by the {done.issuer} CA "
          f"({done.reason}); {done.crl} re-signed. Services using it refuse the certificate "
          f"once they reload it; gss serves it at /pki/{CRL_URL_NAMES[done.issuer]}")


def _certs_crl(args: argparse.Namespace) -> None:
    from twinstack.pki.revocation import CRL_FILES, ISSUERS, sign_crl

    for issuer in ISSUERS:
        crl = sign_crl(args.dir, issuer, days=args.days)
        due = crl.next_update_utc.isoformat() if crl.next_update_utc else "never"
        print(f"{args.dir / CRL_FILES[issuer]}: {len(crl)} revoked, next update {due}")


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings(vars(args))
    if settings.claim_bind is not None:  # a warm pool's pod: its session comes later
        from twinstack.spawners.claim import wait_for_claim

        claimed = wait_for_claim(args.service, settings, vars(args))
        if claimed is None:
            return ExitCode.OK
        settings = claimed
    return _serve_all([(args.service, settings)])


def _serve_together(args: argparse.Namespace) -> int:
    """The services of a `serve-together` file (JSON: one `twinstack serve` argument list
    each), in one process."""
    parser = build_parser()
    services = []
    for argv in json.loads(args.spec.read_text()):
        given = parser.parse_args(["serve", *argv])
        services.append((given.service, load_settings(vars(given))))
    return _serve_all(services)


def _serve_all(services: list[tuple[str, Settings]]) -> int:
    import uvloop  # asyncio's API with a faster loop and TLS: relayed calls cost half the CPU

    from twinstack import logs
    from twinstack.services import load_service
    from twinstack.wire.runtime import serve_together

    os.umask(PRIVATE_UMASK)
    names = "+".join(name for name, _ in services)
    first = services[0][1]
    logs.configure(names, level=first.log_level, verbose=first.verbose, session=first.session)
    log = logging.getLogger("twinstack.serve")
    try:
        return uvloop.run(serve_together([(load_service(name), settings)
                                          for name, settings in services]))
    except FatalError as exc:
        log.error("cannot run %s: %s", names, exc.message, extra={"exit_code": exc.code})
        raise
    except Exception:
        log.exception("%s stopped by an unexpected error", names)
        return ExitCode.INTERNAL_ERROR


def _up_data_dir(args: argparse.Namespace) -> Path:
    """--data-dir, else TWINSTACK_DATA_DIR, else ./data."""
    given = getattr(args, "data_dir", None) or os.environ.get(f"{ENV_PREFIX}DATA_DIR") or "data"
    return Path(given)


def _up(args: argparse.Namespace) -> int:
    from twinstack.launcher import Platform

    os.umask(PRIVATE_UMASK)
    platform = Platform(_up_data_dir(args), args.host, args.port, verbose=args.verbose,
                        database_url=args.database_url, lss_count=args.lss_count,
                        replicas=args.replicas, combined=args.combined)
    return asyncio.run(platform.run())


def _running_platform(data_dir: Path) -> dict[str, Any] | None:
    from twinstack.launcher import read_platform_file

    return read_platform_file(data_dir)


def _admin_client(settings: Settings, url: str | None, what: str) -> Any:
    """An mTLS client for admin verbs: flags and env first, else the `twinstack up` data dir."""
    from twinstack.launcher import admin_identity
    from twinstack.pki.tls import TlsFiles, client_context
    from twinstack.wire.client import ServiceClient

    data_dir = settings.data_dir.resolve()
    if url is None:
        url = (_running_platform(data_dir) or {}).get(f"{what}_url")
    if url is None:
        raise FatalError(ExitCode.CONFIG_ERROR,
                         f"no running TwinStack in {data_dir} (no platform.json there): start "
                         f"it (twinstack up --data-dir {data_dir}), pass --data-dir of a running "
                         f"one (or set {ENV_PREFIX}DATA_DIR), or give the {what}'s address with "
                         f"--{what}-url and an admin certificate (--cert, --key, --ca)")
    if settings.cert and settings.key and settings.ca:
        files = TlsFiles(settings.cert, settings.key, settings.ca)
    else:
        files = admin_identity(settings.data_dir)
    return ServiceClient(url, client_context(files))


async def _print_logs(args: argparse.Namespace, settings: Settings) -> None:
    from twinstack.logs import format_human
    from twinstack.wire.errors import ActionError

    query: dict[str, Any] = {"service": args.service, "session": args.session,
                             "level": args.level}
    query = {k: v for k, v in query.items() if v is not None}
    show = (lambda rec: json.dumps(rec)) if args.json else format_human
    async with _admin_client(settings, settings.logger_url, "logger") as client:
        try:
            reply = await client.call("query", {**query, "limit": args.limit}, idempotent=True)
            for rec in reply["records"]:
                print(show(rec), flush=True)
            if args.follow:
                async for rec in client.stream("follow", query):
                    print(show(rec), flush=True)
        except ActionError as exc:
            code = ExitCode.DEPENDENCY_UNREACHABLE if exc.status == 503 else ExitCode.USAGE
            raise FatalError(code, f"logger: {exc}") from exc


def _no_database(settings: Settings, problem: str) -> FatalError:
    """The refusal when there is no database to work on: where we looked, and what to do."""
    data_dir = settings.data_dir.resolve()
    create = "or create a new one with --create-database"
    if settings.database_url is None:
        return FatalError(ExitCode.CONFIG_ERROR,
                          f"no TwinStack platform in {data_dir}: no platform.json (a running "
                          "platform) and no twinstack.db (a stopped one) there. Start the "
                          f"platform once (twinstack up --data-dir {data_dir}), point at an "
                          f"existing data directory with --data-dir DIR or {ENV_PREFIX}DATA_DIR"
                          f"=DIR, {create}")
    return FatalError(ExitCode.CONFIG_ERROR,
                      f"the database {problem}: start the platform on it once (twinstack up "
                      f"--database-url URL), give the --database-url of an existing one, {create}")


def _existing_database(settings: Settings, *, create: bool = False) -> Database:
    """The platform's database if it exists already; refuse (exit 10) rather than create one,
    unless asked to (`create`: preparing a deployment before its first start).

    A SQLite file must be there (connecting would create it); any database must hold the schema.
    """
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from twinstack.services.database import database_url
    from twinstack.store import Database

    url = make_url(database_url(settings))
    shown = url.render_as_string(hide_password=True)
    path = url.database or ""
    if not create and url.get_backend_name() == "sqlite" and not path.startswith("file:") and \
            (path in ("", ":memory:") or not Path(path).is_file()):
        raise _no_database(settings, f"file {path} does not exist")
    db = Database(url.render_as_string(hide_password=False))
    try:
        with db.engine.connect() as connection:
            migrated = inspect(connection).has_table("alembic_version")
    except OperationalError as exc:
        db.dispose()
        raise FatalError(ExitCode.DEPENDENCY_UNREACHABLE,
                         f"database {shown} unreachable: {exc.orig}") from exc
    if not (migrated or create):
        db.dispose()
        raise _no_database(settings, f"{shown} holds no TwinStack schema")
    return db


def _operator(args: argparse.Namespace, operation: str, **params: Any) -> dict[str, Any]:
    """Run an operator verb through `auth` if the platform is up, else on an existing database."""
    from twinstack.services.auth import ADMIN_OPERATIONS
    from twinstack.wire.errors import ActionError, ServiceUnavailable

    settings = load_settings(vars(args))
    model, run_offline = ADMIN_OPERATIONS[operation]
    validated = model.model_validate(params)
    if _running_platform(settings.data_dir) is not None:
        async def online() -> dict[str, Any]:
            async with _admin_client(settings, None, "auth") as client:
                return await client.call(operation, validated.model_dump())
        try:
            return asyncio.run(online())
        except ServiceUnavailable:
            print("twinstack: the platform does not answer; using the database directly",
                  file=sys.stderr)
        except ActionError as exc:
            raise FatalError(ExitCode.CONFIG_ERROR, exc.message) from exc

    from twinstack.store import StoreError

    os.umask(PRIVATE_UMASK)  # the WAL and shared-memory files SQLite may create
    db = _existing_database(settings, create=getattr(args, "create_database", False))
    try:
        db.migrate()  # a new or older schema is brought up to date, as the platform would
        with db.transaction() as s:
            return run_offline(s, validated)
    except StoreError as exc:
        raise FatalError(ExitCode.CONFIG_ERROR, str(exc)) from exc
    finally:
        db.dispose()


def _password(args: argparse.Namespace, *, confirm: bool = True) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("password: ")
    if confirm and getpass.getpass("again: ") != first:
        raise FatalError(ExitCode.USAGE, "the passwords differ")
    return first


def _refuse_early_without_target(args: argparse.Namespace) -> None:
    """Say there is nothing to work on before asking for a password, not after."""
    settings = load_settings(vars(args))
    if _running_platform(settings.data_dir) is None:
        _existing_database(settings, create=args.create_database).dispose()


def _user(args: argparse.Namespace) -> None:
    verb = args.user_verb
    if verb in ("add", "passwd") and not args.password_stdin:
        _refuse_early_without_target(args)
    if verb == "add":
        _operator(args, "user_add", name=args.name, password=_password(args), admin=args.admin)
        print(f"user {args.name} added")
    elif verb == "passwd":
        _operator(args, "user_passwd", name=args.name, password=_password(args))
        print(f"password of {args.name} changed")
    elif verb in ("disable", "enable"):
        reply = _operator(args, "user_disable", name=args.name, disabled=verb == "disable")
        print(f"user {args.name} {verb}d ({reply['tokens_revoked']} tokens revoked)")
    else:
        for user in _operator(args, "user_list")["users"]:
            flags = [f for f in ("admin", "disabled") if user[f]]
            print(f"{user['name']:20} {' '.join(flags)}")


def _group(args: argparse.Namespace) -> None:
    verb = args.group_verb
    if verb == "add":
        _operator(args, "group_add", name=args.name)
        print(f"group {args.name} added")
    elif verb in ("add-member", "remove-member"):
        _operator(args, "group_member", group=args.name, user=args.user,
                  remove=verb == "remove-member")
        print(f"{args.user} {'removed from' if verb == 'remove-member' else 'added to'} "
              f"{args.name}")
    else:
        for group in _operator(args, "group_list")["groups"]:
            print(f"{group['name']:20} {', '.join(group['members'])}")


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                        help=f"data directory of the platform (env {ENV_PREFIX}DATA_DIR; "
                        "default ./data)")
    parser.add_argument("--database-url", default=argparse.SUPPRESS,
                        help="database URL, if not the SQLite file in the data directory")
    parser.add_argument("--create-database", action="store_true",
                        help="when the platform is down and there is no database yet, create "
                        "it (to prepare a deployment before its first start); without this "
                        "flag the command refuses rather than make a new, empty database")


def _deploy(args: argparse.Namespace) -> None:
    from twinstack import deploy

    if args.deploy_verb == "certs":
        written = deploy.ensure_certificates(args.pki, args.namespace, args.public_host,
                                             owner=args.owner)
        print(f"{len(written)} certificates issued in {args.pki}")
    elif args.deploy_verb == "secrets":
        print(json.dumps(deploy.secret_manifests(args.pki, args.namespace), indent=1))
    else:
        print(deploy.render(args.overlay, image_tag=args.image_tag, registry=args.registry,
                            namespace=args.namespace), end="")


def _logs(args: argparse.Namespace) -> None:
    settings = load_settings(vars(args))
    asyncio.run(_print_logs(args, settings))


# the thin client's verbs: login, logout, project/session/node listings ----------------------


@contextlib.contextmanager
def _client_errors(relogin: str | None = None) -> Iterator[None]:
    """The client's errors as the CLI's messages and exit codes."""
    from twinstack.wire.errors import ActionError, ServiceUnavailable

    try:
        yield
    except ServiceUnavailable as exc:
        raise FatalError(ExitCode.DEPENDENCY_UNREACHABLE, exc.message) from exc
    except ActionError as exc:
        if exc.code == "certificate_rejected":
            raise FatalError(ExitCode.CERTIFICATE_ERROR, exc.message) from exc
        if exc.status == 401 and relogin is not None:
            raise FatalError(ExitCode.USAGE, f"{exc.message}: your login is no longer valid "
                             f"(expired or revoked); log in again: twinstack login {relogin}"
                             ) from exc
        raise FatalError(ExitCode.USAGE, exc.message) from exc


def _client(url: str, ca: str | None, token: str | None = None) -> Client:
    """A Client; a CA file that is missing, unreadable or not PEM is a certificate error."""
    from twinstack.client import Client

    try:
        return Client(url, ca=ca, token=token)
    except (OSError, ValueError) as exc:
        raise FatalError(ExitCode.CERTIFICATE_ERROR, str(exc)) from exc


def _login(args: argparse.Namespace) -> None:
    from twinstack.client.credentials import Credentials, save_credentials

    data_dir = load_settings(vars(args)).data_dir.resolve()
    running = _running_platform(data_dir)
    url = args.url or (running or {}).get("url")
    if url is None:
        raise FatalError(ExitCode.CONFIG_ERROR,
                         f"no running TwinStack in {data_dir} to log in to (no platform.json "
                         "there): pass --url https://HOST:PORT (and --ca CA.pem), or --data-dir "
                         f"of a running platform (or set {ENV_PREFIX}DATA_DIR)")
    ca = args.ca_file
    if ca is None and running is not None and url.rstrip("/") == running.get("url"):
        ca = str(data_dir / "pki" / "ca.pem")
    password = _password(args, confirm=False)
    with _client_errors(), contextlib.closing(_client(url, ca)) as tw:
        reply = tw.login(args.user, password)
    ttl = reply.get("expires_in_s")
    expires = time.time() + float(ttl) if ttl else None
    path = save_credentials(Credentials(url=tw.url, ca=str(Path(ca).resolve()) if ca else None,
                                        user=args.user, token=reply["token"],
                                        expires_at=expires))
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(expires)) if expires else "it expires"
    print(f"logged in to {tw.url} as {args.user}; the token is kept in {path} until {until}")


def _stored_login() -> Credentials:
    from twinstack.client.credentials import load_credentials

    try:
        credentials = load_credentials()
    except ValueError as exc:
        raise FatalError(ExitCode.CONFIG_ERROR, str(exc)) from exc
    if credentials is None:
        raise FatalError(ExitCode.USAGE, "log in first: twinstack login NAME")
    return credentials


def _logout(args: argparse.Namespace) -> None:
    from twinstack.client.credentials import credentials_path, remove_credentials

    try:
        credentials = _stored_login()
    except FatalError:
        if credentials_path().exists():  # damaged: forget it all the same
            remove_credentials()
        print("not logged in")
        return
    from twinstack.wire.errors import ActionError

    problem = None
    try:
        with contextlib.closing(_client(credentials.url, credentials.ca,
                                        credentials.token)) as tw:
            tw.logout()  # revokes the token on the platform
    except ActionError as exc:
        problem = None if exc.status == 401 else exc.message  # 401: nothing left to revoke
    except FatalError as exc:
        problem = exc.message
    if problem is not None:
        print(f"twinstack: warning: could not revoke the token at {credentials.url}: {problem}; "
              "forgetting it here anyway", file=sys.stderr)
    remove_credentials()
    print(f"logged out of {credentials.url} ({credentials.user})")


def _percent(value: Any) -> str:
    return f"{100 * value:.0f}%" if isinstance(value, int | float) else "-"


def _when(value: Any) -> str:
    """An ISO time from the platform, to the second (UTC)."""
    return str(value)[:19].replace("T", " ") if value else "-"


def _reserved(node: dict[str, Any]) -> str:
    """What a node's live sessions reserve, of what its sessions may take (MB)."""
    total = node.get("memory_mb")
    reserved = f"{node.get('reserved_mb', 0):,.0f}"
    return f"{reserved} / {total:,.0f} MB" if total else f"{reserved} MB"


# noun, verb -> (what the client fetches, the table's columns, what to say when it is empty)
Column = tuple[str, Callable[[dict[str, Any]], Any]]
LISTINGS: dict[tuple[str, str], tuple[Callable[[Client], Any], list[Column], str]] = {
    ("project", "list"): (
        lambda tw: tw.projects(),
        [("ID", lambda p: p["id"]), ("NAME", lambda p: p["name"]),
         ("SESSION TYPE", lambda p: p["session_type"]), ("ROLE", lambda p: p["role"]),
         ("OWNER", lambda p: p["owner"])],
        "no projects yet (create one: Client.create_project(name, session_type))"),
    ("session", "list"): (
        lambda tw: tw.sessions(),
        [("ID", lambda s: s["id"]), ("PROJECT", lambda s: s["project"]),
         ("STATE", lambda s: s["state"]), ("NODE", lambda s: s.get("lss") or "-"),
         ("SERVICES", lambda s: ", ".join(sorted(s.get("services") or {})) or "-"),
         ("CREATED (UTC)", lambda s: _when(s.get("created_at")))],
        "no sessions"),
    ("session", "types"): (
        lambda tw: [{"name": name, "services": services}
                    for name, services in tw.session_types().items()],
        [("NAME", lambda t: t["name"]), ("SERVICES", lambda t: ", ".join(t["services"]))],
        "no session types"),
    ("node", "list"): (
        lambda tw: tw.nodes(),
        [("NAME", lambda n: n["name"]), ("STATE", lambda n: n["state"]),
         ("SESSIONS", lambda n: f"{n['live_sessions']}/{n['capacity']}"),
         ("RESERVED MEMORY", _reserved),
         ("CPU LOAD", lambda n: _percent(n["load"].get("cpu"))),
         ("MEMORY", lambda n: _percent(n["load"].get("memory"))),
         ("LAST HEARTBEAT (UTC)", lambda n: _when(n["last_heartbeat"]))],
        "no session nodes have connected"),
}


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> None:
    """Rows as aligned text columns under their headers."""
    cells = [[header for header, _ in columns]]
    cells += [[str(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
              .rstrip())


@contextlib.contextmanager
def _logged_in() -> Iterator[tuple[Client, Credentials]]:
    """A client with the stored login; its errors as the CLI's, naming the platform."""
    credentials = _stored_login()
    try:
        with _client_errors(relogin=credentials.user), contextlib.closing(
                _client(credentials.url, credentials.ca, credentials.token)) as tw:
            yield tw, credentials
    except FatalError as exc:
        raise FatalError(exc.code, f"{credentials.url}: {exc.message}") from exc


def _listing(args: argparse.Namespace) -> None:
    from twinstack.wire.errors import ActionError

    fetch, columns, empty = LISTINGS[(args.noun, args.list_verb)]
    with _logged_in() as (tw, credentials):
        try:
            rows = fetch(tw)
        except ActionError as exc:
            if exc.status == 403 and args.noun == "node":
                raise FatalError(ExitCode.USAGE, f"listing session nodes is for "
                                 f"administrators, and {credentials.user} is not one: log "
                                 "in as an administrator (twinstack login NAME)") from exc
            raise
    if args.json:
        print(json.dumps(rows, indent=1))
    elif rows:
        print_table(rows, columns)
    else:
        print(empty)


def _history(args: argparse.Namespace) -> None:
    from twinstack.client.model import history_lines

    with _logged_in() as (tw, _):
        named = [p["id"] for p in tw.projects() if args.project in (p["id"], p["name"])]
        if len(named) != 1:
            raise FatalError(ExitCode.USAGE, f"{len(named) or 'no'} projects you can see are "
                             f"called {args.project!r}: give its id (twinstack project list)")
        graph = tw.project_history(named[0])
    if args.json:
        print(json.dumps(graph, indent=1))
    else:
        print("\n".join(history_lines(graph)) or "no changes yet")


@functools.cache  # ~9 ms to build (gettext looks up each help text): a warm parent builds it
def build_parser() -> argparse.ArgumentParser:  # once for the services it forks
    parser = argparse.ArgumentParser(prog="twinstack", description=__doc__)
    parser.add_argument("--version", action="version", version=f"twinstack {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True)

    certs = verbs.add_parser("certs", help="the PKI: CA, certificates from CSR JSON files")
    certs_verbs = certs.add_subparsers(dest="certs_verb", required=True)
    init = certs_verbs.add_parser("init", help="create a root CA and the sessions' intermediate")
    init.add_argument("--dir", type=Path, required=True, help="PKI directory")
    init.add_argument("--name", default="TwinStack", help="organisation named in the CAs")
    init.add_argument("--days", type=int, default=3650, help="CA validity")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(run=_certs_init)
    issue = certs_verbs.add_parser("issue", help="issue a certificate from a cfssl-style CSR JSON")
    issue.add_argument("--dir", type=Path, required=True, help="PKI directory")
    issue.add_argument("--csr", type=Path, required=True, help="CSR JSON file")
    issue.add_argument("--out", type=Path, required=True,
                       help="writes OUT.pem, OUT-key.pem and OUT-chain.pem")
    issue.add_argument("--profile", choices=["server", "client", "peer"], default="peer",
                       help="server, client or both (peer; default)")
    issue.add_argument("--issuer", choices=["root", "intermediate"], default="root")
    issue.add_argument("--days", type=float, default=365, help="validity")
    issue.add_argument("--hostname", help="value for $HOSTNAME$ (default: this host's name)")
    issue.add_argument("--ip-address", help="value for $IP_ADDRESS$ (default: this host's IP)")
    issue.add_argument("--crl-url", help="where the issuer's CRL is served (http or https), "
                       "e.g. https://GSS_HOST:7400/pki/ca.crl; written into the certificate")
    issue.set_defaults(run=_certs_issue)
    show = certs_verbs.add_parser("show", help="subject, SANs, issuer and validity of a PEM file")
    show.add_argument("file", type=Path)
    show.add_argument("--dir", type=Path, help="PKI directory: also say whether it is revoked")
    show.set_defaults(run=_certs_show)
    from twinstack.pki.revocation import REASONS

    revoke = certs_verbs.add_parser("revoke", help="put a certificate on its CA's CRL")
    revoke.add_argument("--dir", type=Path, required=True, help="PKI directory")
    revoke.add_argument("cert", type=Path, help="the certificate (PEM; of a chain, the first)")
    revoke.add_argument("--reason", choices=list(REASONS), default="unspecified",
                        help="RFC 5280 reason (default unspecified)")
    revoke.add_argument("--days", type=float, default=7, help="the re-signed CRL's validity")
    revoke.set_defaults(run=_certs_revoke)
    crl = certs_verbs.add_parser("crl", help="re-sign both CAs' CRLs (run before nextUpdate)")
    crl.add_argument("--dir", type=Path, required=True, help="PKI directory")
    crl.add_argument("--days", type=float, default=7, help="validity: the next update is due "
                     "this many days from now")
    crl.set_defaults(run=_certs_crl)

    serve = verbs.add_parser("serve", help="run one service (the container entrypoint)")
    serve.add_argument("service", help="which service, e.g. logger")
    add_setting_flags(serve)
    serve.set_defaults(run=_serve)

    together = verbs.add_parser("serve-together", help="run several services in one process "
                                "(twinstack up --combined)")
    together.add_argument("spec", type=Path, help="JSON file: a list of `serve` argument "
                          "lists, one per service, started in that order")
    together.set_defaults(run=_serve_together)

    up = verbs.add_parser("up", help="run a whole local platform (dev PKI, separate processes)")
    up.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                    help="certificates, database and logs live here (env "
                    f"{ENV_PREFIX}DATA_DIR; default ./data)")
    up.add_argument("--host", default="127.0.0.1",
                    help="address every service binds (default 127.0.0.1; 0.0.0.0 for all)")
    up.add_argument("--port", type=int, default=7400,
                    help="front-door port; the other services use the ports above it")
    up.add_argument("--database-url",
                    help="PostgreSQL URL (postgresql+psycopg://...); default SQLite in --data-dir")
    up.add_argument("--lss-count", type=int, default=1,
                    help="local session services to run here (0: only remote ones)")
    up.add_argument("--replicas", type=int, choices=range(1, 4), default=1,
                    help="run gss, auth and relay this many times each (needs PostgreSQL); "
                    "clients and LSS fail over between them (default 1)")
    up.add_argument("--combined", action="store_true",
                    help="run the logger, auth, gss and relay in one process (less memory; "
                    "still each with its own listeners, certificate and mutual TLS; one "
                    "crash restarts all four)")
    up.add_argument("--verbose", action="store_true",
                    help="keep every service's output in the foreground")
    up.set_defaults(run=_up)

    user = verbs.add_parser("user", help="manage users (through auth when the platform is up)")
    user_verbs = user.add_subparsers(dest="user_verb", required=True)
    for verb, text in (("add", "add a user"), ("passwd", "set a user's password"),
                       ("disable", "disable a user and revoke their tokens"),
                       ("enable", "enable a disabled user"), ("list", "list users")):
        sub = user_verbs.add_parser(verb, help=text)
        if verb != "list":
            sub.add_argument("name")
        if verb in ("add", "passwd"):
            sub.add_argument("--password-stdin", action="store_true",
                             help="read the password from the first line of stdin")
        if verb == "add":
            sub.add_argument("--admin", action="store_true", help="an administrator")
        _add_data_flags(sub)
        sub.set_defaults(run=_user)

    group = verbs.add_parser("group", help="manage groups (through auth when the platform is up)")
    group_verbs = group.add_subparsers(dest="group_verb", required=True)
    for verb, text in (("add", "add a group"), ("add-member", "add a user to a group"),
                       ("remove-member", "remove a user from a group"), ("list", "list groups")):
        sub = group_verbs.add_parser(verb, help=text)
        if verb != "list":
            sub.add_argument("name", help="group")
        if verb.endswith("member"):
            sub.add_argument("user")
        _add_data_flags(sub)
        sub.set_defaults(run=_group)

    deploy = verbs.add_parser("deploy", help="certificates, Secrets and manifests for "
                              "containers and Kubernetes")
    deploy_verbs = deploy.add_subparsers(dest="deploy_verb", required=True)
    certs_cmd = deploy_verbs.add_parser("certs", help="a PKI with every platform service's "
                                        "certificate (compose and Kubernetes names)")
    secrets_cmd = deploy_verbs.add_parser("secrets", help="print the certificate Secrets "
                                          "(kubectl apply -f -)")
    render_cmd = deploy_verbs.add_parser("render", help="print an overlay's manifests with "
                                         "your values")
    for sub in (certs_cmd, secrets_cmd):
        sub.add_argument("--pki", type=Path, required=True, help="PKI directory")
    for sub in (certs_cmd, secrets_cmd, render_cmd):
        sub.add_argument("--namespace", default="twinstack", help="Kubernetes namespace")
    certs_cmd.add_argument("--public-host", action="append", default=[],
                           help="a DNS name clients use for gss/auth/relay (repeatable)")
    certs_cmd.add_argument("--owner", type=int,
                           help="give the files to this uid (10001: the images' user)")
    render_cmd.add_argument("overlay", help="dev, production or gpu")
    render_cmd.add_argument("--image-tag", help="tag of twinstack-core and twinstack-compute")
    render_cmd.add_argument("--registry", help="registry prefix of the images")
    deploy.set_defaults(run=_deploy)

    logs = verbs.add_parser("logs", help="query and follow the logger service")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    logs.add_argument("--service", dest="service", help="only this service's records")
    logs.add_argument("--session", dest="session", help="only this session's records")
    logs.add_argument("--level", choices=["debug", "info", "warning", "error", "critical"],
                      help="lowest level shown")
    logs.add_argument("--limit", type=int, default=200, help="how many past records to show")
    logs.add_argument("--json", action="store_true", help="JSON lines instead of text")
    add_setting_flags(logs, skip=("session",))
    logs.set_defaults(run=_logs)

    login = verbs.add_parser("login", help="log in and keep the token for the verbs below "
                             "(in $XDG_CONFIG_HOME/twinstack/credentials.json, mode 0600)")
    login.add_argument("user")
    login.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of stdin")
    login.add_argument("--url", help="the platform's front door (default: the running "
                       "platform of --data-dir, from its platform.json)")
    login.add_argument("--ca", dest="ca_file", help="CA file to trust (default: DATA/pki/ca.pem "
                       "for the local platform, else the system's CAs)")
    login.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                       help=f"data directory of a local platform (env {ENV_PREFIX}DATA_DIR; "
                       "default ./data)")
    login.set_defaults(run=_login)
    logout = verbs.add_parser("logout", help="revoke the stored token and forget it")
    logout.set_defaults(run=_logout)
    for noun, text in (("project", "projects you can see"), ("session", "sessions"),
                       ("node", "session nodes (administrators)")):
        noun_parser = verbs.add_parser(noun, help=f"{text}, as the logged-in user")
        noun_verbs = noun_parser.add_subparsers(dest="list_verb", required=True)
        for listed, verb in LISTINGS:
            if listed != noun:
                continue
            what = "session types and their services" if verb == "types" else f"list {text}"
            sub = noun_verbs.add_parser(verb, help=what)
            sub.add_argument("--json", action="store_true", help="JSON instead of a table")
            sub.set_defaults(run=_listing, noun=noun)
        if noun == "project":
            history = noun_verbs.add_parser("history", help="a project's model states as a "
                                            "graph: branches, labels, head")
            history.add_argument("project", help="the project's id or name")
            history.add_argument("--json", action="store_true", help="the graph as JSON")
            history.set_defaults(run=_history)
    return parser


def run(argv: list[str] | None = None) -> int:
    # Ctrl-C stops any verb, also when a script started us with SIGINT ignored (a shell's
    # background jobs inherit that; `logs --follow` would then never stop).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    from twinstack.pki import PkiError

    try:
        code = args.run(args)
    except FatalError as exc:
        print(f"twinstack: {exc.message}", file=sys.stderr)
        return int(exc.code)
    except PkiError as exc:
        print(f"twinstack: {exc}", file=sys.stderr)
        return int(ExitCode.CERTIFICATE_ERROR)
    except KeyboardInterrupt:
        return int(ExitCode.OK)
    return int(code or 0)


def main() -> None:
    sys.exit(run())
