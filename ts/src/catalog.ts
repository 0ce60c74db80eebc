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
export type {
  CatalogIdParts,
  GgufMetadata,
  GgufScalar,
  SelectorKind,
  SourceOptions,
} from "../pkg/web/catalog_wasm.js";
import type { CatalogIdParts, GgufMetadata, SourceOptions } from "../pkg/web/catalog_wasm.js";

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

  /** The entry a Hub model-info response (`/api/models/ORG/NAME`) describes, without fetching files. */
  parseHfModelInfo(json: string): ModelEntry;
  /** The entries of a Hub search response (`/api/models?search=`). */
  parseHfSearch(json: string): ModelEntry[];
  /** One entry per version of a CivitAI model response (`/api/v1/models/ID`), newest first. */
  parseCivitaiModel(json: string): ModelEntry[];
  /** The entry of a CivitAI model-version response (`/api/v1/model-versions/ID`). */
  parseCivitaiModelVersion(json: string): ModelEntry;
  /** The entries of a CivitAI models-list response (`/api/v1/models?query=`). */
  parseCivitaiModels(json: string): ModelEntry[];
  /** The metadata of a GGUF header from the first bytes of the file; too few bytes throws saying how many. */
  readGgufMetadata(bytes: Uint8Array): GgufMetadata;

  /** Fetches model info (and the files the catalog asks for) from `source.endpoint`; `id` is `hf:...` or `ORG/NAME`. */
  fetchHfModel(id: string, source: SourceOptions): Promise<ModelEntry>;
  /** Searches the Hub at `source.endpoint`. */
  searchHf(text: string, source: SourceOptions): Promise<ModelEntry[]>;
  /** Fetches a CivitAI model (every version, or the one `civitai:M@V` names). */
  fetchCivitaiModel(id: string, source: SourceOptions): Promise<ModelEntry[]>;
  /** Fetches one CivitAI model version by its id. */
  fetchCivitaiModelVersion(versionId: number, source: SourceOptions): Promise<ModelEntry>;
  /** Searches CivitAI at `source.endpoint`. */
  searchCivitai(text: string, source: SourceOptions): Promise<ModelEntry[]>;
  /** Reads a GGUF file's header over HTTP Range requests. */
  fetchGgufMetadata(url: string, token?: string): Promise<GgufMetadata>;
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
    parseHfModelInfo: (json) => b.parseHfModelInfo(json),
    parseHfSearch: (json) => b.parseHfSearch(json),
    parseCivitaiModel: (json) => b.parseCivitaiModel(json),
    parseCivitaiModelVersion: (json) => b.parseCivitaiModelVersion(json),
    parseCivitaiModels: (json) => b.parseCivitaiModels(json),
    readGgufMetadata: (bytes) => b.readGgufMetadata(bytes),
    fetchHfModel: (id, source) => b.fetchHfModel(id, source),
    searchHf: (text, source) => b.searchHf(text, source),
    fetchCivitaiModel: (id, source) => b.fetchCivitaiModel(id, source),
    fetchCivitaiModelVersion: (versionId, source) => b.fetchCivitaiModelVersion(versionId, source),
    searchCivitai: (text, source) => b.searchCivitai(text, source),
    fetchGgufMetadata: (url, token) => b.fetchGgufMetadata(url, token),
  };
}
