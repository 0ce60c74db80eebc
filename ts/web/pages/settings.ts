// Settings: where the workers listen, and whether NSFW previews show.

import type { Context } from "../context.js";
import { h } from "../dom.js";
import { saveSettings } from "../settings.js";

/** Renders the settings form into `view`. */
export function settingsPage(ctx: Context, view: HTMLElement): void {
  const llm = h("input", { name: "llmUrl", type: "url", required: "", value: ctx.settings.llmUrl });
  const sd = h("input", { name: "sdUrl", type: "url", required: "", value: ctx.settings.sdUrl });
  const nsfw = h("input", { name: "showNsfw", type: "checkbox" });
  nsfw.checked = ctx.settings.showNsfw;
  const form = h(
    "form",
    { id: "settings-form" },
    h("label", {}, "worker-llm URL", llm),
    h("label", {}, "worker-sd URL", sd),
    h("label", { class: "inline" }, nsfw, " Show NSFW previews"),
    h("button", { type: "submit" }, "Save"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.settings.llmUrl = llm.value.trim();
    ctx.settings.sdUrl = sd.value.trim();
    ctx.settings.showNsfw = nsfw.checked;
    saveSettings(ctx.settings, window.localStorage);
    ctx.status("Settings saved.");
  });
  view.replaceChildren(
    h("h2", { tabindex: "-1" }, "Settings"),
    h("p", {}, "The Try it pages talk to workers you started (through this server). Catalog home: ", h("code", {}, ctx.home)),
    form,
  );
  llm.focus();
}
