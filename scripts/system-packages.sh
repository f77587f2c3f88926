#!/usr/bin/env bash
# The system packages the test suite uses. As root with apt-get, installs the missing ones;
# otherwise (or if apt-get fails) says which are missing and which tests will therefore be
# skipped, and carries on: it never fails the build by itself.
set -uo pipefail

python=${PYTHON:-python3}

# Which tests need each package (shown when it is missing).
declare -A needed_by=(
    [python3-venv]="make itself: .venv is created with python3 -m venv"
    [nftables]="tests/netns (the platform across network namespaces with NAT; also needs root)"
    [iproute2]="tests/netns (network namespaces, veth links; also needs root)"
    [podman]="tests/deploy/test_containers.py, test_kube_play.py (container images; root)"
    [runc]="tests/deploy/test_containers.py, test_kube_play.py (podman's runtime)"
    [debootstrap]="tests/deploy/test_containers.py (the images' Debian base)"
    [uidmap]="tests/deploy (podman's user namespaces)"
    [testssl.sh]="the TLS scan of the public listeners (testssl.sh)"
    [postgresql]="the PostgreSQL variants of the store tests (tests/unit, tests/store_fixtures.py)"
    [nodejs]="tests/unit/test_scene.py (three.js loads our GLB; fails, not skipped, without it)"
    [npm]="tests/unit/test_scene.py (installs the pinned three.js: tests/js/package-lock.json)"
    [chromium]="tests/e2e (the web page in a real browser, driven by Playwright)"
    [prometheus]="tests/integration/test_operator_metrics.py (promtool check metrics)"
)
packages=(python3-venv nftables iproute2 podman runc debootstrap uidmap testssl.sh nodejs npm
          chromium prometheus)
command -v pg_ctl >/dev/null || command -v pg_ctlcluster >/dev/null || packages+=(postgresql)

# Whether what a package provides is here (by command, so other ways of installing count too).
present() {
    case "$1" in
        python3-venv) "$python" -c 'import ensurepip, venv' 2>/dev/null ;;
        nftables) command -v nft ;;
        iproute2) command -v ip ;;
        uidmap) command -v newuidmap ;;
        testssl.sh) command -v testssl || command -v testssl.sh ;;
        nodejs) command -v node ;;
        postgresql) command -v pg_ctl || command -v pg_ctlcluster ;;
        prometheus) command -v promtool ;;
        *) command -v "$1" ;;
    esac >/dev/null
}

missing_packages() {
    local p
    for p in "${packages[@]}"; do
        present "$p" || echo "$p"
    done
}

mapfile -t missing < <(missing_packages)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing system packages for the tests: ${missing[*]}"
    if apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq "${missing[@]}" >/dev/null; then
        mapfile -t missing < <(missing_packages)
    else
        echo "apt-get could not install them"
    fi
    [ ${#missing[@]} -eq 0 ] && exit 0
    why="still missing after apt-get"
elif [ "$(id -u)" -ne 0 ]; then
    why="not root, so not installed"
else
    why="no apt-get here, so not installed"
fi

echo "system packages missing ($why): ${missing[*]}"
echo "install them with: apt-get install ${missing[*]}"
echo "until then these tests will be skipped (or fail, where said):"
for p in "${missing[@]}"; do
    echo "  $p: ${needed_by[$p]}"
done
if [ "${CI:-}" = "true" ]; then
    echo "(CI=true: a skipped test counts as a failure)"
fi
exit 0
