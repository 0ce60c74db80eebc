#!/usr/bin/env bash
# The CPU image's runtime test without a container engine (none runs here): the worker and catalog
# binaries run in a chroot of the image's base, Debian 12 (bookworm) minbase made with debootstrap and
# cached outside the repo, as the image's user (uid 10001), with the image's environment: every shared
# library resolves, `catalog add`/`pull` fill /models, and `worker-llm serve` loads a model and answers.
#   bash scripts/k8s/chroot-test.sh [BIN_DIR]    # BIN_DIR holds worker-llm and catalog (target/debug)
# Root only (chroot, mount, unshare).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN_DIR=${1:-target/debug}
ROOTFS="${OMC_CHROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/open-model-catalog/chroot-bookworm}"

if [ "$(id -u)" != 0 ]; then echo "chroot-test: needs root" >&2; exit 1; fi
for bin in worker-llm catalog; do
  [ -x "$BIN_DIR/$bin" ] || { echo "chroot-test: no $BIN_DIR/$bin (cargo build -p worker-llm -p catalog)" >&2; exit 1; }
done
if [ ! -x "$ROOTFS/bin/sh" ]; then
  command -v debootstrap >/dev/null || {
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
  }
  echo "chroot-test: debootstrap of bookworm (minbase) into $ROOTFS, once (about 3 minutes)" >&2
  rm -rf "$ROOTFS.tmp"
  debootstrap --variant=minbase bookworm "$ROOTFS.tmp" http://deb.debian.org/debian >&2
  mv "$ROOTFS.tmp" "$ROOTFS"
fi

# What the image's Dockerfile adds, in a folder removed afterwards: binaries, /models owned by 10001.
STAGE="/opt/omc-chroot-test-$$"
cleanup() {
  umount "$ROOTFS/proc" 2>/dev/null || true
  rm -rf "${ROOTFS:?}$STAGE"
}
trap cleanup EXIT
mkdir -p "$ROOTFS$STAGE/bin" "$ROOTFS$STAGE/models" "$ROOTFS$STAGE/fixture"
cp "$BIN_DIR/worker-llm" "$BIN_DIR/catalog" "$ROOTFS$STAGE/bin/"
MODEL=$(bash scripts/fetch-models.sh | tail -n 1)
cp "$MODEL" "$ROOTFS$STAGE/fixture/model.gguf"
chown -R 10001:10001 "$ROOTFS$STAGE/models"
mount -t proc proc "$ROOTFS/proc"

echo "chroot-test: $(chroot "$ROOTFS" ldd --version | head -n 1) in $ROOTFS"
missing=$(chroot "$ROOTFS" ldd "$STAGE/bin/worker-llm" "$STAGE/bin/catalog" | grep -E 'not found|version .* not found' || true)
if [ -n "$missing" ]; then echo "chroot-test: FAIL: unresolved libraries in the base image:" >&2; echo "$missing" >&2; exit 1; fi

in_image() {
  chroot --userspec=10001:10001 "$ROOTFS" env -i PATH="$STAGE/bin:/usr/local/bin:/usr/bin:/bin" \
    CATALOG_HOME="$STAGE/models/catalog" HF_HOME="$STAGE/models/huggingface" HOME=/nonexistent "$@"
}
in_image worker-llm --version
in_image catalog --version
ID="file:$STAGE/fixture/model.gguf"
in_image catalog add --no-download "$ID" >/dev/null
in_image catalog pull "$ID" >/dev/null
# Serve in a network namespace of its own (the image's fixed port 8080), probe from the same namespace.
unshare --net bash -c '
  set -euo pipefail
  ip link set lo up
  "$@" worker-llm serve --model "'"$ID"'" --host 0.0.0.0 --port 8080 --worker-id chroot >"'"$ROOTFS$STAGE"'/serve.log" 2>&1 &
  pid=$!
  python3 - <<PY
import json, time, urllib.request, urllib.error, sys
deadline = time.monotonic() + 60
while True:
    try:
        if urllib.request.urlopen("http://127.0.0.1:8080/ready", timeout=2).status == 200:
            break
    except (urllib.error.URLError, OSError):
        pass
    if time.monotonic() > deadline:
        sys.exit("chroot-test: FAIL: /ready not 200 within 60 s")
    time.sleep(0.2)
body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}).encode()
req = urllib.request.Request("http://127.0.0.1:8080/v1/chat/completions", data=body,
                             headers={"Content-Type": "application/json"})
answer = json.loads(urllib.request.urlopen(req, timeout=60).read())
assert answer["choices"][0]["finish_reason"] in ("length", "stop"), answer
print("chroot-test: /ready 200 and a chat completion from the worker inside the chroot")
PY
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; echo "chroot-test: FAIL: no exit 10 s after SIGTERM" >&2; exit 1; fi
  wait "$pid"
' _ chroot --userspec=10001:10001 "$ROOTFS" env -i PATH="$STAGE/bin:/usr/bin:/bin" \
    CATALOG_HOME="$STAGE/models/catalog" HF_HOME="$STAGE/models/huggingface" HOME=/nonexistent \
  || { cat "$ROOTFS$STAGE/serve.log" >&2; exit 1; }
echo "chroot-test: PASS"
