// Where the UI sends its requests and with which tokens: saved in the browser, overridable from the
// URL (`?hf=...&civitai=...`) so tests and proxies can point it elsewhere without a rebuild.

/** What a person can configure. */
export interface Settings {
  hfEndpoint: string;
  hfToken: string;
  civitaiEndpoint: string;
  civitaiToken: string;
  showNsfw: boolean;
}

const KEY = "open-model-catalog.settings";

/** The public APIs; a deployment whose browsers cannot reach them cross-origin sets a proxy instead. */
export const DEFAULT_SETTINGS: Settings = {
  hfEndpoint: "https://huggingface.co",
  hfToken: "",
  civitaiEndpoint: "https://civitai.com",
  civitaiToken: "",
  showNsfw: false,
};

/** Saved settings, then URL overrides, over the defaults. */
export function loadSettings(url: URL, storage: Storage): Settings {
  let saved: Partial<Settings> = {};
  try {
    const raw = storage.getItem(KEY);
    if (raw !== null) saved = JSON.parse(raw) as Partial<Settings>;
  } catch {
    saved = {};
  }
  const settings: Settings = { ...DEFAULT_SETTINGS, ...saved };
  const hf = url.searchParams.get("hf");
  const civitai = url.searchParams.get("civitai");
  if (hf) settings.hfEndpoint = hf;
  if (civitai) settings.civitaiEndpoint = civitai;
  if (url.searchParams.get("nsfw") === "1") settings.showNsfw = true;
  return settings;
}

/** Keeps settings for the next visit. */
export function saveSettings(settings: Settings, storage: Storage): void {
  storage.setItem(KEY, JSON.stringify(settings));
}

/** Fills the settings form. */
export function fillForm(form: HTMLFormElement, s: Settings): void {
  field(form, "hfEndpoint").value = s.hfEndpoint;
  field(form, "hfToken").value = s.hfToken;
  field(form, "civitaiEndpoint").value = s.civitaiEndpoint;
  field(form, "civitaiToken").value = s.civitaiToken;
  field(form, "showNsfw").checked = s.showNsfw;
}

/** Reads the settings form. */
export function readForm(form: HTMLFormElement): Settings {
  return {
    hfEndpoint: field(form, "hfEndpoint").value.trim(),
    hfToken: field(form, "hfToken").value.trim(),
    civitaiEndpoint: field(form, "civitaiEndpoint").value.trim(),
    civitaiToken: field(form, "civitaiToken").value.trim(),
    showNsfw: field(form, "showNsfw").checked,
  };
}

function field(form: HTMLFormElement, name: string): HTMLInputElement {
  const input = form.elements.namedItem(name);
  if (!(input instanceof HTMLInputElement)) throw new Error(`settings form has no input ${name}`);
  return input;
}
