// The catalog web UI: search HuggingFace or CivitAI through the wasm package, list the results, and
// show one model with the fields of its type and which of our workers can run it.

import { initCatalog, type Catalog, type ModelEntry } from "../src/browser.js";
import { byId } from "./dom.js";
import { fillForm, loadSettings, readForm, saveSettings, type Settings } from "./settings.js";
import { detailView, resultItem } from "./views.js";

const searchForm = byId("search-form", HTMLFormElement);
const settingsForm = byId("settings-form", HTMLFormElement);
const status = byId("status", HTMLParagraphElement);
const errorBox = byId("error", HTMLParagraphElement);
const results = byId("results", HTMLUListElement);
const detail = byId("detail", HTMLElement);

let settings: Settings = loadSettings(new URL(window.location.href), window.localStorage);
let shown: ModelEntry | undefined;
fillForm(settingsForm, settings);

/** Shows an error in words; the page stays usable. */
function showError(context: string, err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  errorBox.textContent = `${context}: ${message}`;
  errorBox.hidden = false;
  status.textContent = "";
}

function clearError(): void {
  errorBox.hidden = true;
  errorBox.textContent = "";
}

function hf() {
  return { endpoint: settings.hfEndpoint, token: settings.hfToken || undefined, limit: 20 };
}

function civitai() {
  return { endpoint: settings.civitaiEndpoint, token: settings.civitaiToken || undefined, limit: 20 };
}

function render(catalog: Catalog, entry: ModelEntry): void {
  shown = entry;
  detail.replaceChildren(...detailView(entry, catalog.checkCompatibility(entry), settings.showNsfw));
  detail.hidden = false;
}

async function open(catalog: Catalog, entry: ModelEntry): Promise<void> {
  clearError();
  status.textContent = `Loading ${entry.id}…`;
  try {
    let full: ModelEntry = entry;
    if (entry.source === "huggingface") {
      full = await catalog.fetchHfModel(entry.id, hf());
    } else if (entry.source === "civitai") {
      // Every version comes back; show the one listed, else the newest.
      const versions = await catalog.fetchCivitaiModel(entry.id, civitai());
      full = versions.find((v) => v.id === entry.id) ?? versions[0] ?? entry;
    }
    render(catalog, full);
    status.textContent = "";
  } catch (err) {
    showError(`Could not load ${entry.id}`, err);
  }
}

async function search(catalog: Catalog, source: string, query: string): Promise<void> {
  clearError();
  status.textContent = "Searching…";
  try {
    const entries =
      source === "civitai" ? await catalog.searchCivitai(query, civitai()) : await catalog.searchHf(query, hf());
    results.replaceChildren(...entries.map((e) => resultItem(e, () => void open(catalog, e))));
    status.textContent = `${entries.length} result${entries.length === 1 ? "" : "s"}`;
  } catch (err) {
    results.replaceChildren();
    showError("Search failed", err);
  }
}

async function main(): Promise<void> {
  let catalog: Catalog;
  try {
    catalog = await initCatalog();
  } catch (err) {
    showError("Could not load the catalog module", err);
    return;
  }
  document.body.dataset.ready = "true";
  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(searchForm);
    void search(catalog, String(data.get("source") ?? "hf"), String(data.get("query") ?? ""));
  });
  settingsForm.addEventListener("submit", (event) => {
    event.preventDefault();
    settings = readForm(settingsForm);
    saveSettings(settings, window.localStorage);
    status.textContent = "Settings saved.";
    if (shown) render(catalog, shown);
  });
}

void main();
