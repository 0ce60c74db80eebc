#!/usr/bin/env bash
# nvcc for candle-kernels' build (through cudaforge's NVCC variable), which passes one
# `-gencode=arch=compute_80,code=sm_80` (from CUDA_COMPUTE_CAP=80) to every nvcc call:
# - PTX files (`--ptx`, Candle's elementwise/matmul-side kernels, loaded by the driver at run time) stay
#   compute_80: PTX holds one architecture, and the lowest one JIT-compiles on every newer GPU whose driver
#   takes its PTX ISA version (9.0 from nvcc 13.0: driver 580 or newer).
# - Object files (`-c`, the GGUF matmul kernels linked into the binary) become a fat binary: sm_80 and sm_90
#   machine code plus compute_80 PTX for anything else (sm_89, sm_100, ...), so nothing is JIT-compiled on an
#   A100 or H100/H200.
set -euo pipefail
real="${OMC_REAL_NVCC:?OMC_REAL_NVCC must name the real nvcc}"
args=()
compile=0
for a in "$@"; do
  [ "$a" = "-c" ] && compile=1
done
for a in "$@"; do
  if [ "$compile" = 1 ] && [[ "$a" == -gencode=arch=compute_80,code=sm_80 ]]; then
    args+=(-gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90
      -gencode=arch=compute_80,code=compute_80)
  else
    args+=("$a")
  fi
done
exec "$real" "${args[@]}"
