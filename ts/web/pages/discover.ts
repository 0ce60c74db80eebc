// Discover: search HuggingFace or CivitAI through `catalog serve`, open a result (for CivitAI, pick a
// version: its base model, files and trigger words), see which worker runs it, and install it with
// the download's progress to the end.

import type { ModelEntry } from "../../src/generated/contract.js";
import { pullInto, type Context } from "../context.js";
import { h } from "../dom.js";
import { detailView, formatBytes, resultItem } from "../views.js";

function civitaiModel(id: string): number | undefined {
  const m = /^civitai:(\d+)/.exec(id);
  return m?.[1] ? Number(m[1]) : undefined;
}

function versionLabel(e: ModelEntry): string {
  const base = e.modelType === "image" ? (e.config.baseModel ?? e.config.base) : e.modelType;
  return `${e.revision ?? e.id} · ${base} · ${formatBytes(e.size ?? 0)}`;
}

function files(entry: ModelEntry): HTMLElement {
  const list = entry.files ?? [];
  return h(
    "section",
    { class: "files" },
    h("h3", {}, "Files"),
    list.length === 0
      ? h("p", {}, "No files listed.")
      : h("ul", {}, ...list.map((f) => h("li", {}, `${f.path} (${formatBytes(f.size ?? 0)}, ${f.role})`))),
  );
}

async function showDetail(ctx: Context, entry: ModelEntry, detail: HTMLElement, picker: HTMLElement | null): Promise<void> {
  const answers = await ctx.api.compatOf(entry);
  const box = h("div", { class: "pull-box" });
  const install = h("button", { type: "button", "data-action": "install" }, "Install");
  install.addEventListener("click", async () => {
    install.disabled = true;
    ctx.clearError();
    try {
      const stored = await ctx.api.add(entry.id);
      const last = await pullInto(ctx, stored.id, box);
      if (last?.event === "done") {
        box.append(
          h("p", { class: "installed" }, "Installed. ", h("a", { href: `#/model/${encodeURIComponent(stored.id)}` }, "Open its page"), " or see it in the ", h("a", { href: "#/library" }, "Library"), "."),
        );
      } else {
        install.disabled = false;
      }
    } catch (err) {
      ctx.error(`Could not install ${entry.id}`, err);
      install.disabled = false;
    }
  });
  detail.replaceChildren(
    ...(picker ? [picker] : []),
    ...detailView(entry, answers, ctx.settings.showNsfw),
    files(entry),
    h("div", { class: "actions" }, install),
    box,
  );
  detail.hidden = false;
}

async function open(ctx: Context, entry: ModelEntry, detail: HTMLElement): Promise<void> {
  ctx.clearError();
  ctx.status(`Loading ${entry.id}…`);
  try {
    const model = civitaiModel(entry.id);
    if (model !== undefined) {
      const versions = await ctx.api.civitaiVersions(model);
      const select = h(
        "select",
        { name: "version", "aria-label": "Version" },
        ...versions.map((v) => h("option", { value: v.id }, versionLabel(v))),
      );
      const wanted = versions.find((v) => v.id === entry.id) ?? versions[0];
      if (!wanted) throw new Error(`civitai model ${model} has no versions`);
      select.value = wanted.id;
      const picker = h("label", { class: "picker" }, "Version ", select);
      select.addEventListener("change", () => {
        const v = versions.find((x) => x.id === select.value);
        if (v) void showDetail(ctx, v, detail, picker).then(() => select.focus());
      });
      await showDetail(ctx, wanted, detail, picker);
    } else {
      await showDetail(ctx, await ctx.api.remote(entry.id), detail, null);
    }
    ctx.status("");
    detail.querySelector("h2")?.focus();
  } catch (err) {
    ctx.error(`Could not load ${entry.id}`, err);
  }
}

/** Renders Discover into `view`. */
export function discoverPage(ctx: Context, view: HTMLElement): void {
  const source = h(
    "select",
    { name: "source", "aria-label": "Source" },
    h("option", { value: "hf" }, "HuggingFace"),
    h("option", { value: "civitai" }, "CivitAI"),
  );
  const query = h("input", { name: "query", type: "search", placeholder: "Search models", "aria-label": "Search query", required: "" });
  const form = h("form", { id: "search-form", role: "search" }, source, query, h("button", { type: "submit" }, "Search"));
  const results = h("ul", { id: "results", "aria-label": "Results" });
  const detail = h("section", { id: "detail", "aria-label": "Model" });
  detail.hidden = true;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    ctx.clearError();
    ctx.status("Searching…");
    try {
      const found = await ctx.api.search(source.value === "civitai" ? "civitai" : "hf", query.value);
      results.replaceChildren(...found.map((e) => resultItem(e, () => void open(ctx, e, detail))));
      ctx.status(`${found.length} result${found.length === 1 ? "" : "s"}`);
    } catch (err) {
      results.replaceChildren();
      ctx.error("Search failed", err);
    }
  });
  view.replaceChildren(h("h2", { tabindex: "-1" }, "Discover"), form, h("div", { class: "panes" }, results, detail));
  query.focus();
}
