// Try it: chat with a running worker-llm (its OpenAI-compatible API, through `catalog serve`), the
// answer streamed as it is generated, with tokens per second.

import { readSse } from "../api.js";
import { messageOf, type Context } from "../context.js";
import { h } from "../dom.js";

interface Message {
  role: "user" | "assistant";
  content: string;
}

/** Checks that a worker answers; shows what to do when it does not. Resolves true when it runs. */
export async function workerCheck(ctx: Context, kind: "llm" | "sd", box: HTMLElement): Promise<boolean> {
  const url = kind === "llm" ? ctx.settings.llmUrl : ctx.settings.sdUrl;
  const name = kind === "llm" ? "worker-llm" : "worker-sd";
  try {
    const resp = await ctx.api.worker(kind, url, "GET", "ready").catch(async (err: unknown) => {
      // 503 while the model loads: running, not ready.
      if (messageOf(err).includes("loading")) return undefined;
      throw err;
    });
    const ready = resp ? ((await resp.json()) as { model_id?: string; device?: string }) : undefined;
    box.className = "worker ok";
    box.replaceChildren(
      ready
        ? `${name} at ${url} is running ${ready.model_id ?? "a model"}${ready.device ? ` on ${ready.device}` : ""}.`
        : `${name} at ${url} is loading its model.`,
    );
    return true;
  } catch (err) {
    box.className = "worker down";
    box.replaceChildren(
      h("strong", {}, `${name} is not running at ${url}.`),
      h("p", {}, messageOf(err)),
      h("p", {}, "Start it with the command on a model's page, or change its URL in ", h("a", { href: "#/settings" }, "Settings"), "."),
    );
    return false;
  }
}

/** Renders the chat page into `view`. */
export async function chatPage(ctx: Context, view: HTMLElement): Promise<void> {
  const worker = h("div", { class: "worker", role: "status" }, "Checking worker-llm…");
  const log = h("ol", { class: "chat-log", "aria-label": "Conversation", "aria-live": "polite" });
  const input = h("textarea", { name: "message", rows: "3", "aria-label": "Message", placeholder: "Ask something (Enter sends, Shift+Enter for a new line)" });
  const maxTokens = h("input", { type: "number", name: "maxTokens", min: "1", max: "4096", value: "128", "aria-label": "Max tokens" });
  const temperature = h("input", { type: "number", name: "temperature", min: "0", max: "2", step: "0.1", value: "0.7", "aria-label": "Temperature" });
  const send = h("button", { type: "submit" }, "Send");
  const stop = h("button", { type: "button", class: "secondary", disabled: "" }, "Stop");
  // A plain system message by default: without one, small models' templates insert their own and drift.
  const system = h("input", { type: "text", name: "system", value: "You are a helpful assistant.", "aria-label": "System message" });
  const stats = h("p", { class: "stats", "data-field": "stats" });
  const form = h("form", { class: "chat-form" }, input, h("div", { class: "row" }, h("label", {}, "System ", system), h("label", {}, "Max tokens ", maxTokens), h("label", {}, "Temperature ", temperature), send, stop));
  const messages: Message[] = [];
  let abort: AbortController | undefined;
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener("click", () => abort?.abort());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || abort) return;
    ctx.clearError();
    messages.push({ role: "user", content: text });
    log.append(h("li", { class: "user" }, h("strong", {}, "You: "), text));
    input.value = "";
    const answer = h("span", { "data-field": "answer" });
    const item = h("li", { class: "assistant" }, h("strong", {}, "Model: "), answer);
    log.append(item);
    send.disabled = true;
    stop.disabled = false;
    abort = new AbortController();
    const started = performance.now();
    let first: number | undefined;
    let tokens = 0;
    let usage: number | undefined;
    try {
      const resp = await fetch(`/api/worker/llm/v1/chat/completions`, {
        method: "POST",
        signal: abort.signal,
        headers: { "Content-Type": "application/json", "X-Worker-Url": ctx.settings.llmUrl, ...authHeader(ctx) },
        body: JSON.stringify({
          messages: system.value.trim() ? [{ role: "system", content: system.value.trim() }, ...messages] : messages,
          stream: true,
          stream_options: { include_usage: true },
          max_tokens: Number(maxTokens.value) || 128,
          temperature: Number(temperature.value),
        }),
      });
      if (!resp.ok) throw new Error(await errorText(resp));
      for await (const ev of readSse(resp)) {
        if (ev.data === "[DONE]") break;
        const chunk = JSON.parse(ev.data) as {
          choices?: { delta?: { content?: string } }[];
          usage?: { completion_tokens?: number };
          error?: { message?: string };
        };
        if (chunk.error) throw new Error(chunk.error.message ?? "the worker failed");
        const piece = chunk.choices?.[0]?.delta?.content;
        if (piece) {
          first ??= performance.now();
          tokens += 1;
          answer.textContent += piece;
          stats.textContent = rate(tokens, first, started);
        }
        if (chunk.usage?.completion_tokens !== undefined) usage = chunk.usage.completion_tokens;
      }
      messages.push({ role: "assistant", content: answer.textContent ?? "" });
      stats.textContent = rate(usage ?? tokens, first, started);
      item.dataset.done = "true";
    } catch (err) {
      if (abort.signal.aborted) {
        stats.textContent = `Stopped. ${rate(tokens, first, started)}`;
        messages.push({ role: "assistant", content: answer.textContent ?? "" });
        item.dataset.done = "true";
      } else {
        item.remove();
        messages.pop();
        ctx.error("The chat failed", err);
        void workerCheck(ctx, "llm", worker);
      }
    }
    abort = undefined;
    send.disabled = false;
    stop.disabled = true;
    input.focus();
  });
  view.replaceChildren(h("h2", { tabindex: "-1" }, "Chat"), worker, log, form, stats);
  input.focus();
  await workerCheck(ctx, "llm", worker);
}

function rate(tokens: number, first: number | undefined, started: number): string {
  const now = performance.now();
  const ttft = first === undefined ? "" : ` · first token after ${((first - started) / 1000).toFixed(2)} s`;
  const secs = first === undefined ? 0 : (now - first) / 1000;
  const speed = secs > 0 && tokens > 1 ? ` · ${((tokens - 1) / secs).toFixed(1)} tok/s` : "";
  return `${tokens} token${tokens === 1 ? "" : "s"}${speed}${ttft}`;
}

/** The catalog token header, when the page has one. */
export function authHeader(ctx: Context): Record<string, string> {
  return ctx.api.token ? { Authorization: `Bearer ${ctx.api.token}` } : {};
}

/** The sentence of an error answer (ours `{error}` or OpenAI's `{error: {message}}`). */
export async function errorText(resp: Response): Promise<string> {
  const text = await resp.text();
  try {
    const body = JSON.parse(text) as { error?: string | { message?: string } };
    if (typeof body.error === "string") return body.error;
    if (body.error?.message) return body.error.message;
  } catch {
    // Not JSON.
  }
  return text || `HTTP ${resp.status}`;
}
