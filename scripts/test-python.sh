#!/usr/bin/env bash
# Makes (once) the Python environment the workers' HTTP tests use: `prometheus_client`, whose strict
# OpenMetrics parser reads /metrics, and the official `openai` client that drives `worker-llm serve`.
# Cached outside the repo; a complete environment is reused at once. Prints the interpreter's path on its
# last line; the tests look for it there (or at $OMC_TEST_PYTHON).
set -euo pipefail

VENV="${OMC_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/open-model-catalog/venv-test}"
PACKAGES=(openai==3.54.0 prometheus_client==0.26.0)

exec bash "$(dirname "$0")/lib/pinned-venv.sh" "$VENV" "${PACKAGES[@]}"
