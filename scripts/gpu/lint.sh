#!/usr/bin/env bash
# The Rust side of the CUDA build in minutes rather than the full build's half hour: `cargo clippy
# --features cuda` of worker-model, worker-llm and worker-sd (all targets, warnings denied) with
# candle-kernels' nvcc calls stubbed (OMC_NVCC_STUB=1: empty PTX and objects; clippy never links). It proves
# that every `cfg(feature = "cuda")` path, and Candle's and cudarc's CUDA code, compile against the pinned
# toolkit; only build.sh proves the kernels. Prints its time on the last line.
# It shares cargo's default target dir (the CPU clippy's artifacts of every other crate are reused).
# NVCC_CCBIN, which candle-kernels' build script watches, marks the stubbed run: a real build of the cuda
# feature in the same dir reruns that build script instead of linking empty kernels.
set -euo pipefail
cd "$(dirname "$0")/../.."
t0=$SECONDS
. scripts/gpu/env.sh
export OMC_NVCC_STUB=1 NVCC_CCBIN="${NVCC_CCBIN:-$(command -v c++)}"
cargo clippy --locked -p worker-model -p worker-llm -p worker-sd --all-targets \
  --features worker-model/cuda,worker-llm/cuda,worker-sd/cuda -- -D warnings
echo "CUDA lint (clippy --features cuda, kernels stubbed) took $((SECONDS - t0))s"
