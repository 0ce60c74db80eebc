// A loopback stand-in for the HuggingFace Hub and CivitAI, as the catalog's own tests use: one GGUF repo
// (the committed tiny-llama-chat.gguf padded to a few MiB) with its search answer, model info and file
// (Range requests honoured, sent slowly enough that a download shows progress), and CivitAI's recorded
// search and model answers. `catalog serve` talks to it through HF_ENDPOINT and CIVITAI_ENDPOINT.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** The repo the fake Hub serves. */
export const REPO = "demo/tiny-llama-chat-GGUF";
export const FILE = "tiny-llama-chat.Q4_K_M.gguf";
const REV = "0123456789abcdef0123456789abcdef01234567";

/** A running fake hub. */
export interface FakeHub {
  url: string;
  /** Range headers of the weight downloads (`null` for a whole-file GET). */
  downloads: (string | null)[];
  close(): Promise<void>;
}

function fixture(name: string): string {
  return readFileSync(new URL(`../../test/fixtures/${name}`, import.meta.url), "utf8");
}

/** Starts the fake hub on a free loopback port; `bytes` is the size of the weights file. */
export async function startFakeHub(bytes = 6 << 20, chunkDelayMs = 15): Promise<FakeHub> {
  const gguf = readFileSync(new URL("../../../tests/fixtures/models/tiny-llama-chat.gguf", import.meta.url));
  const weights = Buffer.alloc(Math.max(bytes, gguf.length));
  gguf.copy(weights);
  // Declare one tensor (bytes 8..16 of a GGUF header), as a model file does: the committed header-only
  // fixture declares none, and the catalog rightly promises no worker a file without weights.
  weights.writeBigUInt64LE(1n, 8);
  const sha = createHash("sha256").update(weights).digest("hex");
  const info = {
    id: REPO,
    author: "demo",
    sha: REV,
    gated: false,
    downloads: 42,
    likes: 7,
    pipeline_tag: "text-generation",
    library_name: "gguf",
    tags: ["gguf", "llama", "license:mit"],
    siblings: [
      { rfilename: "README.md", size: 10 },
      { rfilename: FILE, size: weights.length, lfs: { sha256: sha, size: weights.length } },
    ],
  };
  const downloads: (string | null)[] = [];
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const json = (body: string, status = 200) => res.writeHead(status, { "Content-Type": "application/json" }).end(body);
    if (url.pathname === "/api/models") return json(JSON.stringify([info]));
    if (url.pathname === `/api/models/${REPO}`) return json(JSON.stringify(info));
    if (url.pathname === "/api/v1/models") return json(fixture("civitai-models-list.json"));
    if (url.pathname === "/api/v1/models/4201") return json(fixture("civitai-model-4201.json"));
    if (url.pathname !== `/${REPO}/resolve/${REV}/${FILE}`) return json('{"error":"Repository not found"}', 404);
    const range = req.headers.range ?? null;
    const m = range ? /^bytes=(\d+)-(\d*)$/.exec(range) : null;
    const start = m ? Number(m[1]) : 0;
    const end = m && m[2] ? Math.min(Number(m[2]) + 1, weights.length) : weights.length;
    // Header reads (closed ranges) are not downloads.
    if (!m || !m[2]) downloads.push(range);
    res.writeHead(m ? 206 : 200, {
      "Content-Type": "application/octet-stream",
      "Content-Length": String(end - start),
      ...(m ? { "Content-Range": `bytes ${start}-${end - 1}/${weights.length}` } : {}),
    });
    let pos = start;
    const step = 128 << 10;
    const send = () => {
      if (res.destroyed) return;
      if (pos >= end) {
        res.end();
        return;
      }
      const next = Math.min(pos + step, end);
      res.write(weights.subarray(pos, next));
      pos = next;
      setTimeout(send, chunkDelayMs);
    };
    send();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    downloads,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}
