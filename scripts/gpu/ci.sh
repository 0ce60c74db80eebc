#!/usr/bin/env bash
# CI's CUDA stage: the release `--features cuda` build of both workers (build.sh), with no GPU.
# It costs about as much as the rest of CI, so it runs when what it compiles could have changed: the
# inputs below hash to a stamp kept beside the toolkit cache, written after a successful build; the same
# hash skips the build and says so. OMC_CUDA_CI=always builds regardless, OMC_CUDA_CI=never skips.
# Inputs: every Cargo.toml and Cargo.lock (Candle, cudarc and the features), the source of the crates a
# CUDA build compiles differently (worker-runtime, worker-llm, worker-sd), .cargo/, and scripts/gpu/.
set -euo pipefail
cd "$(dirname "$0")/../.."

mode="${OMC_CUDA_CI:-changed}"
if [ "$mode" = never ]; then
  echo "CUDA build skipped (OMC_CUDA_CI=never)"
  exit 0
fi
stamp_dir="${OMC_CUDA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/open-model-catalog/venv-cuda13}"
inputs="$(git ls-files -z --cached --others --exclude-standard -- Cargo.lock '*Cargo.toml' .cargo \
  worker-runtime/src worker-llm/src worker-llm/examples worker-sd/src scripts/gpu |
  sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
stamp="$stamp_dir/ci-built-$inputs"
if [ "$mode" != always ] && [ -f "$stamp" ]; then
  echo "CUDA build skipped: these inputs ($inputs) built on $(cat "$stamp"); OMC_CUDA_CI=always to rebuild"
  exit 0
fi
t0=$SECONDS
out="$(nice -n 10 bash scripts/gpu/build.sh | tail -1)"
ls -la "$out/worker-llm" "$out/worker-sd" "$out/examples/logits"
mkdir -p "$stamp_dir" && date -u +%FT%TZ >"$stamp"
echo "CUDA build of worker-llm and worker-sd took $((SECONDS - t0))s"
