// The typed client of `catalog serve` (its routes are in catalog/src/serve/openapi.json). Entries and
// compatibility answers are the contract's generated types; every call sends the catalog token when
// one was given, and a failure throws an Error whose message is the server's sentence.

import type { Compatibility, ModelEntry } from "../src/generated/contract.js";

/** One event of a pull's stream. */
export type PullEvent =
  | { event: "progress"; downloadedBytes: number; totalBytes?: number | null; bytesPerSecond: number; phase: "downloading" | "verifying" }
  | { event: "done"; entry: ModelEntry }
  | { event: "error"; message: string }
  | { event: "cancelled"; downloadedBytes: number };

/** What a removal did. */
export interface Removed {
  entry: ModelEntry;
  freedBytes: number;
}

/** One Server-Sent Event. */
export interface SseEvent {
  event: string;
  data: string;
}

/** Reads Server-Sent Events from a fetch response body as they arrive. */
export async function* readSse(resp: Response): AsyncGenerator<SseEvent> {
  if (!resp.body) return;
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value.replace(/\r\n/g, "\n");
    let end: number;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length > 0) yield { event, data: data.join("\n") };
    }
  }
}

/** The API of one `catalog serve`. */
export class CatalogApi {
  constructor(
    private readonly base: string,
    readonly token: string,
  ) {}

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return this.token ? { Authorization: `Bearer ${this.token}`, ...extra } : extra;
  }

  /** A raw request; throws the server's error sentence on a non-2xx answer. */
  async request(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> {
    let resp: Response;
    try {
      resp = await fetch(`${this.base}${path}`, {
        method,
        headers: this.headers(body === undefined ? headers : { "Content-Type": "application/json", ...headers }),
        body: body === undefined ? null : typeof body === "string" ? body : JSON.stringify(body),
      });
    } catch {
      throw new Error("catalog serve is not answering; is it still running?");
    }
    if (!resp.ok) {
      const text = await resp.text();
      let message = text;
      try {
        message = (JSON.parse(text) as { error?: string }).error ?? text;
      } catch {
        // Not JSON: keep the text.
      }
      throw new Error(message || `HTTP ${resp.status}`);
    }
    return resp;
  }

  private async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    return (await (await this.request(method, path, body)).json()) as T;
  }

  entries(type?: string): Promise<ModelEntry[]> {
    return this.json("GET", `/api/entries${type ? `?type=${encodeURIComponent(type)}` : ""}`);
  }
  entry(id: string): Promise<ModelEntry> {
    return this.json("GET", `/api/entry?id=${encodeURIComponent(id)}`);
  }
  add(source: string): Promise<ModelEntry> {
    return this.json("POST", "/api/entries", { source });
  }
  remove(id: string, keepFiles: boolean): Promise<Removed> {
    return this.json("DELETE", `/api/entry?id=${encodeURIComponent(id)}&keepFiles=${keepFiles}`);
  }
  verify(id: string): Promise<ModelEntry> {
    return this.json("POST", `/api/verify?id=${encodeURIComponent(id)}`);
  }
  compat(id: string): Promise<Compatibility[]> {
    return this.json("GET", `/api/compat?id=${encodeURIComponent(id)}`);
  }
  compatOf(entry: ModelEntry): Promise<Compatibility[]> {
    return this.json("POST", "/api/compat", entry);
  }
  search(source: "hf" | "civitai", text: string): Promise<ModelEntry[]> {
    return this.json("GET", `/api/search/${source}?q=${encodeURIComponent(text)}`);
  }
  remote(id: string): Promise<ModelEntry> {
    return this.json("GET", `/api/remote?id=${encodeURIComponent(id)}`);
  }
  civitaiVersions(model: number): Promise<ModelEntry[]> {
    return this.json("GET", `/api/civitai/versions?model=${model}`);
  }
  cancelPull(id: string): Promise<unknown> {
    return this.json("DELETE", `/api/pull?id=${encodeURIComponent(id)}`);
  }
  runningPulls(): Promise<{ id: string; last: PullEvent }[]> {
    return this.json("GET", "/api/pulls");
  }

  /** Starts (or joins) the pull of a stored entry and yields its events up to the last one. */
  async *pull(id: string): AsyncGenerator<PullEvent> {
    const resp = await this.request("POST", `/api/pull?id=${encodeURIComponent(id)}`);
    for await (const ev of readSse(resp)) {
      const event = JSON.parse(ev.data) as PullEvent;
      yield event;
      if (event.event !== "progress") return;
    }
  }

  /** A request to a running worker through the server (`kind` is llm or sd). */
  worker(kind: "llm" | "sd", workerUrl: string, method: string, path: string, body?: unknown): Promise<Response> {
    return this.request(method, `/api/worker/${kind}/${path}`, body, { "X-Worker-Url": workerUrl });
  }
}
