// The typed surface of the package: the wasm exports re-typed with the contract's generated types.
// Both entry points (browser.ts, node.ts) load the module their way and hand its bindings here.

import type * as Bindings from "../pkg/web/catalog_wasm.js";
import type {
  Compatibility,
  DeviceKind,
  ModelEntry,
  WorkerCapabilities,
  WorkerKind,
} from "./generated/contract.js";

export type * from "./generated/contract.js";
export type { CatalogIdParts, SelectorKind } from "../pkg/web/catalog_wasm.js";
import type { CatalogIdParts } from "../pkg/web/catalog_wasm.js";

/** The functions of the wasm module, whichever way it was loaded. */
export type WasmBindings = Omit<typeof Bindings, "default" | "initSync">;

/** Everything the catalog's Rust code answers in the browser or in Node. */
export interface Catalog {
  /** Splits a catalog id (`hf:org/name@rev:Q4_K_M`, `civitai:1@2`, `file:path`); throws naming the bad part. */
  parseCatalogId(id: string): CatalogIdParts;
  /** Builds the id string of parts; throws when it would not parse back. */
  formatCatalogId(parts: CatalogIdParts): string;
  /** The canonical form of an id someone typed. */
  normalizeCatalogId(id: string): string;
  /** For each worker this project ships: can it run the entry, why not, and the memory it needs. */
  checkCompatibility(entry: ModelEntry, device?: DeviceKind): Compatibility[];
  /** The answer for one worker build with the given capabilities. */
  checkWorker(entry: ModelEntry, capabilities: WorkerCapabilities, device?: DeviceKind): Compatibility;
  /** What a worker kind declares it runs. */
  workerCapabilities(kind: WorkerKind): WorkerCapabilities;
}

/** Wraps loaded bindings in the typed `Catalog` surface. */
export function catalogFrom(b: WasmBindings): Catalog {
  return {
    parseCatalogId: (id) => b.parseCatalogId(id),
    formatCatalogId: (parts) => b.formatCatalogId(parts),
    normalizeCatalogId: (id) => b.normalizeCatalogId(id),
    checkCompatibility: (entry, device) => b.checkCompatibility(entry, device),
    checkWorker: (entry, capabilities, device) => b.checkWorker(entry, capabilities, device),
    workerCapabilities: (kind) => b.workerCapabilities(kind),
  };
}
