#!/usr/bin/env bash
# Benchmarks one call of a Flux transformer at FLUX.1-dev's real widths (fewer blocks: the whole 12B model does
# not fit in 24 GiB in float32) against diffusers: seconds per call and peak RSS, side by side, same thread count.
# Random weights built once in FLUX_BENCH_DIR (default ~/.cache/omc-bench/flux-1-2, about 2.7 GB).
# Needs a Python with diffusers==0.42.1 and torch (PYTHON, default: the one `bash scripts/reference/venv.sh` makes).
# Arguments (--size N, --calls N, --rounds N, --double N, --single N) go to scripts/bench/flux_step_vs_diffusers.py.
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-$(bash scripts/reference/venv.sh | tail -n 1)}"
export THREADS="${THREADS:-2}"
bin=$(cargo bench -p worker-sd --bench flux_step --no-run 2>&1 | tee /dev/stderr |
  grep -o 'target/release/deps/flux_step-[0-9a-f]*' | tail -n 1)
[ -x "$bin" ] || { echo "flux-step-bench: could not find the flux_step bench binary" >&2; exit 1; }
"$PYTHON" scripts/bench/flux_step_vs_diffusers.py --candle "$bin" "$@"
