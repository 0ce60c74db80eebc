#!/usr/bin/env bash
# CI's CUDA stage, no GPU needed. Every run:
#   1. the GPU check's self-test (check.py selftest: its table, exit status and staging; a second);
#   2. lint.sh: `cargo clippy --features cuda` of worker-model, worker-llm and worker-sd with the kernels
#      stubbed: every `cfg(feature = "cuda")` path and Candle's CUDA code compile (minutes; README: GPU).
# When the kernels' or the link's inputs changed:
#   3. build.sh: the real release build, Candle's kernels through nvcc for sm_80 and sm_90 and the binaries
#      linked. From cold it takes longer than the rest of CI leaves of its 45 minutes on 2 cores, and what it
#      adds to lint.sh depends only on: the CUDA crates' entries in Cargo.lock (candle-*, cudarc, cudaforge,
#      half, float8), the Cargo.toml files (features), and the build scripts here (toolkit pins, nvcc wrapper,
#      flags). Those hash to a key; the last key built is recorded in scripts/gpu/cuda-built.txt (committed)
#      and, per machine, as a stamp beside the toolkit cache. A matching record or stamp skips the build, and
#      so does a missing record (none is committed until a first build completes).
#   bash scripts/gpu/ci.sh            as above
#   bash scripts/gpu/ci.sh --record   build regardless, then write the record (commit it with the change)
#   OMC_CUDA_CI=always|never          build regardless, or skip the build (the lint still runs)
set -euo pipefail
cd "$(dirname "$0")/../.."

python3 scripts/gpu/check.py selftest | tail -n 1
bash scripts/gpu/lint.sh

record_file=scripts/gpu/cuda-built.txt
key="$({
  awk -v RS= '/^\[\[package\]\]\nname = "(candle-[a-z-]+|cudarc|cudaforge|float8|half)"\n/' Cargo.lock
  git ls-files -z --cached --others --exclude-standard -- '*Cargo.toml' .cargo scripts/gpu/build.sh \
    scripts/gpu/env.sh scripts/gpu/toolkit.sh scripts/gpu/nvcc-multiarch.sh | sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-16)"

mode="${OMC_CUDA_CI:-changed}"
[ "${1:-}" = --record ] && mode=always
stamp_dir="${OMC_CUDA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/open-model-catalog/venv-cuda13}"
stamp="$stamp_dir/ci-built-$key"
recorded="$(cut -d' ' -f1 "$record_file" 2>/dev/null || true)"
if [ "$mode" = never ]; then
  echo "CUDA build skipped (OMC_CUDA_CI=never)"
  exit 0
elif [ "$mode" != always ] && [ -z "$recorded" ]; then
  # Until a first build is recorded, a clean machine would build cold on every run, past CI's budget.
  echo "CUDA build skipped: none recorded yet; bash scripts/gpu/ci.sh --record builds it and writes $record_file"
  exit 0
elif [ "$mode" != always ] && [ "$recorded" = "$key" ]; then
  echo "CUDA build skipped: its inputs ($key) match $record_file: $(cut -d' ' -f2- "$record_file")"
  exit 0
elif [ "$mode" != always ] && [ -f "$stamp" ]; then
  echo "CUDA build skipped: its inputs ($key) built on this machine $(cat "$stamp")"
  exit 0
fi
echo "CUDA build: inputs $key, recorded ${recorded:-none}"
t0=$SECONDS
out="$(nice -n 10 bash scripts/gpu/build.sh | tail -n 1)"
ls -la "$out/worker-llm" "$out/worker-sd" "$out/examples/logits"
secs=$((SECONDS - t0))
line="$key built $(date -u +%FT%TZ) in ${secs}s from commit $(git rev-parse --short HEAD)"
mkdir -p "$stamp_dir" && echo "${line#* }" >"$stamp"
if [ "${1:-}" = --record ]; then
  echo "$line" >"$record_file"
  echo "wrote $record_file: commit it"
elif [ "$recorded" != "$key" ]; then
  echo "to spare clean CI machines this build, record it: bash scripts/gpu/ci.sh --record, and commit"
fi
echo "CUDA build of worker-llm and worker-sd took ${secs}s"
