// A model of the library: its typed details, which worker runs it and why not, the memory it needs,
// the exact command that serves it, and download, verify, remove and "Try it".

import { pullInto, type Context } from "../context.js";
import { h } from "../dom.js";
import { detailView, serveCommand, statusText } from "../views.js";

/** Renders the page of `id` into `view`. */
export async function modelPage(ctx: Context, view: HTMLElement, id: string): Promise<void> {
  view.replaceChildren(h("h2", { tabindex: "-1" }, id), h("p", {}, "Loading…"));
  let entry;
  let answers;
  try {
    [entry, answers] = await Promise.all([ctx.api.entry(id), ctx.api.compat(id)]);
  } catch (err) {
    view.replaceChildren(h("h2", { tabindex: "-1" }, id), h("p", {}, "This model is not in the library. ", h("a", { href: "#/discover" }, "Find it in Discover"), "."));
    ctx.error(`Could not open ${id}`, err);
    return;
  }
  const command = serveCommand(entry, answers, ctx.home);
  const box = h("div", { class: "pull-box" });
  const actions = h("div", { class: "actions" });
  if (entry.status.state !== "available" && entry.source !== "local") {
    const pull = h("button", { type: "button" }, "Download");
    pull.addEventListener("click", async () => {
      pull.disabled = true;
      const last = await pullInto(ctx, id, box);
      if (last?.event === "done") await modelPage(ctx, view, id);
      else pull.disabled = false;
    });
    actions.append(pull);
  }
  const verify = h("button", { type: "button", class: "secondary" }, "Verify");
  verify.addEventListener("click", async () => {
    try {
      const e = await ctx.api.verify(id);
      ctx.status(`${id}: ${e.status.state === "available" ? "every file verified" : statusText(e)}`);
      await modelPage(ctx, view, id);
    } catch (err) {
      ctx.error(`Could not verify ${id}`, err);
    }
  });
  actions.append(verify);
  const tryIt = answers.find((a) => a.compatible);
  if (tryIt) actions.append(h("a", { class: "button", href: tryIt.worker === "llm" ? "#/chat" : "#/image" }, "Try it"));
  actions.append(h("a", { class: "button secondary", href: "#/library" }, "Back to the Library"));
  const [title, ...rest] = detailView(entry, answers, ctx.settings.showNsfw);
  view.replaceChildren(
    ...(title ? [title] : []),
    h("p", { "data-field": "status", "data-state": entry.status.state }, `Status: ${statusText(entry)}`),
    ...rest,
    h(
      "section",
      { class: "serve" },
      h("h3", {}, "Serve it"),
      command
        ? h("div", {}, h("p", {}, "Run this, then set its URL in Settings to try it here:"), h("pre", {}, h("code", { "data-field": "serve-command" }, command)))
        : h("p", { "data-field": "serve-command" }, "No worker of this project can run it (see Compatibility)."),
    ),
    actions,
    box,
  );
}
