#!/usr/bin/env bash
# One command that proves both workers on an NVIDIA GPU (see scripts/gpu/check.py for what it checks).
#   bash scripts/gpu/check.sh pack              here: build (build.sh), gather SmolLM2 and wheels, and split
#                                               them into .gpu-carry/1, .gpu-carry/2, ... (one per device call)
#   bash scripts/gpu/check.sh run               on the GPU machine, once per part, carrying .gpu-carry/N: the
#                                               last call runs every check and prints one table
#   bash scripts/gpu/check.sh run --cpu-dry-run here: the same checks on the CPU, small sizes
#   bash scripts/gpu/check.sh selftest          anywhere, a second: the table, exit status and staging code
# The device tool sends the checkout of the session that calls it (the lead's), so pack there.
# Exit: 0 passed, 1 a check failed, 2 checks passed but a speed goal was missed.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=python3
# The dry run needs PyTorch and diffusers here: the shared reference venv has them.
if [ "${2:-}" = "--cpu-dry-run" ] && ! python3 -c 'import torch, diffusers' 2>/dev/null; then
  PY="${OMC_TORCH_PYTHON:-$(bash scripts/reference/venv.sh | tail -n 1)}"
fi
export PYTHONUNBUFFERED=1
exec "$PY" scripts/gpu/check.py "$@"
