#!/usr/bin/env bash
# Build TwinStack's two images with podman, the way a user would:
#   deploy/containers/build.sh                 # FROM python:3.12-slim (needs a registry)
#   deploy/containers/build.sh --local-base    # FROM a Debian made here with debootstrap
# BASE=IMAGE overrides the base; the images are tagged with the package version.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/containers/containers.conf}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
base="${BASE:-python:3.12-slim}"

if [ "${1:-}" = "--local-base" ]; then
    base="${BASE:-localhost/twinstack-base:bookworm}"
    BASE="$base" deploy/containers/base.sh
fi

# Behind a TLS-inspecting proxy pip needs the host's CA bundle: mounted into the build step,
# never copied into an image.
ca_args=()
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
    ca_args=(--volume "$PIP_CERT:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi

for image in core compute postgres; do
    echo "building twinstack-$image:$version from $base" >&2
    podman build --build-arg BASE="$base" "${ca_args[@]}" \
        -f "deploy/containers/Containerfile.$image" -t "twinstack-$image:$version" .
done
