// The parse exports through the built package, on recorded API responses and a GGUF header written
// from a recorded metadata dump. Expected values are read from the fixtures, never from the code.

import assert from "node:assert/strict";
import { test } from "node:test";
import { initCatalog, type ImageConfig, type LlmConfig, type ModelEntry } from "open-model-catalog";
import { fixture } from "./fake-api.js";
import { ggufFromDump } from "./gguf-writer.js";

const catalog = await initCatalog();

interface RawVersion {
  id: number;
  baseModel: string;
  trainedWords?: string[];
}

function llm(entry: ModelEntry): LlmConfig {
  assert.equal(entry.modelType, "llm", entry.id);
  if (entry.modelType !== "llm") throw new Error("unreachable");
  return entry.config;
}

function image(entry: ModelEntry): ImageConfig {
  assert.equal(entry.modelType, "image", entry.id);
  if (entry.modelType !== "image") throw new Error("unreachable");
  return entry.config;
}

test("parseHfModelInfo reads a gated Llama repo", () => {
  const raw = JSON.parse(fixture("hf-model-info-llama-3.2-3b.json")) as {
    id: string;
    sha: string;
    gated: string;
    cardData: { license: string };
  };
  const entry = catalog.parseHfModelInfo(fixture("hf-model-info-llama-3.2-3b.json"));
  assert.equal(entry.id, `hf:${raw.id}`);
  assert.equal(entry.source, "huggingface");
  assert.equal(entry.revision, raw.sha);
  const c = llm(entry);
  assert.equal(c.modelFamily, "llama");
  assert.equal(c.gated, raw.gated);
  assert.equal(c.license, raw.cardData.license);
  assert.ok(
    entry.files?.some((f) => f.path.endsWith(".safetensors") && f.role === "weights"),
    "lists the safetensors weights",
  );
  assert.ok(!entry.files?.some((f) => f.path.endsWith(".pth")), "leaves out the pickle copy");
  assert.ok(Date.parse(entry.addedAt) > Date.parse("2026-01-01"), "stamped with the host clock");
});

test("parseHfSearch gives one entry per result", () => {
  const raw = JSON.parse(fixture("hf-search-assembled.json")) as Array<{ id: string }>;
  const entries = catalog.parseHfSearch(fixture("hf-search-assembled.json"));
  assert.deepEqual(
    entries.map((e) => e.id),
    raw.map((r) => `hf:${r.id}`),
  );
});

test("parseCivitaiModel gives every version of a checkpoint as an image entry", () => {
  const raw = JSON.parse(fixture("civitai-model-4201.json")) as { id: number; name: string; modelVersions: RawVersion[] };
  const entries = catalog.parseCivitaiModel(fixture("civitai-model-4201.json"));
  assert.deepEqual(
    entries.map((e) => e.id),
    raw.modelVersions.map((v) => `civitai:${raw.id}@${v.id}`),
  );
  entries.forEach((entry, i) => {
    const c = image(entry);
    assert.equal(c.baseModel, raw.modelVersions[i]?.baseModel);
    assert.equal(c.base, "sd1");
    assert.equal(c.checkpointType, "checkpoint");
    assert.equal(entry.source, "civitai");
  });
});

test("parseCivitaiModelVersion reads a Flux LoRA with its trigger words", () => {
  const raw = JSON.parse(fixture("civitai-model-version-1255556.json")) as RawVersion & { modelId: number };
  const entry = catalog.parseCivitaiModelVersion(fixture("civitai-model-version-1255556.json"));
  assert.equal(entry.id, `civitai:${raw.modelId}@${raw.id}`);
  const c = image(entry);
  assert.equal(c.base, "flux");
  assert.equal(c.checkpointType, "lora");
  assert.deepEqual(c.triggerWords ?? [], raw.trainedWords ?? []);
  const [, sd] = catalog.checkCompatibility(entry);
  assert.equal(sd?.compatible, false);
  assert.match(sd?.reasons.join(" ") ?? "", /lora is not a whole model/);
});

test("parseCivitaiModels lists the models of a search page", () => {
  const raw = JSON.parse(fixture("civitai-models-list.json")) as { items: Array<{ id: number }> };
  const entries = catalog.parseCivitaiModels(fixture("civitai-models-list.json"));
  assert.ok(entries.length > 0 && entries.length <= raw.items.length);
  const ids = new Set(raw.items.map((m) => m.id));
  for (const e of entries) {
    const parts = catalog.parseCatalogId(e.id);
    assert.ok(parts.scheme === "civitai" && ids.has(parts.model), e.id);
  }
});

test("readGgufMetadata reads a header written from a recorded Qwen2.5 dump", () => {
  const dump = JSON.parse(fixture("gguf-meta-qwen2.5-0.5b-instruct.json")) as Record<string, string>;
  const { bytes, written } = ggufFromDump(dump);
  const meta = catalog.readGgufMetadata(bytes);
  assert.equal(meta.version, 3);
  assert.equal(meta.headerBytes, bytes.length);
  assert.deepEqual(Object.keys(meta.metadata).sort(), [...written].sort());
  assert.equal(meta.metadata["qwen2.block_count"], Number(dump["qwen2.block_count"]));
  assert.equal(meta.config.modelFamily, "qwen2");
  assert.equal(meta.config.contextLength, Number(dump["qwen2.context_length"]));
  assert.equal(meta.config.numLayers, Number(dump["qwen2.block_count"]));
  assert.equal(meta.config.numKvHeads, Number(dump["qwen2.attention.head_count_kv"]));
  assert.equal(meta.config.parameterCount, Number(dump["general.parameter_count"]));
  // llama.cpp's llama_ftype: 1 is MOSTLY_F16.
  assert.equal(dump["general.file_type"], "1");
  assert.equal(meta.config.quantization, "F16");
});

test("bad input is rejected with the problem named, and the next call works", () => {
  assert.throws(() => catalog.parseHfModelInfo("{ not json"), /malformed HuggingFace model info/);
  assert.throws(() => catalog.parseHfModelInfo('{"siblings": 3}'), /malformed HuggingFace model info/);
  assert.throws(() => catalog.parseCivitaiModel("[]"), /malformed CivitAI model/);
  assert.throws(() => catalog.parseCivitaiModels('{"items": "none"}'), /malformed CivitAI models list/);
  assert.throws(() => catalog.readGgufMetadata(new TextEncoder().encode("PK\u0003\u0004 zip")), /not a GGUF file/);
  const { bytes } = ggufFromDump(JSON.parse(fixture("gguf-meta-qwen2.5-0.5b-instruct.json")) as Record<string, string>);
  assert.throws(() => catalog.readGgufMetadata(bytes.slice(0, 40)), /truncated: at least \d+ bytes are needed, 40 were given/);
  assert.equal(catalog.readGgufMetadata(bytes).version, 3);
  assert.equal(catalog.parseCivitaiModel(fixture("civitai-model-1231067.json")).length > 0, true);
});
