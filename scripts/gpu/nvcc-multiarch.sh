#!/usr/bin/env bash
# nvcc for candle-kernels' build (through cudaforge's NVCC variable), which passes one
# `-gencode=arch=compute_80,code=sm_80` (from CUDA_COMPUTE_CAP=80) to every nvcc call:
# - PTX files (`--ptx`, Candle's elementwise/matmul-side kernels, loaded by the driver at run time) stay
#   compute_80: PTX holds one architecture, and the lowest one JIT-compiles on every newer GPU whose driver
#   takes its PTX ISA version (9.0 from nvcc 13.0: driver 580 or newer).
# - Object files (`-c`, the GGUF matmul kernels linked into the binary) become a fat binary: sm_80 and sm_90
#   machine code plus compute_80 PTX for anything else (sm_89, sm_100, ...), so nothing is JIT-compiled on an
#   A100 or H100/H200. `--threads 2` runs the two architectures' compilers side by side.
# With OMC_NVCC_STUB=1 (lint.sh) nothing is compiled: every output is an empty file (an empty archive for
# `--lib`), enough for `cargo check`/`clippy`, which never link; `--version` still asks the real nvcc.
set -euo pipefail
real="${OMC_REAL_NVCC:?OMC_REAL_NVCC must name the real nvcc}"
compile=0 lib=0 out="" dir="" prev="" src=""
for a in "$@"; do
  case "$a" in
    -c) compile=1 ;;
    --lib | -lib) lib=1 ;;
    *.cu) src="$a" ;;
  esac
  case "$prev" in
    -o) out="$a" ;;
    --output-directory | -odir) dir="$a" ;;
  esac
  prev="$a"
done
if [ "${OMC_NVCC_STUB:-0}" = 1 ]; then
  # `--ptx --output-directory DIR x.cu` writes DIR/x.ptx; the others name their output with -o.
  [ -z "$out" ] && [ -n "$dir" ] && [ -n "$src" ] && out="$dir/$(basename "$src" .cu).ptx"
  if [ -n "$out" ]; then
    rm -f "$out"
    if [ "$lib" = 1 ]; then ar rcs "$out"; else : >"$out"; fi
    exit 0
  fi
fi
args=()
for a in "$@"; do
  if [ "$compile" = 1 ] && [[ "$a" == -gencode=arch=compute_80,code=sm_80 ]]; then
    args+=(-gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90
      -gencode=arch=compute_80,code=compute_80 --threads 2)
  else
    args+=("$a")
  fi
done
exec "$real" "${args[@]}"
