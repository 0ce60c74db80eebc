#!/usr/bin/env bash
# Benchmarks worker-llm against llama.cpp on SmolLM2-135M-Instruct Q4_1 (same file, prompt, threads):
# prefill and decode tokens/s, time to first token, peak RSS, and the ratios.
# Needs a Python with llama-cpp-python==0.3.36 (PYTHON, default: the one `bash scripts/reference/venv.sh` makes).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-$(bash "$(dirname "$0")/../reference/venv.sh" | tail -n 1)}"
model="$(bash scripts/fetch-models.sh | tail -n1)"
cargo build --release -p worker-llm
exec "$PYTHON" scripts/bench/llm_vs_llamacpp.py --model "$model" --threads "${THREADS:-2}" "$@"
