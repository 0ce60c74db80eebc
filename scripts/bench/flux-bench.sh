#!/usr/bin/env bash
# Benchmarks worker-sd's Flux pipeline against diffusers' FluxPipeline on the tiny FLUX.1-dev-shaped fixture
# (same weights, size, steps and thread count): seconds per step and per image, and the ratio.
# Needs a Python with diffusers==0.42.1 and torch==2.15.0 (PYTHON, default: the one `bash scripts/reference/venv.sh` makes).
# Arguments (--size N, --steps N, --runs N) go to both sides.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-$(bash "$(dirname "$0")/../reference/venv.sh" | tail -n 1)}"
THREADS="${THREADS:-2}"
export RAYON_NUM_THREADS="$THREADS"
cargo bench -q -p worker-sd --bench flux -- "$@" | "$PYTHON" scripts/bench/flux_vs_diffusers.py --threads "$THREADS" "$@"
