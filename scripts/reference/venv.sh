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
PY="$VENV/bin/python"
PACKAGES=(torch==2.15.0 diffusers==0.42.1 transformers==5.23.0 tokenizers==0.23.3 safetensors accelerate
  peft gguf numpy llama-cpp-python==0.3.36)

if [ -x "$PY" ] && "$PY" - "${PACKAGES[@]}" <<'CHECK' 2>/dev/null; then
import sys
from importlib.metadata import version
pinned = [p.split("==") for p in sys.argv[1:] if "==" in p]
sys.exit(any(version(name) != wanted for name, wanted in pinned))
CHECK
  echo "$PY"
  exit 0
fi

python3 -m venv "$VENV" >&2
"$PY" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}" >&2
echo "$PY"
