// The catalog web UI, served by `catalog serve`: Library, Discover, a model's page, Try it (chat and
// image) and Settings, one hash route each (`#/library`, `#/model/ID`...), usable with the keyboard.

import { CatalogApi } from "./api.js";
import type { Context } from "./context.js";
import { byId } from "./dom.js";
import { chatPage } from "./pages/chat.js";
import { discoverPage } from "./pages/discover.js";
import { imagePage } from "./pages/image.js";
import { libraryPage } from "./pages/library.js";
import { modelPage } from "./pages/model.js";
import { settingsPage } from "./pages/settings.js";
import { loadSettings, loadToken } from "./settings.js";

const view = byId("view", HTMLElement);
const statusLine = byId("status", HTMLParagraphElement);
const errorBox = byId("error", HTMLParagraphElement);
const url = new URL(window.location.href);

const ctx: Context = {
  api: new CatalogApi("", loadToken(url, window.sessionStorage)),
  settings: loadSettings(url, window.localStorage),
  home: "",
  status(text) {
    statusLine.textContent = text;
  },
  error(context, err) {
    const message = err instanceof Error ? err.message : String(err);
    errorBox.textContent = `${context}: ${message}`;
    errorBox.hidden = false;
    statusLine.textContent = "";
  },
  clearError() {
    errorBox.hidden = true;
    errorBox.textContent = "";
  },
};

async function route(): Promise<void> {
  const hash = window.location.hash.replace(/^#\/?/, "");
  const [page = "library", ...rest] = hash.split("/");
  ctx.clearError();
  ctx.status("");
  for (const link of document.querySelectorAll<HTMLAnchorElement>("nav a")) {
    if (link.getAttribute("href") === `#/${page}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.body.dataset.page = page;
  delete document.body.dataset.ready;
  switch (page) {
    case "discover":
      discoverPage(ctx, view);
      break;
    case "model":
      await modelPage(ctx, view, decodeURIComponent(rest.join("/")));
      break;
    case "chat":
      await chatPage(ctx, view);
      break;
    case "image":
      await imagePage(ctx, view);
      break;
    case "settings":
      settingsPage(ctx, view);
      break;
    default:
      await libraryPage(ctx, view);
  }
  // Keyboard and screen-reader users land on the new page's heading, unless a field took the focus.
  if (!view.contains(document.activeElement)) view.querySelector<HTMLElement>("h2")?.focus();
  document.body.dataset.ready = "true";
}

async function main(): Promise<void> {
  try {
    ctx.home = ((await (await ctx.api.request("GET", "/api/info")).json()) as { home: string }).home;
  } catch (err) {
    ctx.error("Could not reach catalog serve", err);
  }
  window.addEventListener("hashchange", () => void route());
  await route();
}

void main();
