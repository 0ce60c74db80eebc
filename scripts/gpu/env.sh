# Sourced by build.sh and lint.sh: the pinned CUDA 13.0 toolkit (toolkit.sh) on PATH, and candle-kernels'
# nvcc calls routed through nvcc-multiarch.sh (sm_80 and sm_90 machine code, compute_80 PTX). No GPU needed.
# Sets CACHE (the toolkit cache: cuda/ and link-stubs/) and ROOT (the toolkit root).
CACHE="$(bash scripts/gpu/toolkit.sh | tail -n 1)"
ROOT="$CACHE/cuda"
export PATH="$ROOT/bin:$PATH" CUDA_ROOT="$ROOT" CUDA_PATH="$ROOT" CUDA_HOME="$ROOT"
export CUDA_COMPUTE_CAP=80 OMC_REAL_NVCC="$ROOT/bin/nvcc" NVCC="$PWD/scripts/gpu/nvcc-multiarch.sh"
# cudaforge compiles kernels on half the cores by default; candle-kernels' build is the long pole of a cold
# build, with little else left to compile beside it.
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
