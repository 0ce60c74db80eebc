#!/usr/bin/env bash
# The multi-host test (scripts/k8s/multihost.py): three worker-llm replicas in their own network
# namespaces behind HAProxy. Needs root (ip netns), HAProxy (installed from Debian if missing) and the
# SmolLM2 GGUF (scripts/fetch-models.sh). Cleans up its namespaces, links and processes on any exit.
#   bash scripts/k8s/multihost-test.sh [path/to/worker-llm]
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
  echo "multihost-test: needs root (ip netns, veth)" >&2
  exit 1
fi
command -v haproxy >/dev/null || {
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >&2
}
WORKER=${1:-target/debug/worker-llm}
[ -x "$WORKER" ] || { echo "multihost-test: no worker binary at $WORKER (cargo build -p worker-llm)" >&2; exit 1; }
MODEL=$(bash scripts/fetch-models.sh | tail -n 1)

RUN_ID="omc$$"          # short: interface names are at most 15 characters ("omc12345w1h")
WORK=$(mktemp -d)
cleanup() {
  local ns pid
  for ns in $(ip netns list | awk '{print $1}' | grep "^$RUN_ID-" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  for link in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$RUN_ID" || true); do
    ip link del "$link" 2>/dev/null || true
  done
  if [ -f "$WORK/haproxy.pid" ]; then kill "$(cat "$WORK/haproxy.pid")" 2>/dev/null || true; fi
  if [ "${KEEP_LOGS:-0}" = 1 ]; then echo "logs in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

status=0
timeout --kill-after=10 420 python3 scripts/k8s/multihost.py --run-id "$RUN_ID" --worker "$WORKER" \
  --model-path "$MODEL" --workdir "$WORK" "${@:2}" || status=$?
if [ "$status" != 0 ]; then
  for f in "$WORK"/*.log; do echo "--- $f (last lines)"; tail -n 15 "$f"; done >&2
fi
exit "$status"
