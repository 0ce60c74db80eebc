// Try it: generate an image with a running worker-sd (its streaming API, through `catalog serve`):
// progress and previews while it works, then the PNG with its parameters.

import { readSse } from "../api.js";
import type { Context } from "../context.js";
import { h } from "../dom.js";
import { authHeader, errorText, workerCheck } from "./chat.js";

type WorkerEvent =
  | { type: "started" }
  | { type: "progress"; step: number; total: number }
  | { type: "output"; output: { kind: "preview"; step: number; steps: number; b64_png: string } | { kind: "image"; index: number; seed: number; b64_json: string; parameters: string } }
  | { type: "metrics" }
  | { type: "end" }
  | { type: "error"; message: string };

function numberField(name: string, label: string, value: string, attrs: Record<string, string> = {}): HTMLLabelElement {
  return h("label", {}, label, h("input", { type: "number", name, value, ...attrs }));
}

/** Renders the image page into `view`. */
export async function imagePage(ctx: Context, view: HTMLElement): Promise<void> {
  const worker = h("div", { class: "worker", role: "status" }, "Checking worker-sd…");
  const prompt = h("textarea", { name: "prompt", rows: "2", required: "", "aria-label": "Prompt" }, "a lighthouse at dusk");
  const negative = h("input", { name: "negative", type: "text", "aria-label": "Negative prompt", placeholder: "Negative prompt (optional)" });
  const form = h(
    "form",
    { class: "image-form" },
    h("label", { class: "wide" }, "Prompt", prompt),
    h("label", { class: "wide" }, "Negative prompt", negative),
    numberField("width", "Width", "512", { min: "8", step: "8" }),
    numberField("height", "Height", "512", { min: "8", step: "8" }),
    numberField("steps", "Steps", "20", { min: "1", max: "150" }),
    numberField("cfg", "CFG scale", "7", { min: "0", step: "0.5" }),
    numberField("seed", "Seed", "42", { min: "0" }),
    h("button", { type: "submit" }, "Generate"),
  );
  const bar = h("progress", { max: "1", value: "0", "aria-label": "Generation progress" });
  const progressText = h("span", { "data-field": "progress", "aria-live": "polite" });
  const preview = h("img", { class: "preview", alt: "Preview while generating" });
  preview.hidden = true;
  const result = h("div", { class: "result" });
  const stop = h("button", { type: "button", class: "secondary", disabled: "" }, "Stop");
  let abort: AbortController | undefined;
  stop.addEventListener("click", () => abort?.abort());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (abort) return;
    ctx.clearError();
    const data = new FormData(form);
    const body = {
      prompt: String(data.get("prompt") ?? ""),
      negative_prompt: String(data.get("negative") ?? "") || undefined,
      width: Number(data.get("width")),
      height: Number(data.get("height")),
      steps: Number(data.get("steps")),
      cfg_scale: Number(data.get("cfg")),
      seed: Number(data.get("seed")),
      preview_every: 1,
    };
    abort = new AbortController();
    stop.disabled = false;
    bar.value = 0;
    progressText.textContent = "Waiting for the worker…";
    result.replaceChildren();
    const started = performance.now();
    let previews = 0;
    try {
      const resp = await fetch("/api/worker/sd/v1/images/stream", {
        method: "POST",
        signal: abort.signal,
        headers: { "Content-Type": "application/json", "X-Worker-Url": ctx.settings.sdUrl, ...authHeader(ctx) },
        body: JSON.stringify(body),
      });
      if (!resp.ok) throw new Error(await errorText(resp));
      for await (const ev of readSse(resp)) {
        const e = JSON.parse(ev.data) as WorkerEvent;
        if (e.type === "progress") {
          bar.value = e.total > 0 ? e.step / e.total : 0;
          progressText.textContent = `Step ${e.step} of ${e.total}`;
        } else if (e.type === "output" && e.output.kind === "preview") {
          previews += 1;
          preview.dataset.count = String(previews);
          preview.src = `data:image/png;base64,${e.output.b64_png}`;
          preview.hidden = false;
        } else if (e.type === "output" && e.output.kind === "image") {
          const src = `data:image/png;base64,${e.output.b64_json}`;
          result.append(
            h(
              "figure",
              {},
              h("img", { src, alt: `Generated image for "${body.prompt}" (seed ${e.output.seed})`, "data-field": "image" }),
              h("figcaption", {}, h("pre", { "data-field": "parameters" }, e.output.parameters)),
              h("a", { href: src, download: `image-${e.output.seed}.png`, class: "button" }, "Download the PNG"),
            ),
          );
        } else if (e.type === "error") {
          throw new Error(e.message);
        } else if (e.type === "end") {
          bar.value = 1;
          progressText.textContent = `Done in ${((performance.now() - started) / 1000).toFixed(1)} s`;
          preview.hidden = true;
        }
      }
    } catch (err) {
      if (abort.signal.aborted) progressText.textContent = "Stopped.";
      else {
        progressText.textContent = "";
        ctx.error("The image failed", err);
        void workerCheck(ctx, "sd", worker);
      }
    }
    abort = undefined;
    stop.disabled = true;
  });
  view.replaceChildren(
    h("h2", { tabindex: "-1" }, "Image"),
    worker,
    form,
    h("div", { class: "progress-row" }, bar, progressText, stop),
    preview,
    result,
  );
  await workerCheck(ctx, "sd", worker);
}
