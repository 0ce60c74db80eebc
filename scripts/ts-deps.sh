#!/usr/bin/env bash
# Installs ts/node_modules (npm ci) once per version of ts/package-lock.json: a stamp of the lock file
# makes a second run free (npm ci itself wipes node_modules every time). scripts/test.sh runs it before
# the Rust tests (one of them type-checks the catalog's JSON with the package's TypeScript compiler),
# and scripts/build-wasm.sh before wasm-opt.
set -euo pipefail
cd "$(dirname "$0")/.."

lock_sum=$(sha256sum ts/package-lock.json | cut -d' ' -f1)
stamp=ts/node_modules/.ci-stamp
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$lock_sum" ]; then
  echo "ts-deps: installing npm packages (npm ci)" >&2
  (cd ts && npm ci --no-audit --no-fund >&2)
  echo "$lock_sum" >"$stamp"
fi
