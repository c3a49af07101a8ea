#!/usr/bin/env bash
# Reproduces console/static/htmx.min.js and its licence from the npm registry (no CDN):
#   scripts/vendor-js.sh            (or: make vendor-js)
# The version is pinned here; bump it deliberately and commit the files it writes.
set -euo pipefail
cd "$(dirname "$0")/.."
HTMX_VERSION=2.0.11
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "htmx.org@${HTMX_VERSION}" >/dev/null && tar -xzf htmx.org-*.tgz)
cp "$work/package/dist/htmx.min.js" console/static/htmx.min.js
cp "$work/package/LICENSE" console/static/htmx.LICENSE
echo "htmx ${HTMX_VERSION}: $(sha256sum console/static/htmx.min.js | cut -c1-16)… → console/static/"
