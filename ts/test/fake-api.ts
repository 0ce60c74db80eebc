// A loopback stand-in for the HuggingFace and CivitAI APIs that answers with recorded responses
// (test/fixtures, sources in SOURCES.md) and records what it was asked, so tests check both sides.

import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** One recorded request. */
export interface Seen {
  method: string;
  path: string;
  query: URLSearchParams;
  authorization: string | undefined;
  range: string | undefined;
}

/** What a route answers. */
export interface Reply {
  status?: number;
  body: string | Uint8Array;
  type?: string;
}

/** A running fake API. */
export interface FakeApi {
  url: string;
  seen: Seen[];
  route(path: string, reply: Reply | ((req: IncomingMessage, url: URL) => Reply)): void;
  close(): Promise<void>;
}

/** Reads a fixture file from test/fixtures (works from the compiled build/test too). */
export function fixture(name: string): string {
  return readFileSync(new URL(`../../test/fixtures/${name}`, import.meta.url), "utf8");
}

/** Starts the server on a free loopback port; unknown paths answer 404 with a JSON error like the Hub's. */
export async function startFakeApi(): Promise<FakeApi> {
  const routes = new Map<string, Reply | ((req: IncomingMessage, url: URL) => Reply)>();
  const seen: Seen[] = [];
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    // Browsers send a preflight for the Authorization header; answer it like a CORS-enabled API.
    res.setHeader("Access-Control-Allow-Origin", "*");
    res.setHeader("Access-Control-Allow-Headers", "Authorization, Range, Accept");
    res.setHeader("Access-Control-Expose-Headers", "Content-Range");
    if (req.method === "OPTIONS") {
      res.writeHead(204).end();
      return;
    }
    seen.push({
      method: req.method ?? "GET",
      path: url.pathname,
      query: url.searchParams,
      authorization: req.headers.authorization,
      range: req.headers.range,
    });
    const route = routes.get(url.pathname);
    const reply: Reply =
      route === undefined
        ? { status: 404, body: JSON.stringify({ error: "Repository not found" }) }
        : typeof route === "function"
          ? route(req, url)
          : route;
    res.writeHead(reply.status ?? 200, { "Content-Type": reply.type ?? "application/json" });
    res.end(reply.body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    route: (path, reply) => void routes.set(path, reply),
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}

/** The recorded model info of meta-llama/Llama-3.2-3B, whose files the fake Hub serves. */
export const LLAMA = JSON.parse(fixture("hf-model-info-llama-3.2-3b.json")) as { id: string; sha: string };

/**
 * Routes the recorded answers under `/hf` (Hub search, Llama-3.2-3B's model info and the metadata
 * files the catalog asks for, at its commit) and `/civitai` (search, model 4201, version 1255556).
 */
export function serveRecorded(api: FakeApi): void {
  api.route("/hf/api/models", { body: fixture("hf-search-assembled.json") });
  api.route(`/hf/api/models/${LLAMA.id}`, { body: fixture("hf-model-info-llama-3.2-3b.json") });
  const resolve = `/hf/${LLAMA.id}/resolve/${LLAMA.sha}`;
  api.route(`${resolve}/config.json`, { body: fixture("hf-config-llama-3.2-3b-instruct.json") });
  api.route(`${resolve}/tokenizer_config.json`, { body: fixture("hf-tokenizer_config-chat-template-llama3.json") });
  api.route(`${resolve}/generation_config.json`, { body: fixture("hf-generation_config-phi-2.json") });
  api.route("/civitai/api/v1/models", { body: fixture("civitai-models-list.json") });
  api.route("/civitai/api/v1/models/4201", { body: fixture("civitai-model-4201.json") });
  api.route("/civitai/api/v1/model-versions/1255556", { body: fixture("civitai-model-version-1255556.json") });
}
