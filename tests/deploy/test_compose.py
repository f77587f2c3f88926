"""deploy/compose.yaml: the network levels and certificate mounts a user relies on.

test_containers.py runs it with podman-compose and serves a session through it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy/compose.yaml")
                         .read_text())
SERVICES = COMPOSE["services"]
PUBLIC, PRIVATE = {"gss", "auth", "relay"}, {"logger", "lss", "postgres"}


def test_the_private_network_is_internal_and_only_the_public_tier_publishes_ports():
    assert COMPOSE["networks"]["private"] == {"internal": True}
    for name, service in SERVICES.items():
        networks = set(service["networks"])
        if name in PUBLIC:
            assert networks == {"public", "private"} and service["ports"]
        else:
            assert name in PRIVATE and networks == {"private"} and "ports" not in service


def test_certificates_are_mounted_read_only_from_the_host_never_built_in():
    for name, service in SERVICES.items():
        if name == "postgres":
            continue
        mounts = [v for v in service["volumes"] if "/etc/twinstack/" in v]
        assert {m.split(":")[1] for m in mounts} >= {"/etc/twinstack/tls/tls.crt",
                                                     "/etc/twinstack/tls/tls.key",
                                                     "/etc/twinstack/tls/ca.crt"}
        assert all(m.endswith(":ro") and m.startswith("./pki/") for m in mounts)
        assert service["read_only"] is True
        assert service["environment"]["TWINSTACK_KEY"] == "/etc/twinstack/tls/tls.key"


def test_every_service_knows_where_the_others_are():
    assert SERVICES["relay"]["environment"]["TWINSTACK_GSS_URL"] == "https://gss:7430"
    assert SERVICES["lss"]["environment"]["TWINSTACK_GSS_URL"] == "https://gss:7430"
    assert SERVICES["auth"]["environment"]["TWINSTACK_GSS_URL"] == "https://gss:7430"
    for name in ("gss", "auth"):
        assert "@postgres/" in SERVICES[name]["environment"]["TWINSTACK_DATABASE_URL"]
    assert SERVICES["lss"]["image"].startswith("localhost/twinstack-compute")


def test_every_image_is_one_build_sh_makes_so_no_registry_is_needed():
    images = {service.get("image", COMPOSE["x-twinstack"]["image"])
              for service in SERVICES.values()}
    assert {i.split(":")[0] for i in images} == {"localhost/twinstack-core",
                                                 "localhost/twinstack-compute",
                                                 "localhost/twinstack-postgres"}
