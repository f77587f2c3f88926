#!/usr/bin/env bash
# Make the local base image (BASE, default localhost/twinstack-base:bookworm) with debootstrap,
# unless it exists: a Debian with python3, for build.sh --local-base where no registry can be
# reached. One at a time (a lock): `make test` starts it early, in the background, and the
# container tests' build.sh then waits for it instead of making a second one.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/containers/containers.conf}"
base="${BASE:-localhost/twinstack-base:bookworm}"
exec 9>"${TMPDIR:-/tmp}/twinstack-base-image.lock"
flock 9
if podman image exists "$base"; then
    exit 0
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "making $base with debootstrap (a few minutes)" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >&2
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | podman import --change 'CMD ["/bin/sh"]' - "$base"
