// The fetch-and-parse exports against a loopback fake API: the requests they make (paths, query,
// token, Range) and the entries they build from the recorded answers; network and HTTP errors named.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { initCatalog, type SourceOptions } from "open-model-catalog";
import { fixture, LLAMA, serveRecorded, startFakeApi, type FakeApi } from "./fake-api.js";
import { ggufFromDump } from "./gguf-writer.js";

const catalog = await initCatalog();
let api: FakeApi;
let hf: SourceOptions;
let civitai: SourceOptions;

const CONFIG = JSON.parse(fixture("hf-config-llama-3.2-3b-instruct.json")) as { max_position_embeddings: number };

before(async () => {
  api = await startFakeApi();
  hf = { endpoint: `${api.url}/hf/`, token: "hf_secret", limit: 5 };
  civitai = { endpoint: `${api.url}/civitai`, token: "civitai_secret" };
  serveRecorded(api);
});

after(() => api.close());

test("searchHf asks the given endpoint with the query, limit and token", async () => {
  const entries = await catalog.searchHf("llama 3", hf);
  assert.equal(entries[0]?.id, `hf:${LLAMA.id}`);
  const req = api.seen.findLast((s) => s.path === "/hf/api/models");
  assert.equal(req?.query.get("search"), "llama 3");
  assert.equal(req?.query.get("limit"), "5");
  assert.equal(req?.authorization, "Bearer hf_secret");
});

test("fetchHfModel fetches the model info and the files the catalog plans, at the commit", async () => {
  const entry = await catalog.fetchHfModel(LLAMA.id, hf);
  assert.equal(entry.id, `hf:${LLAMA.id}`);
  assert.equal(entry.modelType, "llm");
  if (entry.modelType !== "llm") return;
  assert.equal(entry.config.contextLength, CONFIG.max_position_embeddings, "read from the served config.json");
  assert.ok(entry.config.tokenizer?.chatTemplate?.includes("start_header_id"), "read from tokenizer_config.json");
  const files = api.seen.filter((s) => s.path.includes("/resolve/")).map((s) => s.path.split("/").pop());
  assert.deepEqual(files.sort(), ["config.json", "generation_config.json", "tokenizer_config.json"]);
  assert.ok(api.seen.every((s) => !s.path.includes("/resolve/") || s.path.includes(LLAMA.sha)));
  assert.ok(api.seen.filter((s) => s.path.startsWith("/hf/")).every((s) => s.authorization === "Bearer hf_secret"));
});

test("fetchHfModel reads a GGUF header with Range requests", async () => {
  const dump = JSON.parse(fixture("gguf-meta-qwen2.5-0.5b-instruct.json")) as Record<string, string>;
  const { bytes } = ggufFromDump(dump);
  api.route("/hf/api/models/test-org/qwen-gguf", {
    body: JSON.stringify({
      id: "test-org/qwen-gguf",
      sha: "0123456789abcdef0123456789abcdef01234567",
      siblings: [{ rfilename: "qwen2.5-0.5b-instruct-f16.gguf", size: bytes.length }],
    }),
  });
  api.route("/hf/test-org/qwen-gguf/resolve/0123456789abcdef0123456789abcdef01234567/qwen2.5-0.5b-instruct-f16.gguf", {
    body: bytes,
    type: "application/octet-stream",
  });
  const entry = await catalog.fetchHfModel("hf:test-org/qwen-gguf", hf);
  assert.equal(entry.modelType, "llm");
  if (entry.modelType !== "llm") return;
  assert.equal(entry.config.format, "gguf");
  assert.equal(entry.config.contextLength, Number(dump["qwen2.context_length"]));
  assert.equal(entry.config.modelFamily, "qwen2");
  const range = api.seen.findLast((s) => s.path.endsWith(".gguf"))?.range;
  assert.match(range ?? "", /^bytes=0-\d+$/);

  const direct = await catalog.fetchGgufMetadata(
    `${api.url}/hf/test-org/qwen-gguf/resolve/0123456789abcdef0123456789abcdef01234567/qwen2.5-0.5b-instruct-f16.gguf`,
  );
  assert.equal(direct.metadata["general.architecture"], "qwen2");
});

test("a GGUF header longer than the first read is fetched with a larger Range, as the parser asks", async () => {
  const dump = JSON.parse(fixture("gguf-meta-qwen2.5-0.5b-instruct.json")) as Record<string, string>;
  // A chat template of 1.5 MiB pushes the header past the first read (1 MiB).
  const template = "{% for m in messages %}{{ m.content }}{% endfor %}".repeat(32_000);
  const { bytes } = ggufFromDump(dump, { "tokenizer.chat_template": template });
  assert.ok(bytes.length > 1 << 20);
  api.route("/files/big.gguf", (req) => {
    const match = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "");
    if (!match) return { body: bytes, type: "application/octet-stream" };
    const start = Number(match[1]);
    const end = Math.min(Number(match[2]), bytes.length - 1);
    return { status: 206, body: bytes.slice(start, end + 1), type: "application/octet-stream" };
  });
  const meta = await catalog.fetchGgufMetadata(`${api.url}/files/big.gguf`, "hf_secret");
  assert.equal(meta.metadata["tokenizer.chat_template"], template);
  assert.equal(meta.config.tokenizer?.chatTemplate, template);
  const ranges = api.seen.filter((s) => s.path === "/files/big.gguf").map((s) => s.range);
  assert.equal(ranges[0], `bytes=0-${(1 << 20) - 1}`);
  assert.ok(ranges.length >= 2, ranges.join(", "));
  assert.ok(api.seen.filter((s) => s.path === "/files/big.gguf").every((s) => s.authorization === "Bearer hf_secret"));
});

test("CivitAI search, model and version go to the given endpoint with the token", async () => {
  const found = await catalog.searchCivitai("realistic", { ...civitai, limit: 3 });
  assert.ok(found.some((e) => e.id.startsWith("civitai:4201")));
  const search = api.seen.findLast((s) => s.path === "/civitai/api/v1/models");
  assert.equal(search?.query.get("query"), "realistic");
  assert.equal(search?.query.get("limit"), "3");
  assert.equal(search?.authorization, "Bearer civitai_secret");

  const versions = await catalog.fetchCivitaiModel("civitai:4201", civitai);
  assert.ok(versions.length >= 1 && versions.every((v) => v.id.startsWith("civitai:4201@")));
  const one = await catalog.fetchCivitaiModel(versions[0]?.id ?? "", civitai);
  assert.deepEqual(
    one.map((e) => e.id),
    [versions[0]?.id],
  );
  const version = await catalog.fetchCivitaiModelVersion(1255556, civitai);
  assert.match(version.id, /^civitai:\d+@1255556$/);
});

test("HTTP errors, unreachable endpoints and bad answers reject naming the problem; the next call works", async () => {
  await assert.rejects(catalog.fetchHfModel("nobody/nothing", hf), /no model hf:nobody\/nothing on the Hub/);
  api.route("/civitai/api/v1/models/9", { status: 500, body: "internal error" });
  await assert.rejects(catalog.fetchCivitaiModel("9", civitai), /answered HTTP 500: internal error/);
  api.route("/civitai/api/v1/models/10", { body: "<html>rate limited</html>" });
  await assert.rejects(catalog.fetchCivitaiModel("10", civitai), /malformed CivitAI model/);
  await assert.rejects(catalog.searchHf("x", { endpoint: "ftp://example.org" }), /invalid endpoint "ftp:\/\/example.org"/);
  await assert.rejects(catalog.searchHf("x", { endpoint: "http://127.0.0.1:9" }), /request to http:\/\/127\.0\.0\.1:9\/api\/models.* failed/);
  await assert.rejects(catalog.fetchHfModel("civitai:1", hf), /civitai:1 is not a hf: id/);
  await assert.rejects(catalog.fetchCivitaiModelVersion(1.5, civitai), /invalid CivitAI version id: 1.5 is not a whole number/);
  await assert.rejects(catalog.fetchCivitaiModelVersion(-1, civitai), /invalid CivitAI version id/);
  await assert.rejects(catalog.searchHf("x", { url: "http://x" } as unknown as SourceOptions), /invalid SourceOptions/);
  assert.equal((await catalog.searchHf("llama", hf)).length, 2);
});
