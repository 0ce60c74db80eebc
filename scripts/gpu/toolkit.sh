#!/usr/bin/env bash
# Makes (once) what a CUDA build needs on a machine without a GPU or a CUDA install: nvcc, ptxas and the
# CUDA headers from PyPI, pinned to CUDA 13.0 (the GPU machines' driver 580 takes PTX ISA 9.0 and no newer;
# nvidia-nvvm is pinned too, else pip pulls a newer nvvm whose PTX this ptxas rejects), plus link stubs for
# the libraries Candle links (below). Cached outside the repo; a complete one is reused at once.
# Prints the cache directory on its last line: its `cuda/` is the toolkit root (bin/, include/, lib/) and its
# `link-stubs/` the libraries to link against.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV="${OMC_CUDA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/open-model-catalog/venv-cuda13}"
PY="$VENV/bin/python"
PACKAGES=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85 nvidia-nvvm==13.0.88)

if ! { [ -x "$PY" ] && "$PY" - "${PACKAGES[@]}" <<'CHECK' 2>/dev/null; }; then
import sys
from importlib.metadata import version
sys.exit(any(version(name) != wanted for name, wanted in (p.split("==") for p in sys.argv[1:])))
CHECK
  python3 -m venv "$VENV" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}" >&2
fi
ROOT="$("$PY" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
[ -x "$ROOT/bin/nvcc" ] || { echo "no nvcc under $ROOT after installing ${PACKAGES[*]}" >&2; exit 1; }

# Link stubs. candle-core turns on cudarc's `dynamic-linking`, so the binaries link libcuda (the driver),
# libcublas, libcublasLt, libcurand and libnvrtc, which only a driver install or 1 GB of wheels provide.
# The linker only needs each library's soname and the names it exports: these stubs have exactly that,
# generated from cudarc's own bindings, and the real libraries are found at run time (check.sh sets
# LD_LIBRARY_PATH to the driver's and PyTorch's). The sonames are CUDA 13's.
CUDARC_VERSION="$(awk '/^name = "cudarc"/ {getline; gsub(/"/, "", $3); print $3}' Cargo.lock)"
CUDARC_SRC="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$CUDARC_VERSION" 2>/dev/null | head -1 || true)"
if [ -z "$CUDARC_SRC" ]; then
  # `cargo fetch` only downloads the .crate archive (cargo unpacks it when it builds the crate, which on a
  # fresh machine has not happened yet): unpack it beside the toolkit.
  cargo fetch --locked >&2
  CRATE="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"cudarc-$CUDARC_VERSION.crate" | head -1)"
  mkdir -p "$VENV/crates" && tar -xzf "$CRATE" -C "$VENV/crates"
  CUDARC_SRC="$VENV/crates/cudarc-$CUDARC_VERSION"
fi
STUBS="$VENV/link-stubs-cudarc-$CUDARC_VERSION-v2"
if [ ! -f "$STUBS/.done" ]; then
  rm -rf "$STUBS" && mkdir -p "$STUBS"
  while read -r module soname lib; do
    grep -ho '^pub unsafe fn [A-Za-z0-9_]*' "$CUDARC_SRC/src/$module/sys/mod.rs" | awk '{print $4}' | sort -u |
      sed 's/.*/void &(void) {}/' >"$STUBS/$lib.c"
    [ -s "$STUBS/$lib.c" ] || { echo "no functions found in cudarc's $module bindings" >&2; exit 1; }
    cc -shared -fPIC -Wl,-soname,"$soname" -o "$STUBS/$lib.so" "$STUBS/$lib.c"
    # By soname too, so that `check.sh run --cpu-dry-run` can start the binaries here (on the CPU only).
    ln -s "$lib.so" "$STUBS/$soname"
    rm "$STUBS/$lib.c"
  done <<'LIBS'
driver libcuda.so.1 libcuda
cublas libcublas.so.13 libcublas
cublaslt libcublasLt.so.13 libcublasLt
curand libcurand.so.10 libcurand
nvrtc libnvrtc.so.13 libnvrtc
LIBS
  # The CUDA runtime is real (its wheel is small): candle-kernels links it for its static GGUF kernels.
  ln -s "$ROOT/lib/libcudart.so.13" "$STUBS/libcudart.so"
  touch "$STUBS/.done"
fi
ln -sfn "$STUBS" "$VENV/link-stubs"
ln -sfn "$ROOT" "$VENV/cuda"
echo "$VENV"
