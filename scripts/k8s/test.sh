#!/usr/bin/env bash
# The Kubernetes deployment's tests (deploy/), run by scripts/test.sh after the workspace's tests:
#   1. manifests: render every overlay, validate strictly, run the worker as the manifests say;
#   2. multi-host: three replicas in network namespaces behind HAProxy, SIGTERM and a cut mid-run;
#   3. chroot: the binaries in a debootstrap chroot of the CPU image's base (no container engine here).
# 2 and 3 need root (CI runs as root); elsewhere they are skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/../.."

# `cargo test --workspace` (scripts/test.sh, just before) leaves both binaries in target/debug; building
# them alone would unify features differently and recompile dependencies, so only build what is missing.
BIN_DIR=target/debug
if [ ! -x "$BIN_DIR/worker-llm" ] || [ ! -x "$BIN_DIR/catalog" ]; then
  cargo build --locked -p worker-llm -p catalog --bin worker-llm --bin catalog
fi

timed() {
  local name=$1 t0=$SECONDS
  shift
  "$@"
  echo "k8s: $name took $((SECONDS - t0)) s"
}
timed manifests bash scripts/k8s/manifests-test.sh "$BIN_DIR"
if [ "$(id -u)" != 0 ]; then
  if [ "${CI:-}" = true ]; then echo "k8s tests: CI must run as root" >&2; exit 1; fi
  echo "k8s: SKIPPED the multi-host and chroot tests (they need root)"
  exit 0
fi
timed multi-host bash scripts/k8s/multihost-test.sh "$BIN_DIR/worker-llm"
timed chroot bash scripts/k8s/chroot-test.sh "$BIN_DIR"
