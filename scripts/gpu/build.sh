#!/usr/bin/env bash
# Builds worker-llm and worker-sd with `--features cuda` (release) on any x86-64 Linux machine, no GPU or
# driver needed: the toolkit comes from PyPI (toolkit.sh, through env.sh). Kernels target sm_80 and sm_90
# (see nvcc-multiarch.sh); the CPU code targets x86-64-v3 (AVX2/FMA) instead of the repo's `native`, so the
# binaries run on the GPU machine's CPU. Prints the directory holding both binaries on its last line.
#   OMC_GPU_TARGET_DIR  where cargo builds (default: target/gpu in the repo)
set -euo pipefail
cd "$(dirname "$0")/../.."
here="$PWD"
t0=$SECONDS
. scripts/gpu/env.sh
STUBS="$CACHE/link-stubs"
[ -f "$STUBS/.done" ] || { echo "toolkit.sh left no link stubs at $STUBS" >&2; exit 1; }

export RUSTFLAGS="-C target-cpu=x86-64-v3 -L native=$STUBS"
export CARGO_TARGET_DIR="${OMC_GPU_TARGET_DIR:-$here/target/gpu}"
# The workers, and the example that prints raw logits (check.sh compares them between CPU and GPU).
cargo build --release --locked -p worker-llm -p worker-sd --features worker-llm/cuda,worker-sd/cuda \
  --bins --example logits >&2

out="$CARGO_TARGET_DIR/release"
for bin in worker-llm worker-sd examples/logits; do
  # The binary must ask for the CUDA libraries by their CUDA 13 sonames, which check.sh finds at run time.
  # Only the GGUF kernels (worker-llm and its example) need the CUDA runtime; worker-sd's kernels are PTX
  # loaded through the driver.
  libs=(libcuda.so.1 libcublas.so.13 libcurand.so.10)
  [ "$bin" = worker-sd ] || libs+=(libcudart.so.13)
  for lib in "${libs[@]}"; do
    readelf -d "$out/$bin" | grep -q "NEEDED.*\[$lib\]" || { echo "$bin does not link $lib" >&2; exit 1; }
  done
done
echo "CUDA build (toolkit, kernels, release binaries) took $((SECONDS - t0))s" >&2
echo "$out"
