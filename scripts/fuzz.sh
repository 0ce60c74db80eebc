#!/usr/bin/env bash
# Fuzzes every parser that reads untrusted bytes, with cargo fuzz (libFuzzer, AddressSanitizer).
#   scripts/fuzz.sh [SECONDS] [TARGET...]     SECONDS per target (default 60); all targets by default.
#   FUZZ_CARGO_ARGS="--no-default-features" runs the catalog's targets without building the workers.
# A run fails on a panic, an abort, a leak of the sanitizer's kind, or one allocation over the target's
# malloc limit (table below); the input that did it is left in fuzz/artifacts/TARGET/. Every crash
# found so far is a regression test in the crate that had the bug. The last lines are a summary:
# executions per target and whether each ran clean. Corpora grow in fuzz/corpus/ (not committed),
# seeded from tests/fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
# target:malloc limit in MB. The header and JSON readers get inputs of at most 64 KiB and must never
# allocate much; the image decoder may legitimately hold a 4096x4096 16-bit RGBA image (128 MiB).
all=(gguf_header:64 safetensors_header:64 hf_ingest:128 civitai_ingest:128 catalog_id:16 openai_request:128 sd_upload:512)
if [ "$#" -gt 0 ]; then
  wanted=("$@")
else
  wanted=()
  for t in "${all[@]}"; do wanted+=("${t%%:*}"); done
fi

# cargo fuzz passes libFuzzer's and the sanitizer's -Z flags, which need a nightly compiler; the
# stable one accepts them with RUSTC_BOOTSTRAP=1, so no second toolchain is installed.
export RUSTC_BOOTSTRAP=1
fuzz=(cargo fuzz)
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 >/dev/null
fi

seed() {
  local dir="fuzz/corpus/$1"
  shift
  mkdir -p "$dir"
  for f in "$@"; do
    [ -f "$f" ] && head -c 65536 "$f" >"$dir/seed-$(basename "$f")"
  done
  return 0
}
seed gguf_header tests/fixtures/models/*.gguf
seed safetensors_header tests/fixtures/llm/tiny/llama/model.safetensors tests/fixtures/sd/tiny-sd15/text_encoder/model.safetensors
seed hf_ingest tests/fixtures/hf-api/*.json tests/fixtures/hf-config/*config.json tests/fixtures/diffusers-config/*.json
seed civitai_ingest tests/fixtures/civitai-api/*.json
mkdir -p fuzz/corpus/catalog_id
printf 'hf:org/name@main:Q4_K_M' >fuzz/corpus/catalog_id/seed-hf
printf 'civitai:4201@130072' >fuzz/corpus/catalog_id/seed-civitai
printf 'file:/models/x.gguf' >fuzz/corpus/catalog_id/seed-file
mkdir -p fuzz/corpus/openai_request
printf '{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"stop":["a","b"],"stream":true,"stream_options":{"include_usage":true}}' \
  >fuzz/corpus/openai_request/seed-chat
printf '{"prompt":["a","b"],"temperature":0.5,"top_k":-1}' >fuzz/corpus/openai_request/seed-text
mkdir -p fuzz/corpus/sd_upload
# A 2x2 PNG (selector byte 0: raw image path) and a request body carrying it (selector 1).
png='iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEUlEQVR4nGPgEpE7kWLEAKEAFBgDNVrvZeQAAAAASUVORK5CYII='
{ printf '\0'; echo "$png" | base64 -d; } >fuzz/corpus/sd_upload/seed-png
printf '\001{"prompt":"x","image":"%s","mask":"data:image/png;base64,%s"}' "$png" "$png" >fuzz/corpus/sd_upload/seed-body

summary=()
status=0
for t in "${wanted[@]}"; do
  limit=""
  for entry in "${all[@]}"; do [ "${entry%%:*}" = "$t" ] && limit="${entry##*:}"; done
  [ -n "$limit" ] || { echo "unknown fuzz target $t" >&2; exit 2; }
  log="fuzz/artifacts/$t.log"
  mkdir -p fuzz/artifacts
  # shellcheck disable=SC2086
  if "${fuzz[@]}" run --fuzz-dir fuzz ${FUZZ_CARGO_ARGS:-} "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -malloc_limit_mb="$limit" \
      -print_final_stats=1 >"$log" 2>&1; then
    result="clean"
  else
    result="FAILED (see $log and fuzz/artifacts/$t/)"
    status=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  summary+=("$(printf '%-20s %12s executions in %ss, malloc limit %4s MB: %s' "$t" "${execs:-?}" "$secs" "$limit" "$result")")
done
printf '%s\n' "${summary[@]}"
exit "$status"
