// Dead letters (#/dead?queue=Q&reason=R&after=ID): filtered by queue and reason, a page at a
// time; replay or purge one, or every one matching the filter, each after a confirmation.

import { call } from "./api.js";
import { h, replace } from "./dom.js";
import { count, relative, shortId, time, words } from "./format.js";
import { act, badge, button, confirmAction, emptyRow, errorPanel, toast } from "./ui.js";

const REASONS = ["max_attempts", "expired", "overflow", "permanent_failure"];
const PAGE = 50;
/** Most dead letters one replay or purge call acts on (the API's limit). */
const CALL_MAX = 1000;
/** Most calls one "all matching" action makes: CALL_MAX × this many dead letters. */
const CALLS_MAX = 1000;

export function mount(root, params, live) {
  const queue = params.query.get("queue") || "";
  const reason = REASONS.includes(params.query.get("reason")) ? params.query.get("reason") : "";
  const after = params.query.get("after");
  const link = (changes) => {
    const query = new URLSearchParams({ queue, reason, ...changes });
    for (const [key, value] of [...query.entries()]) if (!value) query.delete(key);
    const text = query.toString();
    return "#/dead" + (text ? "?" + text : "");
  };
  const queueSelect = h("select", { id: "dead-queue", onchange: () => { location.hash = link({ queue: queueSelect.value }); } });
  const reasonSelect = h("select", { id: "dead-reason", onchange: () => { location.hash = link({ reason: reasonSelect.value }); } },
    h("option", { value: "" }, "any reason"),
    REASONS.map((r) => h("option", { value: r, selected: r === reason }, words(r))));
  const replayAll = button("Replay all matching", (e) => everyMatching("replay", e.currentTarget), { kind: "primary", attrs: { id: "replay-all" } });
  const purgeAll = button("Purge all matching", (e) => everyMatching("purge", e.currentTarget), { kind: "danger", attrs: { id: "purge-all" } });
  const area = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  const summary = h("span", { class: "muted", id: "dead-summary" });
  replace(root,
    h("div", { class: "page-head" }, h("h1", {}, "Dead letters")),
    h("section", { class: "panel" },
      h("div", { class: "toolbar" },
        h("label", {}, "Queue ", queueSelect),
        h("label", {}, "Reason ", reasonSelect),
        summary,
        h("div", { class: "spacer" }),
        replayAll, purgeAll),
      area,
      pager));

  function describeFilter() {
    return `${reason ? words(reason) + " " : ""}dead letters ${queue ? "of " + queue : "of every queue"}`;
  }

  async function everyMatching(action, source) {
    const replaying = action === "replay";
    const sure = await confirmAction({
      title: replaying ? "Replay every matching dead letter?" : "Purge every matching dead letter?",
      text: replaying
        ? `Every ${describeFilter()} goes back to ready with fresh attempts.`
        : `Every ${describeFilter()} is deleted. This cannot be undone.`,
      ok: replaying ? "Replay all" : "Purge all",
      danger: !replaying,
    });
    if (!sure) return;
    await act(source, async () => {
      let total = 0;
      for (let calls = 0; calls < CALLS_MAX; calls++) {
        const body = { limit: CALL_MAX };
        if (queue) body.queue = queue;
        if (reason) body.reason = reason;
        const answer = await call("POST", `v1/dead-letters/${action}`, { body });
        total += answer.count;
        if (answer.count < CALL_MAX) break;
      }
      return total;
    }, (total) => `${replaying ? "Replayed" : "Purged"} ${count(total)} dead letter${total === 1 ? "" : "s"}`);
    await load();
    live.refresh();
  }

  async function one(action, task, source) {
    const replaying = action === "replay";
    const sure = await confirmAction({
      title: replaying ? "Replay this dead letter?" : "Purge this dead letter?",
      text: replaying
        ? `Task ${task.id} (${task.kind}) goes back to ready in ${task.queue} with fresh attempts.`
        : `Task ${task.id} (${task.kind}) of ${task.queue} is deleted. This cannot be undone.`,
      ok: replaying ? "Replay" : "Purge",
      danger: !replaying,
    });
    if (!sure) return;
    const answer = await act(source, () => call("POST", `v1/dead-letters/${action}`, { body: { ids: [task.id] } }));
    if (answer) {
      toast(answer.count === 1 ? "ok" : "info", answer.count === 1
        ? `${replaying ? "Replayed" : "Purged"} ${shortId(task.id)}`
        : `Nothing to do: ${shortId(task.id)} is no longer a dead letter`);
    }
    await load();
    live.refresh();
  }

  function row(task) {
    return h("tr", { "data-task": task.id },
      h("td", { class: "mono" }, h("a", { href: `#/tasks/${task.id}`, title: task.id }, shortId(task.id))),
      h("td", {}, h("a", { href: `#/queues/${encodeURIComponent(task.queue)}` }, task.queue)),
      h("td", {}, task.kind),
      h("td", {}, badge(words(task.dead_reason), "bad")),
      h("td", { class: "num" }, `${task.attempt}/${task.retry.max_attempts}`),
      h("td", { class: "error-text", title: task.last_error || "" }, task.last_error || ""),
      h("td", { title: time(task.finished_at) }, relative(task.finished_at)),
      h("td", { class: "actions" },
        button("Replay", (e) => one("replay", task, e.currentTarget), { attrs: { "data-action": "replay" } }),
        button("Purge", (e) => one("purge", task, e.currentTarget), { kind: "danger-quiet", attrs: { "data-action": "purge" } })));
  }

  let shown = null;
  let reading = false;
  async function load() {
    if (reading) return;
    reading = true;
    let content;
    try {
      const page = await call("GET", "v1/dead-letters", { query: { queue, reason, after, limit: PAGE } });
      const key = JSON.stringify(page);
      if (key === shown) return;
      shown = key;
      content = h("table", { class: "grid-table", id: "dead-list" },
        h("thead", {}, h("tr", {}, ["Task", "Queue", "Kind", "Reason", "Attempts", "Last error", "Died", ""]
          .map((title) => h("th", { class: title === "Attempts" ? "num" : null }, title)))),
        h("tbody", {}, page.tasks.length ? page.tasks.map(row)
          : emptyRow(8, after ? "No more dead letters." : "No dead letters match.")));
      replace(pager,
        after ? h("a", { class: "btn btn-small", href: link({ after: "" }) }, "« First page") : null,
        page.next_after ? h("a", { class: "btn btn-small", href: link({ after: page.next_after }) }, "Next page »") : null);
      replayAll.disabled = purgeAll.disabled = page.tasks.length === 0;
    } catch (error) {
      shown = null;
      content = errorPanel(error);
      replace(pager);
    } finally {
      reading = false;
    }
    replace(area, content);
  }

  function update() {
    const names = live.latest ? live.latest.queues.map((q) => q.queue).sort() : [];
    if (queue && !names.includes(queue)) names.unshift(queue);
    const options = ["", ...names];
    if (queueSelect.options.length !== options.length || options.some((n, i) => queueSelect.options[i].value !== n)) {
      replace(queueSelect, options.map((n) => h("option", { value: n, selected: n === queue }, n || "every queue")));
    }
    if (live.latest) {
      const dead = live.latest.queues.filter((q) => !queue || q.queue === queue).reduce((n, q) => n + q.counts.dead, 0);
      summary.textContent = `${count(dead)} dead letter${dead === 1 ? "" : "s"} ${queue ? "in " + queue : "in all"}`;
    }
    load();
  }

  update();
  return { update, title: "Dead letters" };
}
