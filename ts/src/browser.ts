// Entry point for browsers and bundlers: loads the wasm module with `fetch` (or from given bytes).

import initWasm, * as bindings from "../pkg/web/catalog_wasm.js";
import { catalogFrom, type Catalog } from "./catalog.js";

export * from "./catalog.js";

/** Where the module's bytes come from: default is the `.wasm` file next to the glue code. */
export type WasmSource = URL | string | Response | BufferSource | WebAssembly.Module;

let loaded: Promise<Catalog> | undefined;

/** Loads the wasm module once (later calls share it) and returns the typed catalog functions. */
export function initCatalog(source?: WasmSource): Promise<Catalog> {
  loaded ??= initWasm(source === undefined ? undefined : { module_or_path: source }).then(() =>
    catalogFrom(bindings),
  );
  return loaded;
}
