#!/usr/bin/env bash
# Benchmarks worker-sd against diffusers at the real shapes of SD 1.5 (random weights, built once and cached in
# SD_BENCH_DIR, default ~/.cache/omc-bench/sd15, about 4.3 GB): text encoding, seconds per UNet step at 512x512,
# VAE decode, the whole generation and peak RSS, side by side with the same thread count, and the ratios.
# Needs a Python with diffusers==0.42.1 and torch (PYTHON, default: the one `bash scripts/reference/venv.sh` makes).
# Arguments (--size N, --steps N, --rounds N, --only worker-sd|diffusers) go to scripts/bench/sd_vs_diffusers.py.
# Not part of CI: one round at 512x512 takes several minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-$(bash scripts/reference/venv.sh | tail -n 1)}"
export THREADS="${THREADS:-2}"
bin=$(cargo bench -p worker-sd --bench sd_stages --no-run 2>&1 | tee /dev/stderr |
  grep -o 'target/release/deps/sd_stages-[0-9a-f]*' | tail -n 1)
[ -x "$bin" ] || { echo "sd-bench: could not find the sd_stages bench binary" >&2; exit 1; }
"$PYTHON" scripts/bench/sd_vs_diffusers.py --candle "$bin" "$@"
