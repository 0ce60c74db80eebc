#!/usr/bin/env bash
# Makes (once) the Python environment of the reference implementations that the fixture generators in
# scripts/reference/ and the benchmarks in scripts/bench/ run: PyTorch, diffusers, transformers and
# llama.cpp (llama-cpp-python, built from source: about 6 minutes on 2 cores), at the versions the
# committed fixtures were made with. Cached outside the repo (about 6 GB); a complete environment is
# reused at once. Prints the interpreter's path on its last line:
#   PYTHON=$(bash scripts/reference/venv.sh) && "$PYTHON" scripts/reference/sd_sdxl.py
# Not run by CI: the tests read the committed outputs.
set -euo pipefail

VENV="${OMC_REF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/open-model-catalog/venv-ref}"
PACKAGES=(torch==2.15.0 diffusers==0.42.1 transformers==5.23.0 tokenizers==0.23.3 safetensors accelerate
  peft gguf numpy llama-cpp-python==0.3.36)

# llama-cpp-python builds ggml for this CPU: these VMs' CPUID advertises AMX and ggml's AMX kernels die with
# SIGILL here (AMX itself runs once a process asks Linux for the tile state, see README), so AMX is left out.
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
export CMAKE_ARGS="${CMAKE_ARGS:--DCMAKE_C_FLAGS='$NO_AMX' -DCMAKE_CXX_FLAGS='$NO_AMX'}"
exec bash "$(dirname "$0")/../lib/pinned-venv.sh" "$VENV" "${PACKAGES[@]}"
