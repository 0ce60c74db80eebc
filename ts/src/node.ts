// Entry point for Node: loads the CommonJS build of the wasm module synchronously.

import { createRequire } from "node:module";
import type { WasmBindings } from "./catalog.js";
import { catalogFrom, type Catalog } from "./catalog.js";

export * from "./catalog.js";

let loaded: Catalog | undefined;

/** Loads the wasm module once and returns the typed catalog functions (async to match the browser). */
export function initCatalog(): Promise<Catalog> {
  return Promise.resolve(initCatalogSync());
}

/** Loads the wasm module once, synchronously (Node only). */
export function initCatalogSync(): Catalog {
  if (loaded === undefined) {
    const require = createRequire(import.meta.url);
    const bindings = require("../pkg/node/catalog_wasm.js") as WasmBindings;
    loaded = catalogFrom(bindings);
  }
  return loaded;
}
