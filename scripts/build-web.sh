#!/usr/bin/env bash
# Build the web page: src/twinstack/web/src/*.js bundled with the pinned three.js by esbuild
# (both from the npm registry, src/twinstack/web/package-lock.json) into static/app.js, which
# gss serves and the wheel carries. npm is a build-time tool only. Exit 3 without npm.
set -euo pipefail
cd "$(dirname "$0")/../src/twinstack/web"
if ! command -v npm >/dev/null; then
    echo "npm is not installed, so the web page is not built (apt-get install npm)" >&2
    exit 3
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
# gss sends app.js.gz (aiohttp's FileResponse picks it) to browsers that accept gzip
gzip -9 --keep --force static/app.js
