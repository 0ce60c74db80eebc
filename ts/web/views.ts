// What the pages show of one model: the fields that matter for its type, and which worker runs it.

import type { Compatibility, ImageConfig, LlmConfig, ModelEntry } from "../src/generated/contract.js";
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
    ...(c.tokenizer?.chatTemplate
      ? [h("dt", {}, "Template"), h("dd", {}, h("details", {}, h("summary", {}, "Show"), h("pre", { "data-field": "template" }, c.tokenizer.chatTemplate)))]
      : []),
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
    h("h2", { tabindex: "-1" }, entry.name),
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

/** Family, base or task: what kind of model within its type. */
export function kindOf(entry: ModelEntry): string {
  switch (entry.modelType) {
    case "llm":
      return entry.config.modelFamily ?? entry.config.architecture ?? "";
    case "image":
      return entry.config.baseModel ?? entry.config.base;
    default:
      return "";
  }
}

/** The quantization, for LLMs. */
export function quantOf(entry: ModelEntry): string {
  return entry.modelType === "llm" ? (entry.config.quantization ?? entry.config.format) : "";
}

/** The status in words. */
export function statusText(entry: ModelEntry): string {
  const s = entry.status;
  switch (s.state) {
    case "available":
      return "available";
    case "not_downloaded":
      return "not downloaded";
    case "downloading":
      return `partly downloaded (${formatBytes(s.downloadedBytes)}${s.totalBytes ? ` of ${formatBytes(s.totalBytes)}` : ""})`;
    case "failed":
      return `failed: ${s.error}`;
  }
}

/** The command that serves an entry with the worker that can run it. */
export function serveCommand(entry: ModelEntry, answers: Compatibility[], home: string): string | undefined {
  const ok = answers.find((a) => a.compatible);
  if (!ok) return undefined;
  const binary = ok.worker === "llm" ? "worker-llm" : "worker-sd";
  const port = ok.worker === "llm" ? 8080 : 8081;
  const quote = (s: string) => (/^[\w:@./+-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`);
  return `${binary} serve --model ${quote(entry.id)} --catalog-home ${quote(home)} --port ${port}`;
}
