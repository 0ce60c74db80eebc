// What the page shows of one model: the fields that matter for its type, and which worker runs it.

import type { Compatibility, ImageConfig, LlmConfig, ModelEntry } from "../src/catalog.js";
import { h } from "./dom.js";

/** One row of a definition list; `field` names it for tests and styles. */
function row(label: string, field: string, value: string | number | undefined): HTMLElement[] {
  return [h("dt", {}, label), h("dd", { "data-field": field }, value === undefined ? "unknown" : value)];
}

function list(values: string[] | undefined): string | undefined {
  return values && values.length > 0 ? values.join(", ") : undefined;
}

/** Bytes as people read them. */
export function formatBytes(bytes: number): string {
  if (bytes <= 0) return "unknown";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

function llmFields(c: LlmConfig): HTMLElement[] {
  return [
    ...row("Family", "family", c.modelFamily ?? c.architecture),
    ...row("Architecture", "architecture", c.architecture),
    ...row("Format", "format", c.format),
    ...row("Quantization", "quantization", c.quantization),
    ...row("Context length", "context-length", c.contextLength),
    ...row("Chat template", "chat-template", c.tokenizer?.chatTemplate ? "present" : "absent"),
    ...row("License", "license", c.license),
    ...row("Gated", "gated", c.gated),
  ];
}

function imageFields(c: ImageConfig): HTMLElement[] {
  const base = c.baseModel ? `${c.base} (${c.baseModel})` : c.base;
  return [
    ...row("Base", "base", base),
    ...row("Checkpoint type", "checkpoint-type", c.checkpointType),
    ...row("Trigger words", "trigger-words", list(c.triggerWords) ?? "none"),
    ...row("Recommended sampler", "sampler", list(c.samplers)),
    ...row("Steps", "steps", c.steps),
    ...row("CFG scale", "cfg", c.cfgScale),
    ...row("License", "license", c.license),
  ];
}

function previews(c: ImageConfig, showNsfw: boolean): HTMLElement {
  const images = c.previewImages ?? [];
  const shown = images.filter((img) => showNsfw || !img.nsfw);
  const hidden = images.length - shown.length;
  return h(
    "section",
    { class: "previews-section" },
    h("h3", {}, "Previews"),
    h(
      "div",
      { class: "previews" },
      ...shown.map((img) =>
        h("img", { src: img.url, alt: `preview of ${img.url.split("/").pop() ?? "image"}`, loading: "lazy" }),
      ),
    ),
    hidden > 0
      ? h("p", { "data-field": "nsfw-hidden" }, `${hidden} NSFW preview${hidden === 1 ? "" : "s"} hidden (see Settings).`)
      : null,
    images.length === 0 ? h("p", {}, "No previews.") : null,
  );
}

function compatibility(answers: Compatibility[]): HTMLElement {
  return h(
    "section",
    { class: "compatibility" },
    h("h3", {}, "Compatibility"),
    ...answers.map((a) => {
      const name = a.worker === "llm" ? "worker-llm" : "worker-sd";
      return h(
        "div",
        { class: `compat ${a.compatible ? "yes" : "no"}`, "data-worker": name },
        h("strong", {}, `${name}: ${a.compatible ? "can run it" : "cannot run it"}`),
        a.compatible ? h("p", {}, `Needs about ${formatBytes(a.memoryBytes)} of memory.`) : null,
        a.reasons.length > 0 ? h("ul", {}, ...a.reasons.map((r) => h("li", {}, r))) : null,
      );
    }),
  );
}

/** The detail view of one entry. */
export function detailView(entry: ModelEntry, answers: Compatibility[], showNsfw: boolean): HTMLElement[] {
  const common = [
    ...row("Id", "id", entry.id),
    ...row("Type", "type", entry.modelType),
    ...row("Author", "author", entry.author),
    ...row("Size", "size", formatBytes(entry.size ?? 0)),
  ];
  const specific =
    entry.modelType === "llm" ? llmFields(entry.config) : entry.modelType === "image" ? imageFields(entry.config) : [];
  return [
    h("h2", {}, entry.name),
    entry.sourceUrl ? h("p", {}, h("a", { href: entry.sourceUrl, rel: "noreferrer", target: "_blank" }, "Source page")) : null,
    h("dl", {}, ...common, ...specific),
    entry.modelType === "image" ? previews(entry.config, showNsfw) : null,
    compatibility(answers),
  ].filter((n): n is HTMLElement => n !== null);
}

/** One search result. */
export function resultItem(entry: ModelEntry, onOpen: () => void): HTMLLIElement {
  const button = h(
    "button",
    { type: "button", "data-id": entry.id },
    entry.name,
    h("small", {}, `${entry.modelType} · ${entry.id}`),
  );
  button.addEventListener("click", onOpen);
  return h("li", {}, button);
}
