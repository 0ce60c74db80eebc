#!/usr/bin/env bash
# Concurrent streaming clients (1, 4, 8, 16) against `worker-llm serve` and llama.cpp's own `llama-server` on
# SmolLM2-135M-Instruct Q4_1: aggregate tok/s, TTFT p50/p95, inter-token latency p50, peak RSS, and ratios.
# `BUSY=1` adds a competing busy process (a shared machine). Extra arguments go to the Python driver
# (scripts/bench/llm_serve_vs_llama_server.py --help).
#
# llama-server is built once from the llama.cpp sources inside the llama-cpp-python 0.3.36 sdist (PyPI),
# with cmake and ninja from PyPI, into a cache outside the repo (about 10 minutes on 2 cores the first time).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${OMC_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/open-model-catalog/bench}"
LLAMA_SERVER="$CACHE/llama.cpp-0.3.36/build/bin/llama-server"
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"

if [ ! -x "$LLAMA_SERVER" ]; then
  mkdir -p "$CACHE"
  [ -x "$CACHE/venv/bin/cmake" ] || { python3 -m venv "$CACHE/venv" && "$CACHE/venv/bin/pip" install --quiet cmake ninja; }
  tmp="$(mktemp -d)"
  "$CACHE/venv/bin/pip" download --quiet --no-deps --no-binary llama-cpp-python --dest "$tmp" llama-cpp-python==0.3.36
  tar -xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -C "$tmp"
  rm -rf "$CACHE/llama.cpp-0.3.36"
  mv "$tmp/llama_cpp_python-0.3.36/vendor/llama.cpp" "$CACHE/llama.cpp-0.3.36"
  rm -rf "$tmp"
  (
    cd "$CACHE/llama.cpp-0.3.36"
    # -mno-amx-*: these VMs' CPUID advertises AMX, and ggml's AMX kernels die with SIGILL here.
    PATH="$CACHE/venv/bin:$PATH" cmake -S . -B build -G Ninja -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release "-DCMAKE_C_FLAGS=$NO_AMX" "-DCMAKE_CXX_FLAGS=$NO_AMX" >&2
    PATH="$CACHE/venv/bin:$PATH" cmake --build build --target llama-server -j"$(nproc)" >&2
  )
fi

model="$(bash scripts/fetch-models.sh smollm2 | tail -n1)"
cargo build --release -p worker-llm >&2
exec python3 scripts/bench/llm_serve_vs_llama_server.py --model "$model" --worker target/release/worker-llm \
  --llama-server "$LLAMA_SERVER" --threads "${THREADS:-2}" --busy "${BUSY:-0}" "$@"
