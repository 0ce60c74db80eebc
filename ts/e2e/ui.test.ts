// The web UI as a person uses it, in Debian's chromium (playwright-core), against a real
// `catalog serve` (its own catalog home, pointed at a loopback fake Hub), a real worker-llm serving
// SmolLM2 and a real worker-sd on the tiny fixture pipeline: search, install with progress to the
// end, see it in the Library, open its page, remove it; chat and get an answer; generate an image.
// Keyboard-only use and a 400 px wide window are checked too. Screenshots go to ts/test-artifacts/.
//
// Binaries come from CATALOG_BIN, WORKER_LLM_BIN, WORKER_SD_BIN (default: target/debug), SmolLM2
// from SMOLLM2_GGUF (default: where scripts/fetch-models.sh caches it).

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type Page } from "playwright-core";
import { REPO, startFakeHub, type FakeHub } from "./fake-hub.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const ARTIFACTS = fileURLToPath(new URL("../../test-artifacts/", import.meta.url));
const SITE = fileURLToPath(new URL("../site/", import.meta.url));
const bin = (env: string, name: string) => process.env[env] ?? join(ROOT, "target/debug", name);
const SMOLLM2 =
  process.env.SMOLLM2_GGUF ??
  join(homedir(), ".cache/open-model-catalog/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
const TINY_SD = join(ROOT, "tests/fixtures/sd/tiny-sd15");
const ID = `hf:${REPO}`;

let hub: FakeHub;
let home: string;
let serveUrl: string;
let llmUrl: string;
let sdUrl: string;
const children: ChildProcess[] = [];
let browser: Browser;
let page: Page;
const pageErrors: string[] = [];

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

function start(command: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  assert.ok(existsSync(command), `${command} is missing: build it first (cargo build -p catalog -p worker-llm -p worker-sd)`);
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  child.on("exit", (code, signal) => {
    if (code !== null && code !== 0) console.error(`${command} exited ${code}: ${stderr}`);
    void signal;
  });
  return child;
}

/** Waits until `url` answers 200 (a worker's /ready once its model loaded). */
async function waitReady(url: string, what: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what} did not become ready at ${url}`);
}

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  hub = await startFakeHub();
  home = mkdtempSync(join(tmpdir(), "omc-ui-"));
  const serve = start(bin("CATALOG_BIN", "catalog"), ["--home", join(home, "catalog"), "serve", "--port", "0", "--ui-dir", SITE], {
    HF_ENDPOINT: hub.url,
    CIVITAI_ENDPOINT: hub.url,
    HF_HOME: join(home, "hf"),
  });
  serveUrl = await new Promise<string>((resolve, reject) => {
    let out = "";
    serve.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /open (http:\/\/\S+?)\/?\s/.exec(out);
      if (m?.[1]) resolve(m[1]);
    });
    serve.on("exit", (code) => reject(new Error(`catalog serve exited ${code}`)));
  });
  const llmPort = await freePort();
  const sdPort = await freePort();
  llmUrl = `http://127.0.0.1:${llmPort}`;
  sdUrl = `http://127.0.0.1:${sdPort}`;
  assert.ok(existsSync(SMOLLM2), `${SMOLLM2} is missing: run scripts/fetch-models.sh`);
  start(bin("WORKER_LLM_BIN", "worker-llm"), ["serve", "--model-path", SMOLLM2, "--port", String(llmPort)], { RAYON_NUM_THREADS: "2" });
  start(bin("WORKER_SD_BIN", "worker-sd"), ["serve", "--model-path", TINY_SD, "--port", String(sdPort)]);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on("pageerror", (err) => pageErrors.push(err.message));
  // No network: anything not on loopback is refused.
  await page.route("**/*", (route) =>
    new URL(route.request().url()).hostname === "127.0.0.1" ? route.continue() : route.abort(),
  );
  await Promise.all([waitReady(`${llmUrl}/ready`, "worker-llm"), waitReady(`${sdUrl}/ready`, "worker-sd")]);
});

after(async () => {
  await browser?.close();
  for (const c of children) c.kill("SIGTERM");
  await hub?.close();
  if (home) rmSync(home, { recursive: true, force: true });
});

async function go(hash: string, query = ""): Promise<void> {
  await page.goto(`${serveUrl}/${query}#/${hash}`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 15_000 });
}

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: `${ARTIFACTS}${name}.png`, fullPage: true });
}

async function noHorizontalScroll(): Promise<void> {
  const [scroll, width] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(scroll <= width, `the page is ${scroll} px wide in a ${width} px window`);
}

test("the library starts empty and says where to go", async () => {
  await go("library");
  assert.match((await page.locator(".summary").textContent()) ?? "", /library is empty.*Discover/);
  await shot("library-empty");
});

test("search the Hub and install a model, with its progress to the end", async () => {
  await go("discover");
  await page.fill("#search-form input[name=query]", "tiny");
  await page.press("#search-form input[name=query]", "Enter");
  const result = page.locator(`#results button[data-id="${ID}"]`);
  await result.waitFor();
  await shot("discover-search");
  await result.click();
  await page.waitForSelector("#detail:not([hidden]) h2");
  assert.match((await page.locator('#detail [data-worker="worker-llm"]').textContent()) ?? "", /worker-llm: can run it/);
  assert.match((await page.locator('#detail [data-field="quantization"]').textContent()) ?? "", /Q4_K_M/);
  // Watch the progress bar move: some value strictly between 0 and 1, with bytes and speed in words.
  const seen: string[] = [];
  await page.click('#detail button[data-action="install"]');
  const bar = page.locator("#detail .pull progress");
  await bar.waitFor();
  await page.waitForFunction(() => {
    const p = document.querySelector<HTMLProgressElement>("#detail .pull progress");
    return p !== null && p.value > 0.05 && p.value < 0.95;
  });
  seen.push((await page.locator("#detail .pull-text").textContent()) ?? "");
  await shot("discover-installing");
  await page.waitForSelector('#detail .pull[data-state="done"]', { timeout: 60_000 });
  seen.push((await page.locator("#detail .pull-text").textContent()) ?? "");
  assert.match(seen[0] ?? "", /^[\d.]+ (KB|MB) of 6\.0 MB · [\d.]+ (KB|MB)\/s/, seen.join(" | "));
  assert.match(seen[1] ?? "", /Downloaded and verified \(6\.0 MB\)/);
  assert.deepEqual(hub.downloads, [null], "one download of the weights");
  await shot("discover-installed");
});

test("the installed model is in the Library with its facts", async () => {
  await page.click("#detail .installed a[href='#/library']");
  await page.waitForSelector(`li.entry[data-id="${ID}"]`);
  const card = page.locator(`li.entry[data-id="${ID}"]`);
  assert.equal(await card.locator('[data-field="type"]').textContent(), "llm");
  assert.equal(await card.locator('[data-field="kind"]').textContent(), "llama");
  assert.equal(await card.locator('[data-field="quant"]').textContent(), "Q4_K_M");
  assert.equal(await card.locator('[data-field="size"]').textContent(), "6.0 MB");
  assert.equal(await card.locator('[data-field="status"]').textContent(), "available");
  // Filtering by words that do not match hides it.
  await page.fill(".toolbar input[name=filter]", "flux");
  assert.equal(await page.locator("li.entry").count(), 0);
  await page.fill(".toolbar input[name=filter]", "llama");
  assert.equal(await page.locator("li.entry").count(), 1);
  await shot("library");
});

test("its page shows the typed details, compatibility, memory and the serve command", async () => {
  await page.click(`li.entry[data-id="${ID}"] h3 a`);
  await page.waitForSelector('[data-field="serve-command"]');
  const field = async (name: string) => (await page.locator(`#view [data-field="${name}"]`).first().textContent()) ?? "";
  assert.equal(await field("family"), "llama");
  assert.equal(await field("context-length"), "2048");
  assert.equal(await field("chat-template"), "present");
  assert.match(await field("template"), /im_start/);
  assert.match(await field("status"), /available/);
  assert.match((await page.locator('#view [data-worker="worker-llm"]').textContent()) ?? "", /can run it.*Needs about [\d.]+ [KMG]B of memory/s);
  assert.match((await page.locator('#view [data-worker="worker-sd"]').textContent()) ?? "", /cannot run it/);
  assert.match(await field("serve-command"), new RegExp(`^worker-llm serve --model ${ID} --catalog-home \\S+ --port 8080$`));
  await shot("model");
  await page.setViewportSize({ width: 400, height: 800 });
  await noHorizontalScroll();
  await shot("model-400px");
  await page.setViewportSize({ width: 1100, height: 900 });
});

test("removing it asks first, says what is freed, and deletes the files", async () => {
  await go("library");
  await page.click(`li.entry[data-id="${ID}"] button.danger`);
  const dialog = page.locator("dialog.confirm");
  await dialog.waitFor();
  assert.match((await dialog.locator('[data-field="frees"]').textContent()) ?? "", /frees 6\.0 MB/);
  await shot("library-remove-confirm");
  // Escape cancels: nothing removed.
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "detached" });
  assert.equal(await page.locator("li.entry").count(), 1);
  // With the keyboard: the dialog opens on Cancel; Tab reaches Remove.
  await page.focus(`li.entry[data-id="${ID}"] button.danger`);
  await page.keyboard.press("Enter");
  await dialog.waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Cancel");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Remove");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector("li.entry") === null);
  assert.match((await page.locator("#status").textContent()) ?? "", /Removed .*freed 6\.0 MB/);
  const entries = (await (await fetch(`${serveUrl}/api/entries`)).json()) as unknown[];
  assert.equal(entries.length, 0);
});

test("CivitAI results offer each version with its base model and files", async () => {
  await go("discover");
  await page.selectOption("#search-form select[name=source]", "civitai");
  await page.fill("#search-form input[name=query]", "realistic");
  await page.press("#search-form input[name=query]", "Enter");
  await page.locator('#results button[data-id^="civitai:4201"]').first().click();
  const picker = page.locator("#detail select[name=version]");
  await picker.waitFor();
  assert.ok((await picker.locator("option").count()) > 1, "several versions to pick from");
  assert.match((await page.locator('#detail [data-field="base"]').textContent()) ?? "", /^sd1/);
  assert.ok((await page.locator("#detail .files li").count()) >= 1);
  await page.locator("#detail [data-field=trigger-words]").waitFor();
  await shot("discover-civitai");
});

test("the pages work with the keyboard alone", async () => {
  await go("library");
  // Tab from the top of the page to the Discover link, then Enter.
  for (let i = 0; i < 10; i++) {
    await page.keyboard.press("Tab");
    if ((await page.evaluate(() => document.activeElement?.textContent)) === "Discover") break;
  }
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.body.dataset.page === "discover" && document.body.dataset.ready === "true");
  // The search field has the focus: type and press Enter.
  await page.keyboard.type("tiny");
  await page.keyboard.press("Enter");
  await page.locator(`#results button[data-id="${ID}"]`).waitFor();
  for (let i = 0; i < 10; i++) {
    await page.keyboard.press("Tab");
    if ((await page.evaluate(() => document.activeElement?.getAttribute("data-id"))) === ID) break;
  }
  await page.keyboard.press("Enter");
  await page.waitForSelector("#detail:not([hidden]) h2");
  await page.waitForFunction(() => document.activeElement?.tagName === "H2");
  assert.equal(await page.locator("#detail h2").textContent(), "tiny-llama-chat-GGUF");
  await page.setViewportSize({ width: 400, height: 800 });
  await noHorizontalScroll();
  await shot("discover-400px");
  await page.setViewportSize({ width: 1100, height: 900 });
});

test("chat with worker-llm: the answer streams in, with tokens per second", async () => {
  await go("chat", `?llm=${encodeURIComponent(llmUrl)}`);
  await page.waitForSelector(".worker.ok");
  await page.fill("textarea[name=message]", "What is the capital of France?");
  await page.fill("input[name=maxTokens]", "24");
  // Greedy, so the answer is the model's most likely one.
  await page.fill("input[name=temperature]", "0");
  await page.press("textarea[name=message]", "Enter");
  await page.waitForSelector(".chat-log li.assistant[data-done=true]", { timeout: 60_000 });
  const answer = (await page.locator('[data-field="answer"]').textContent()) ?? "";
  assert.match(answer, /Paris/, answer);
  assert.match((await page.locator('[data-field="stats"]').textContent()) ?? "", /^\d+ tokens · [\d.]+ tok\/s · first token after [\d.]+ s$/);
  await shot("chat");
  await page.setViewportSize({ width: 400, height: 800 });
  await noHorizontalScroll();
  await shot("chat-400px");
  await page.setViewportSize({ width: 1100, height: 900 });
});

test("a worker that is not running is a clear message, not a spinner", async () => {
  const dead = `http://127.0.0.1:${await freePort()}`;
  await go("settings");
  await page.fill("#settings-form input[name=llmUrl]", dead);
  await page.press("#settings-form input[name=llmUrl]", "Enter");
  await page.waitForFunction(() => document.querySelector("#status")?.textContent === "Settings saved.");
  await shot("settings");
  await go("chat");
  await page.waitForSelector(".worker.down");
  const text = (await page.locator(".worker.down").textContent()) ?? "";
  assert.match(text, new RegExp(`worker-llm is not running at ${dead}`));
  assert.match(text, /worker-llm serve/);
  await shot("chat-no-worker");
});

test("generate an image with worker-sd: progress, previews, then the PNG with its parameters", async () => {
  await go("image", `?sd=${encodeURIComponent(sdUrl)}`);
  await page.waitForSelector(".worker.ok");
  await page.fill("input[name=width]", "64");
  await page.fill("input[name=height]", "64");
  await page.fill("input[name=steps]", "4");
  await page.click(".image-form button[type=submit]");
  await page.waitForSelector('img[data-field="image"]', { timeout: 120_000 });
  const params = (await page.locator('[data-field="parameters"]').textContent()) ?? "";
  assert.match(params, /Steps: 4/);
  assert.match(params, /Seed: 42/);
  assert.match(params, /Size: 64x64/);
  assert.match((await page.locator('[data-field="progress"]').textContent()) ?? "", /^Done in [\d.]+ s$/);
  assert.ok(Number(await page.locator("img.preview").getAttribute("data-count")) >= 1, "previews were shown");
  const natural = await page.locator('img[data-field="image"]').evaluate((img: HTMLImageElement) => [img.naturalWidth, img.naturalHeight]);
  assert.deepEqual(natural, [64, 64]);
  await shot("image");
  await page.setViewportSize({ width: 400, height: 800 });
  await noHorizontalScroll();
  await shot("image-400px");
  await go("library");
  await noHorizontalScroll();
  await shot("library-400px");
  await page.setViewportSize({ width: 1100, height: 900 });
  assert.deepEqual(pageErrors, []);
});
