// The web UI in Debian's chromium (playwright-core) against a loopback fake API serving recorded
// responses: search both sources, open an LLM and an image model, check the fields shown, survive
// errors. A screenshot of each view goes to ts/test-artifacts/ for people to look at.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type Page } from "playwright-core";
import { fixture, LLAMA, serveRecorded, startFakeApi, type FakeApi } from "./fake-api.js";
import { serveStatic } from "./static-server.js";

const ARTIFACTS = fileURLToPath(new URL("../../test-artifacts/", import.meta.url));
const SITE = fileURLToPath(new URL("../site/", import.meta.url));

let api: FakeApi;
let site: { url: string; close: () => Promise<void> };
let browser: Browser;
let page: Page;
const pageErrors: string[] = [];

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  api = await startFakeApi();
  serveRecorded(api);
  site = await serveStatic(SITE);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  page.on("pageerror", (err) => pageErrors.push(err.message));
  // No network in tests: anything not on loopback (preview images on a CDN) is refused.
  await page.route("**/*", (route) =>
    new URL(route.request().url()).hostname === "127.0.0.1" ? route.continue() : route.abort(),
  );
  const endpoints = new URLSearchParams({ hf: `${api.url}/hf`, civitai: `${api.url}/civitai` });
  await page.goto(`${site.url}/?${endpoints}`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 15_000 });
});

after(async () => {
  await browser?.close();
  await site?.close();
  await api?.close();
});

async function field(name: string): Promise<string> {
  return (await page.locator(`#detail [data-field="${name}"]`).textContent()) ?? "";
}

async function search(source: "hf" | "civitai", query: string): Promise<void> {
  await page.selectOption("#search-form select[name=source]", source);
  await page.fill("#search-form input[name=query]", query);
  await page.click("#search-form button[type=submit]");
  await page.waitForFunction(() => !document.querySelector("#status")?.textContent?.startsWith("Searching"));
}

test("searching HuggingFace lists the results", async () => {
  await search("hf", "llama");
  const items = page.locator("#results li button");
  assert.ok((await items.count()) > 0);
  assert.equal(await page.locator("#error").isHidden(), true);
  const ids = await items.evaluateAll((els) => els.map((e) => e.getAttribute("data-id")));
  assert.ok(ids.includes("hf:meta-llama/Llama-3.2-3B"), ids.join(", "));
  const request = api.seen.find((s) => s.path === "/hf/api/models");
  assert.equal(request?.query.get("search"), "llama");
  await page.screenshot({ path: `${ARTIFACTS}search-hf.png`, fullPage: true });
});

test("opening an LLM shows its fields and the compatibility of both workers", async () => {
  await page.click('#results button[data-id="hf:meta-llama/Llama-3.2-3B"]');
  await page.waitForSelector("#detail:not([hidden]) h2");
  assert.equal(await page.locator("#detail h2").textContent(), LLAMA.id.split("/")[1]);
  assert.equal(await field("type"), "llm");
  assert.equal(await field("family"), "llama");
  assert.equal(await field("format"), "safetensors");
  assert.equal(await field("quantization"), "BF16");
  assert.equal(await field("gated"), "manual");
  assert.equal(await field("license"), "llama3.2");
  assert.match(await field("chat-template"), /present|absent/);
  assert.match(await field("context-length"), /^\d+$|unknown/);
  const llm = page.locator('#detail [data-worker="worker-llm"]');
  const sd = page.locator('#detail [data-worker="worker-sd"]');
  assert.match((await llm.textContent()) ?? "", /worker-llm: can run it/);
  assert.match((await sd.textContent()) ?? "", /cannot run it.*runs image models, not llm models/s);
  await page.screenshot({ path: `${ARTIFACTS}llm-detail.png`, fullPage: true });
});

test("opening a CivitAI checkpoint shows the image fields, with NSFW previews hidden", async () => {
  await search("civitai", "realistic");
  const request = api.seen.find((s) => s.path === "/civitai/api/v1/models");
  assert.equal(request?.query.get("query"), "realistic");
  await page.screenshot({ path: `${ARTIFACTS}search-civitai.png`, fullPage: true });
  await page.locator('#results button[data-id^="civitai:4201"]').first().click();
  await page.waitForFunction(() => document.querySelector("#detail h2")?.textContent?.includes("Realistic Vision"));
  assert.equal(await field("type"), "image");
  assert.match(await field("base"), /^sd1 \(SD 1\.5/);
  assert.equal(await field("checkpoint-type"), "checkpoint");
  // The recorded response recommends no steps, CFG or sampler: the page says so rather than guessing.
  assert.equal(await field("steps"), "unknown");
  assert.equal(await field("cfg"), "unknown");
  assert.equal(await field("sampler"), "unknown");
  assert.equal(await field("trigger-words"), "none");
  const hidden = await field("nsfw-hidden");
  assert.match(hidden, /^\d+ NSFW previews? hidden/);
  assert.match(
    (await page.locator('#detail [data-worker="worker-sd"]').textContent()) ?? "",
    /worker-sd: can run it/,
  );
  await page.screenshot({ path: `${ARTIFACTS}image-detail.png`, fullPage: true });

  // Asking for NSFW previews shows them.
  const before = await page.locator("#detail .previews img").count();
  await page.click("#settings summary");
  await page.check("#settings-form input[name=showNsfw]");
  await page.click("#settings-form button[type=submit]");
  await page.waitForFunction(() => document.querySelector('#detail [data-field="nsfw-hidden"]') === null);
  assert.ok((await page.locator("#detail .previews img").count()) > before);
});

test("errors from the network and from parsing are shown in words, and the page keeps working", async () => {
  api.route("/hf/api/models", { status: 503, body: "upstream overloaded" });
  await search("hf", "llama");
  const error = page.locator("#error");
  assert.equal(await error.isVisible(), true);
  assert.match((await error.textContent()) ?? "", /Search failed: .*HTTP 503.*upstream overloaded/);
  await page.screenshot({ path: `${ARTIFACTS}error.png`, fullPage: true });

  api.route("/hf/api/models", { body: "[{ not json" });
  await search("hf", "llama");
  assert.match((await error.textContent()) ?? "", /Search failed: malformed HuggingFace search response/);

  api.route("/hf/api/models", { body: fixture("hf-search-assembled.json") });
  await search("hf", "llama");
  assert.equal(await error.isHidden(), true);
  assert.ok((await page.locator("#results li").count()) > 0);
  assert.deepEqual(pageErrors, []);
});
