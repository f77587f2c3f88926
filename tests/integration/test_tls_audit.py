"""testssl.sh audit of the public front door (gss P, auth P+1, relay P+2) of a real `twinstack up`.

Mozilla's "intermediate" profile: TLS 1.2 and 1.3 only, AEAD suites only, and nothing that testssl
rates MEDIUM or worse. The scan is hermetic and bounded:

* only 127.0.0.1 is contacted: the target is an IP literal (nothing to resolve), `--nodns none`
  skips every DNS query (rDNS, CAA), CRL and OCSP fetching stay off (no `--phone-out`,
  PHONE_OUT=false), and NXCONNECT points testssl's start-up probes of the local openssl at
  127.0.0.1:0 instead of the name "invalid." (a DNS query otherwise). `--ip one` is not needed
  for an IP literal, and testssl refuses it together with `--nodns none`.
* only the checks the assertions read run: protocols (-p), cipher categories (-s), forward secrecy
  and key exchange groups (-f), server cipher order with every offered suite per protocol (-P),
  server defaults and certificate (-S), and all vulnerabilities (-U: Heartbleed, CCS, Ticketbleed,
  ROBOT, renegotiation, CRIME, BREACH, POODLE, fallback SCSV, SWEET32, FREAK, DROWN, LOGJAM, BEAST,
  LUCKY13, RC4). Left out: the per-cipher table (-e; -P already lists every offered suite), client
  simulation (-c) and HTTP headers (-h): neither is a property of the TLS configuration.
* the three ports are scanned in parallel, since most of a scan is testssl waiting on sockets.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ci_skips import required_tool
from tests.platform_fixtures import Platform, start_platform, stop_platform

pytestmark = pytest.mark.timeout(900)

PORTS = {"gss": 0, "auth": 1, "relay": 2}  # public channel: base port + offset
SCAN_DEADLINE_S = 600.0  # a hang bound, far above a scan's time even on a loaded machine
CHECKS = ("-p", "-s", "-f", "-P", "-S", "-U")
RATED = {"MEDIUM", "HIGH", "CRITICAL"}
# A check that could not run (WARN) or a scan that stopped (FATAL) would hide a result.
UNFINISHED = {"WARN", "FATAL"}

# Findings left out of the MEDIUM+ assertion, each with the reason it does not apply here.
# Empty on purpose: every MEDIUM+ finding so far is a real gap to fix, not to filter. The dev PKI
# (pki/authority.py via launcher.ensure_dev_pki) fails here with cert_revocation [HIGH]: its
# year-long service certificates name no CRL or OCSP URI, so a leaked key cannot be withdrawn.
EXCLUDED: dict[str, str] = {}

# Every check the assertions rely on must have reported (ids of testssl 3.0; 3.1+ renamed a few).
REQUIRED = [
    ("SSLv2",), ("SSLv3",), ("TLS1",), ("TLS1_1",), ("TLS1_2",), ("TLS1_3",),
    ("cipherlist_AVERAGE", "cipherlist_OBSOLETED"),  # the CBC category
    ("PFS_ECDHE_curves", "FS_ECDHE_curves"), ("cipher_order",), ("cipherorder_TLSv1_2",),
    ("cert_chain_of_trust",), ("cert_trust",), ("cert_keySize",), ("cert_expirationStatus",),
    ("heartbleed",), ("CCS",), ("ticketbleed",), ("ROBOT",), ("secure_renego",),
    ("secure_client_renego",), ("CRIME_TLS",), ("BREACH",), ("POODLE_SSL",), ("fallback_SCSV",),
    ("SWEET32",), ("FREAK",), ("DROWN",), ("LOGJAM",), ("BEAST",), ("LUCKY13",), ("RC4",),
]
# Suites the policy allows (IANA names): AES-GCM and ChaCha20-Poly1305, TLS 1.2 ECDHE or TLS 1.3.
AEAD = re.compile(
    r"^TLS_(ECDHE_(ECDSA|RSA)_WITH_)?(AES_(128|256)_GCM|CHACHA20_POLY1305)_SHA(256|384)$")
FATAL_EXIT = 242  # testssl's own errors exit 242..255; below, the status only sums check results


@dataclass
class Scan:
    service: str
    port: int
    findings: list[dict[str, Any]]

    def by_id(self, *ids: str) -> list[dict[str, Any]]:
        """Findings with one of these ids (testssl suffixes some, e.g. ' <hostCert#1>')."""
        return [f for f in self.findings if f["id"].split(" ")[0] in ids]

    def show(self, findings: list[dict[str, Any]]) -> str:
        return "\n".join(f"  {self.service} (port {self.port}): {f['id']} [{f['severity']}] "
                         f"{f['finding']}" for f in findings)


def scan_command(binary: str, platform: Platform, port: int, out: Path) -> list[str]:
    return [binary, "--quiet", "--color", "0", "--warnings", "batch", "--nodns", "none",
            "--mapping", "iana", "--add-ca", str(platform.ca), "--jsonfile", str(out),
            *CHECKS, f"127.0.0.1:{port}"]


def run_scans(binary: str, platform: Platform, work: Path) -> dict[str, Scan]:
    """All three ports at once; each testssl in its own process group, ended with it."""
    env = {**os.environ, "NXCONNECT": "127.0.0.1:0", "PHONE_OUT": "false", "TMPDIR": str(work)}
    running: dict[str, tuple[subprocess.Popen[bytes], Path, Path]] = {}
    try:
        for service, offset in PORTS.items():
            out, log = work / f"{service}.json", work / f"{service}.log"
            with log.open("wb") as sink:
                proc = subprocess.Popen(
                    scan_command(binary, platform, platform.port + offset, out), cwd=work,
                    env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
            running[service] = (proc, out, log)
        deadline = time.monotonic() + SCAN_DEADLINE_S
        scans = {}
        for service, (proc, out, log) in running.items():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"testssl on {service} ran past {SCAN_DEADLINE_S:.0f} s:\n"
                            + log.read_text(errors="replace")[-3000:])
            if proc.returncode >= FATAL_EXIT or not out.is_file():
                pytest.fail(f"testssl on {service} failed (exit {proc.returncode}):\n"
                            + log.read_text(errors="replace")[-3000:])
            scans[service] = Scan(service, platform.port + PORTS[service],
                                  json.loads(out.read_text()))
        return scans
    finally:
        for proc, *_ in running.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Scan]]:
    binary = required_tool("testssl", "testssl.sh", install="apt-get install testssl.sh")
    platform = start_platform(tmp_path_factory.mktemp("tls-audit"))
    try:
        yield run_scans(binary, platform, tmp_path_factory.mktemp("testssl"))
    finally:
        stop_platform(platform)


@pytest.fixture(params=sorted(PORTS))
def scan(request: pytest.FixtureRequest, scans: dict[str, Scan]) -> Scan:
    return scans[request.param]


def test_every_check_reported(scan: Scan) -> None:
    missing = [" or ".join(ids) for ids in REQUIRED if not scan.by_id(*ids)]
    assert not missing, f"{scan.service}: testssl did not report {missing}"
    unfinished = [f for f in scan.findings if f["severity"] in UNFINISHED]
    assert not unfinished, "checks that did not finish:\n" + scan.show(unfinished)


def test_no_protocol_below_tls12(scan: Scan) -> None:
    old = [f for f in scan.by_id("SSLv2", "SSLv3", "TLS1", "TLS1_1")
           if not f["finding"].startswith("not offered")]
    assert not old, "protocols below TLS 1.2 offered:\n" + scan.show(old)
    new = [f for f in scan.by_id("TLS1_2", "TLS1_3") if not f["finding"].startswith("offered")]
    assert not new, "TLS 1.2 or 1.3 not offered:\n" + scan.show(new)


def test_aead_suites_only(scan: Scan) -> None:
    # Categories: only the strong (AEAD) one may be offered; CBC is AVERAGE (3.0) / OBSOLETED.
    weak = [f for f in scan.findings if f["id"].startswith("cipherlist_")
            and f["id"] not in ("cipherlist_STRONG", "cipherlist_STRONG_FS")
            and not f["finding"].startswith("not offered")]
    assert not weak, "non-AEAD cipher categories offered:\n" + scan.show(weak)
    # Every suite the server accepts, per protocol (-P enumerates them, IANA names).
    lists = scan.by_id("cipherorder_TLSv1_2", "cipherorder_TLSv1_3", "supportedciphers_TLSv1_3")
    offered = {name for f in lists for name in f["finding"].split()}
    assert any(name.startswith("TLS_ECDHE_") for name in offered), \
        "no TLS 1.2 suite enumerated:\n" + scan.show(lists)
    cbc = sorted(name for name in offered if "_CBC_" in name)
    assert not cbc, f"{scan.service} offers CBC suites {cbc}"
    other = sorted(name for name in offered if not AEAD.match(name))
    assert not other, f"{scan.service} offers suites outside the policy {other}"
    lucky13 = [f for f in scan.by_id("LUCKY13") if not f["finding"].startswith("not vulnerable")]
    assert not lucky13, scan.show(lucky13)


def test_nothing_rated_medium_or_worse(scan: Scan) -> None:
    rated = [f for f in scan.findings
             if f["severity"] in RATED and f["id"].split(" ")[0] not in EXCLUDED]
    assert not rated, "testssl findings rated MEDIUM or worse:\n" + scan.show(rated)
