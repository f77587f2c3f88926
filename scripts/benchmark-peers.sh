#!/usr/bin/env bash
# The FDTD peers that benchmarks/fdtd_peers.py runs beside our solver: openEMS from Debian
# (its openEMS binary and python3-openems for /usr/bin/python3) and gprMax from PyPI in its own
# virtual environment .venv-peers (kept out of .venv so its dependencies never touch ours).
# Idempotent: installs only what is missing. Needs root (or sudo) for apt-get.
set -euo pipefail

cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
gprmax_version=${GPRMAX_VERSION:-4.0.1}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

debian=(openems python3-openems)
missing=()
for package in "${debian[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
"$python" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    echo "apt-get install ${missing[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}"
fi

if ! .venv-peers/bin/python -c "import gprMax, sys; sys.exit(gprMax.__version__ != '$gprmax_version')" \
        2>/dev/null; then
    [ -x .venv-peers/bin/python ] || "$python" -m venv .venv-peers
    echo '*' > .venv-peers/.gitignore  # git leaves it out without a line in .gitignore
    .venv-peers/bin/python -m pip install -q --upgrade pip
    .venv-peers/bin/python -m pip install -q --only-binary=gprMax "gprMax==$gprmax_version"
fi

echo "openEMS: $(dpkg-query -W -f='${Version}' openems)"
echo "gprMax: $(.venv-peers/bin/python -c 'import gprMax; print(gprMax.__version__)')"
