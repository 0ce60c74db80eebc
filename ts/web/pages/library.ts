// Library: the entries of the local catalog with type, base or family, quantization, size, status and
// last update; filter and sort; download, verify and remove (a dialog says what removing frees).

import type { ModelEntry } from "../../src/generated/contract.js";
import { messageOf, pullInto, type Context } from "../context.js";
import { h } from "../dom.js";
import { formatBytes, kindOf, quantOf, statusText } from "../views.js";

type SortKey = "name" | "size" | "updated" | "status";

function sorted(entries: ModelEntry[], key: SortKey): ModelEntry[] {
  const copy = [...entries];
  const by: Record<SortKey, (a: ModelEntry, b: ModelEntry) => number> = {
    name: (a, b) => a.name.localeCompare(b.name),
    size: (a, b) => (b.size ?? 0) - (a.size ?? 0),
    updated: (a, b) => b.updatedAt.localeCompare(a.updatedAt),
    status: (a, b) => a.status.state.localeCompare(b.status.state),
  };
  return copy.sort(by[key]);
}

/** Asks before removing; resolves with keep-files, or undefined when the person cancels. */
function confirmRemove(entry: ModelEntry): Promise<{ keepFiles: boolean } | undefined> {
  const local = entry.source === "local";
  const frees =
    entry.status.state === "available" && !local
      ? `This deletes its downloaded files and frees ${formatBytes(entry.size ?? 0)}.`
      : local
        ? "Its files on your disk stay where they are."
        : "Nothing has been downloaded for it; only the entry goes.";
  const keep = h("input", { type: "checkbox", name: "keepFiles" });
  const ok = h("button", { type: "submit", value: "remove", class: "danger" }, "Remove");
  const no = h("button", { type: "submit", value: "cancel", class: "secondary" }, "Cancel");
  const dialog = h(
    "dialog",
    { "aria-labelledby": "remove-title", class: "confirm" },
    h(
      "form",
      { method: "dialog" },
      h("h2", { id: "remove-title" }, `Remove ${entry.name}?`),
      h("p", { "data-field": "frees" }, frees),
      local ? null : h("label", {}, keep, " Keep the files (remove only the entry)"),
      h("div", { class: "buttons" }, no, ok),
    ),
  );
  document.body.append(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const answer = dialog.returnValue === "remove" ? { keepFiles: keep.checked } : undefined;
      dialog.remove();
      resolve(answer);
    });
    dialog.showModal();
    no.focus();
  });
}

function card(ctx: Context, entry: ModelEntry, refresh: () => Promise<void>): HTMLLIElement {
  const box = h("div", { class: "pull-box" });
  const actions = h("div", { class: "actions" });
  const available = entry.status.state === "available";
  if (!available && entry.source !== "local") {
    const pull = h("button", { type: "button" }, entry.status.state === "downloading" ? "Resume download" : "Download");
    pull.addEventListener("click", async () => {
      pull.disabled = true;
      await pullInto(ctx, entry.id, box);
      await refresh();
    });
    actions.append(pull);
  }
  const verify = h("button", { type: "button", class: "secondary" }, "Verify");
  verify.addEventListener("click", async () => {
    verify.disabled = true;
    ctx.status(`Verifying ${entry.id}…`);
    try {
      const e = await ctx.api.verify(entry.id);
      ctx.status(`${e.id}: ${e.status.state === "available" ? "every file verified" : statusText(e)}`);
      await refresh();
    } catch (err) {
      ctx.error(`Could not verify ${entry.id}`, err);
    }
    verify.disabled = false;
  });
  const remove = h("button", { type: "button", class: "danger" }, "Remove");
  remove.addEventListener("click", async () => {
    const answer = await confirmRemove(entry);
    if (!answer) {
      remove.focus();
      return;
    }
    try {
      const r = await ctx.api.remove(entry.id, answer.keepFiles);
      ctx.status(`Removed ${r.entry.id}${r.freedBytes > 0 ? `; freed ${formatBytes(r.freedBytes)}` : ""}.`);
      await refresh();
    } catch (err) {
      ctx.error(`Could not remove ${entry.id}`, err);
    }
  });
  actions.append(verify, remove);
  const updated = new Date(entry.updatedAt);
  return h(
    "li",
    { class: "entry", "data-id": entry.id },
    h("h3", {}, h("a", { href: `#/model/${encodeURIComponent(entry.id)}` }, entry.name)),
    h("p", { class: "id" }, entry.id),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Type"),
      h("dd", { "data-field": "type" }, entry.modelType),
      h("dt", {}, entry.modelType === "image" ? "Base" : "Family"),
      h("dd", { "data-field": "kind" }, kindOf(entry) || "unknown"),
      ...(entry.modelType === "llm" ? [h("dt", {}, "Quantization"), h("dd", { "data-field": "quant" }, quantOf(entry) || "none")] : []),
      h("dt", {}, "Size"),
      h("dd", { "data-field": "size" }, formatBytes(entry.size ?? 0)),
      h("dt", {}, "Status"),
      h("dd", { "data-field": "status", "data-state": entry.status.state }, statusText(entry)),
      h("dt", {}, "Updated"),
      h("dd", { "data-field": "updated" }, h("time", { datetime: entry.updatedAt }, updated.toLocaleString())),
    ),
    actions,
    box,
  );
}

/** Renders the Library into `view`. */
export async function libraryPage(ctx: Context, view: HTMLElement): Promise<void> {
  const type = h(
    "select",
    { name: "type", "aria-label": "Type" },
    h("option", { value: "" }, "All types"),
    h("option", { value: "llm" }, "LLMs"),
    h("option", { value: "image" }, "Image models"),
    h("option", { value: "audio" }, "Audio"),
    h("option", { value: "video" }, "Video"),
  );
  const filter = h("input", { type: "search", name: "filter", placeholder: "Filter by name, id, family…", "aria-label": "Filter" });
  const sort = h(
    "select",
    { name: "sort", "aria-label": "Sort by" },
    h("option", { value: "name" }, "Sort by name"),
    h("option", { value: "size" }, "Sort by size"),
    h("option", { value: "updated" }, "Sort by last update"),
    h("option", { value: "status" }, "Sort by status"),
  );
  const list = h("ul", { class: "entries", "aria-label": "Models" });
  const summary = h("p", { class: "summary" });
  let all: ModelEntry[] = [];
  const draw = () => {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = sorted(all, sort.value as SortKey).filter((e) => {
      const text = `${e.id} ${e.name} ${e.author ?? ""} ${kindOf(e)} ${quantOf(e)}`.toLowerCase();
      return words.every((w) => text.includes(w));
    });
    list.replaceChildren(...shown.map((e) => card(ctx, e, refresh)));
    const bytes = shown.filter((e) => e.status.state === "available").reduce((n, e) => n + (e.size ?? 0), 0);
    summary.textContent =
      all.length === 0
        ? "Your library is empty: find a model in Discover and install it."
        : `${shown.length} of ${all.length} models · ${formatBytes(bytes)} on disk`;
  };
  const refresh = async () => {
    try {
      all = await ctx.api.entries(type.value || undefined);
      draw();
    } catch (err) {
      ctx.error("Could not list the library", err);
    }
  };
  type.addEventListener("change", () => void refresh());
  filter.addEventListener("input", draw);
  sort.addEventListener("change", draw);
  view.replaceChildren(
    h("h2", { tabindex: "-1" }, "Library"),
    h("div", { class: "toolbar" }, type, filter, sort),
    summary,
    list,
  );
  await refresh();
  // Pulls running in this server (started in another tab, or before this one reloaded) show here too.
  try {
    for (const p of await ctx.api.runningPulls()) {
      const box = list.querySelector(`li[data-id="${CSS.escape(p.id)}"] .pull-box`);
      if (box instanceof HTMLElement) void pullInto(ctx, p.id, box).then(refresh);
    }
  } catch (err) {
    ctx.status(`Could not see running downloads: ${messageOf(err)}`);
  }
}
