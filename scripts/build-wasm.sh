#!/usr/bin/env bash
# Builds catalog-wasm for the TypeScript package: ts/pkg/web (ES module, browsers and bundlers) and
# ts/pkg/node (CommonJS, Node), each shrunk with wasm-opt -Oz. On a fresh machine with only Rust,
# Python and Node it first installs what it needs, and skips each install that is already done:
# the wasm32 target, wasm-bindgen-cli at the exact version of the wasm-bindgen crate in Cargo.lock
# (cargo install, about 2.5 minutes once), and ts/node_modules (npm ci, which brings binaryen's wasm-opt).
# scripts/test.sh runs it before `cd ts && npm test`.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "build-wasm: $*" >&2; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "installing the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# npm packages (free when already installed for this lock file): they download while cargo compiles
# (network against CPU), and are waited for before wasm-opt is needed.
bash scripts/ts-deps.sh &
npm_pid=$!

# The CLI and the crate must agree exactly, or wasm-bindgen refuses the module.
bindgen_version=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$bindgen_version" ]; then
  log "no wasm-bindgen in Cargo.lock"
  exit 1
fi
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$cargo_bin:$PATH"
if [ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen $bindgen_version" ]; then
  log "installing wasm-bindgen-cli $bindgen_version"
  # No --locked: its lock file names a crate version the registry mirror may lack.
  cargo install wasm-bindgen-cli --version "$bindgen_version" --force
fi

# Size matters more than speed for a module the browser downloads; these override only this build.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=z
export CARGO_PROFILE_RELEASE_LTO=fat
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
export CARGO_PROFILE_RELEASE_PANIC=abort
export CARGO_PROFILE_RELEASE_STRIP=debuginfo
cargo build -p catalog-wasm --target wasm32-unknown-unknown --release --locked

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
wasm="$target_dir/wasm32-unknown-unknown/release/catalog_wasm.wasm"
wasm_opt=ts/node_modules/.bin/wasm-opt
wait "$npm_pid"

rm -rf ts/pkg/web ts/pkg/node
wasm-bindgen --target web --out-dir ts/pkg/web "$wasm"
wasm-bindgen --target nodejs --out-dir ts/pkg/node "$wasm"
optimize() {
  # The features rustc enables by default for wasm32 must be allowed, or wasm-opt rejects the module.
  "$wasm_opt" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue "$1" -o "$1"
}
# Both targets share one module (only the JS glue differs): optimize it once when that holds.
if cmp -s ts/pkg/web/catalog_wasm_bg.wasm ts/pkg/node/catalog_wasm_bg.wasm; then
  optimize ts/pkg/web/catalog_wasm_bg.wasm
  cp ts/pkg/web/catalog_wasm_bg.wasm ts/pkg/node/catalog_wasm_bg.wasm
else
  optimize ts/pkg/web/catalog_wasm_bg.wasm
  optimize ts/pkg/node/catalog_wasm_bg.wasm
fi
# Node reads pkg/node's .js as CommonJS although the package itself is an ES module.
echo '{ "type": "commonjs" }' >ts/pkg/node/package.json

raw=$(wc -c <ts/pkg/web/catalog_wasm_bg.wasm)
gz=$(gzip -9 -c ts/pkg/web/catalog_wasm_bg.wasm | wc -c)
log "catalog_wasm_bg.wasm: $raw bytes, $gz bytes gzipped (goal: under 256000)"
