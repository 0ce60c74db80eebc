// What every page gets: the API client, the settings, and the page's status and error lines.

import type { CatalogApi, PullEvent } from "./api.js";
import { h } from "./dom.js";
import type { Settings } from "./settings.js";
import { formatBytes } from "./views.js";

/** Shared by the pages. */
export interface Context {
  api: CatalogApi;
  settings: Settings;
  /** The catalog home, for the serve commands shown. */
  home: string;
  /** Says something in the status line (read out by screen readers). */
  status(text: string): void;
  /** Shows an error in words; the page stays usable. */
  error(context: string, err: unknown): void;
  clearError(): void;
}

/** The message of anything thrown. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** One progress event in words: bytes, total, speed, phase. */
export function progressText(ev: Extract<PullEvent, { event: "progress" }>): string {
  const total = ev.totalBytes ? ` of ${formatBytes(ev.totalBytes)}` : "";
  const speed = ev.bytesPerSecond > 0 ? ` · ${formatBytes(ev.bytesPerSecond)}/s` : "";
  const phase = ev.phase === "verifying" ? " · verifying SHA-256" : "";
  return `${formatBytes(ev.downloadedBytes)}${total}${speed}${phase}`;
}

/**
 * Pulls an entry into `box`, showing a progress bar, the bytes, speed and phase, and a Cancel button;
 * resolves with the last event. Another tab pulling the same entry shares the download.
 */
export async function pullInto(ctx: Context, id: string, box: HTMLElement): Promise<PullEvent | undefined> {
  const bar = h("progress", { max: "1", value: "0", "aria-label": `Download of ${id}` });
  const text = h("span", { class: "pull-text", "aria-live": "polite" }, "Starting…");
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
  cancel.addEventListener("click", () => {
    cancel.disabled = true;
    ctx.api.cancelPull(id).catch((err: unknown) => ctx.error("Could not cancel", err));
  });
  box.replaceChildren(h("div", { class: "pull", "data-pull": id }, bar, text, cancel));
  let last: PullEvent | undefined;
  try {
    for await (const ev of ctx.api.pull(id)) {
      last = ev;
      if (ev.event === "progress") {
        if (ev.totalBytes) bar.value = Math.min(1, ev.downloadedBytes / ev.totalBytes);
        else bar.removeAttribute("value");
        text.textContent = progressText(ev);
      } else if (ev.event === "done") {
        bar.value = 1;
        text.textContent = `Downloaded and verified (${formatBytes(ev.entry.size ?? 0)}).`;
      } else if (ev.event === "cancelled") {
        text.textContent = `Cancelled; ${formatBytes(ev.downloadedBytes)} kept, the next download resumes.`;
      } else {
        text.textContent = `Failed: ${ev.message}`;
      }
    }
  } catch (err) {
    text.textContent = `Failed: ${messageOf(err)}`;
  }
  cancel.remove();
  box.querySelector(".pull")?.setAttribute("data-state", last?.event ?? "error");
  return last;
}
