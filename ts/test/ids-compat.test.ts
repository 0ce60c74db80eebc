// The contract-only exports (catalog ids, worker compatibility) through the built package in Node.

import assert from "node:assert/strict";
import { test } from "node:test";
import { initCatalog, type ModelEntry } from "open-model-catalog";

const catalog = await initCatalog();

/** A GGUF Llama entry as the catalog stores it; the contract's rules decide what runs it. */
function ggufLlama(quantization: string): ModelEntry {
  return {
    id: `hf:bartowski/Llama-3.2-1B-Instruct-GGUF:${quantization}`,
    name: "Llama-3.2-1B-Instruct-GGUF",
    source: "huggingface",
    size: 807_690_656,
    files: [{ path: `Llama-3.2-1B-Instruct-${quantization}.gguf`, size: 807_690_656, role: "weights" }],
    status: { state: "not_downloaded" },
    addedAt: "2026-01-01T00:00:00Z",
    updatedAt: "2026-01-01T00:00:00Z",
    modelType: "llm",
    config: { modelFamily: "llama", architecture: "llama", format: "gguf", quantization },
  };
}

test("parseCatalogId splits every documented form", () => {
  assert.deepEqual(catalog.parseCatalogId("hf:meta-llama/Llama-3.2-3B@main:Q4_K_M"), {
    scheme: "hf",
    repo: "meta-llama/Llama-3.2-3B",
    revision: "main",
    selector: "Q4_K_M",
    selectorKind: "quant",
  });
  assert.deepEqual(catalog.parseCatalogId("hf:org/x:sub/model.gguf"), {
    scheme: "hf",
    repo: "org/x",
    selector: "sub/model.gguf",
    selectorKind: "file",
  });
  assert.deepEqual(catalog.parseCatalogId("civitai:4201@130072"), { scheme: "civitai", model: 4201, version: 130072 });
  assert.deepEqual(catalog.parseCatalogId("file:./models/x y.gguf"), { scheme: "file", path: "./models/x y.gguf" });
});

test("formatCatalogId gives back the string that was parsed", () => {
  for (const id of ["hf:a/b", "hf:org/name@refs/pr/1:Q8_0", "civitai:1231067", "civitai:1@2", "file:/tmp/m.gguf"]) {
    assert.equal(catalog.formatCatalogId(catalog.parseCatalogId(id)), id);
  }
  assert.equal(catalog.normalizeCatalogId("  civitai:4201@130072 "), "civitai:4201@130072");
});

test("malformed ids throw an error naming the bad part, and the next call works", () => {
  const cases: Array<[string, RegExp]> = [
    ["ollama:llama3", /unknown catalog id scheme/],
    ["hf:noslash", /invalid HuggingFace repo/],
    ["hf:org/name:../../etc/passwd", /invalid file or quantization/],
    ["civitai:12a", /invalid CivitAI model id/],
    ["file:", /empty path/],
  ];
  for (const [id, message] of cases) {
    assert.throws(() => catalog.parseCatalogId(id), message, id);
    assert.equal(catalog.parseCatalogId("civitai:7").scheme, "civitai");
  }
  assert.throws(() => catalog.formatCatalogId({ scheme: "hf", repo: "no-slash" }), /invalid HuggingFace repo/);
  assert.throws(
    () => catalog.formatCatalogId({ scheme: "civitai", model: -1 } as never),
    /invalid CatalogIdParts/,
  );
  assert.equal(catalog.formatCatalogId({ scheme: "civitai", model: 5 }), "civitai:5");
});

test("checkCompatibility answers for both workers with reasons", () => {
  const answers = catalog.checkCompatibility(ggufLlama("Q4_K_M"));
  assert.deepEqual(
    answers.map((a) => [a.worker, a.compatible]),
    [
      ["llm", true],
      ["sd", false],
    ],
  );
  const sd = answers[1];
  assert.ok(sd);
  assert.match(sd.reasons.join(" "), /worker-sd runs image models, not llm models/);
  assert.ok((answers[0]?.memoryBytes ?? 0) >= 807_690_656, "memory estimate covers the weights");

  const [llm] = catalog.checkCompatibility(ggufLlama("IQ2_XXS"));
  assert.equal(llm?.compatible, false);
  assert.match(llm?.reasons.join(" ") ?? "", /quantization IQ2_XXS is not supported by worker-llm/);
});

test("checkWorker uses the capabilities it is given", () => {
  const caps = catalog.workerCapabilities("llm");
  assert.ok(caps.llmArchitectures?.some((a) => a.family === "llama" && a.format === "gguf"));
  const cpuOnly = { ...caps, devices: ["cpu" as const] };
  const answer = catalog.checkWorker(ggufLlama("Q8_0"), cpuOnly, "cuda");
  assert.equal(answer.compatible, false);
  assert.match(answer.reasons.join(" "), /worker-llm was not built for cuda/);
  assert.equal(catalog.checkWorker(ggufLlama("Q8_0"), cpuOnly, "cpu").compatible, true);
});

test("a wrong shape is rejected with its type named, and the module keeps working", () => {
  const broken = { ...ggufLlama("Q4_K_M"), modelType: "spaceship" } as unknown as ModelEntry;
  assert.throws(() => catalog.checkCompatibility(broken), /invalid ModelEntry/);
  assert.throws(() => catalog.checkCompatibility(null as unknown as ModelEntry), /invalid ModelEntry/);
  assert.throws(() => catalog.workerCapabilities("gpu" as never), /invalid WorkerKind/);
  assert.equal(catalog.checkCompatibility(ggufLlama("Q4_K_M")).length, 2);
});
