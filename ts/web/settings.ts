// What a person configures: where the workers listen (for "Try it") and whether NSFW previews show.
// Saved in the browser; `?llm=...&sd=...&nsfw=1` override them so tests and links can point elsewhere.
// The catalog token (`?token=` in the URL `catalog serve` prints) is kept for this tab only.

/** What a person can configure. */
export interface Settings {
  llmUrl: string;
  sdUrl: string;
  showNsfw: boolean;
}

const KEY = "open-model-catalog.settings";
const TOKEN_KEY = "open-model-catalog.token";

/** `worker-llm serve` and `worker-sd serve` on their usual ports. */
export const DEFAULT_SETTINGS: Settings = {
  llmUrl: "http://127.0.0.1:8080",
  sdUrl: "http://127.0.0.1:8081",
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
  const llm = url.searchParams.get("llm");
  const sd = url.searchParams.get("sd");
  if (llm) settings.llmUrl = llm;
  if (sd) settings.sdUrl = sd;
  if (url.searchParams.get("nsfw") === "1") settings.showNsfw = true;
  return settings;
}

/** Keeps settings for the next visit. */
export function saveSettings(settings: Settings, storage: Storage): void {
  storage.setItem(KEY, JSON.stringify(settings));
}

/** The catalog token from the URL (then kept for the tab), else the one kept. */
export function loadToken(url: URL, storage: Storage): string {
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) storage.setItem(TOKEN_KEY, fromUrl);
  return fromUrl ?? storage.getItem(TOKEN_KEY) ?? "";
}
