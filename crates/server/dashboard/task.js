// One task (#/tasks/ID): what it is, where it is in its life, its lease, its latest error,
// its payload pretty-printed, its headers and recorded effects; replay and purge when it is a
// dead letter, cancel while it has not started.

import { call } from "./api.js";
import { h, replace } from "./dom.js";
import { count, duration, parseDuration, relative, time, words } from "./format.js";
import { act, badge, button, confirmAction, errorPanel, stateBadge } from "./ui.js";

const HIGHLIGHT_CHARS_MAX = 200000;

/** A JSON value as indented text, with keys, strings, numbers and literals marked for colour. */
export function jsonView(value) {
  const pre = h("pre", { class: "json", id: "payload" });
  const text = JSON.stringify(value, null, 2);
  if (text.length > HIGHLIGHT_CHARS_MAX) {
    pre.textContent = text;
    return pre;
  }
  const out = [];
  const walk = (v, indent) => {
    const pad = "  ".repeat(indent);
    if (Array.isArray(v)) {
      if (v.length === 0) return out.push("[]");
      out.push("[\n");
      v.forEach((item, i) => {
        out.push(pad + "  ");
        walk(item, indent + 1);
        out.push(i < v.length - 1 ? ",\n" : "\n");
      });
      return out.push(pad + "]");
    }
    if (v !== null && typeof v === "object") {
      const entries = Object.entries(v);
      if (entries.length === 0) return out.push("{}");
      out.push("{\n");
      entries.forEach(([key, item], i) => {
        out.push(pad + "  ", h("span", { class: "j-key" }, JSON.stringify(key)), ": ");
        walk(item, indent + 1);
        out.push(i < entries.length - 1 ? ",\n" : "\n");
      });
      return out.push(pad + "}");
    }
    const kind = typeof v === "string" ? "j-str" : typeof v === "number" ? "j-num" : "j-lit";
    return out.push(h("span", { class: kind }, JSON.stringify(v)));
  };
  walk(value, 0);
  pre.append(...out.map((part) => (typeof part === "string" ? document.createTextNode(part) : part)));
  return pre;
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([term, value]) =>
    [h("dt", {}, term), h("dd", {}, value === null || value === undefined || value === "" ? h("span", { class: "muted" }, "–") : value)]));
}

function when(ms) {
  return ms ? [time(ms), h("span", { class: "muted" }, ` (${relative(ms)})`)] : null;
}

function table(map, empty) {
  const entries = Object.entries(map || {});
  if (entries.length === 0) return h("p", { class: "muted" }, empty);
  return h("table", { class: "grid-table kv" }, h("tbody", {}, entries.map(([key, value]) =>
    h("tr", {}, h("td", { class: "mono" }, key), h("td", { class: "mono wrap" }, value)))));
}

export function mount(root, params, live) {
  const id = params.id;
  let task = null;
  let failure = null;
  let shown = null;

  async function load() {
    try {
      task = await call("GET", `v1/tasks/${encodeURIComponent(id)}`);
      failure = null;
    } catch (error) {
      failure = error;
    }
    // Redraw only when something changed, so a selection in the payload survives updates.
    const now = JSON.stringify([task, failure && failure.message]);
    if (now !== shown) {
      shown = now;
      render();
    }
  }

  async function replay(source) {
    const sure = await confirmAction({
      title: "Replay this dead letter?",
      text: `Task ${id} goes back to ready in ${task.queue} with fresh attempts.`,
      ok: "Replay",
    });
    if (!sure) return;
    await act(source, () => call("POST", "v1/dead-letters/replay", { body: { ids: [id] } }),
      (r) => (r.count === 1 ? "Replayed: the task is ready again" : "Nothing replayed: the task is no longer a dead letter"));
    await load();
    live.refresh();
  }

  async function purge(source) {
    const sure = await confirmAction({
      title: "Delete this dead letter for ever?",
      text: `Task ${id} of ${task.queue} is deleted. This cannot be undone.`,
      ok: "Purge",
      danger: true,
    });
    if (!sure) return;
    await act(source, () => call("POST", "v1/dead-letters/purge", { body: { ids: [id] } }),
      (r) => (r.count === 1 ? "Purged" : "Nothing purged: the task is no longer a dead letter"));
    await load();
    live.refresh();
  }

  async function cancel(source) {
    const sure = await confirmAction({
      title: "Cancel this task?",
      text: `Task ${id} will not run. Only tasks that have not started can be cancelled.`,
      ok: "Cancel task",
      danger: true,
    });
    if (!sure) return;
    await act(source, () => call("POST", "v1/tasks/cancel", { body: { id } }), "Cancelled");
    await load();
    live.refresh();
  }

  function render() {
    if (!task) {
      replace(root, h("div", { class: "page-head" }, h("h1", {}, "Task ", h("span", { class: "mono" }, id))),
        failure ? errorPanel(failure) : h("p", { class: "muted" }, "Loading…"));
      return;
    }
    const t = task;
    const actions = [];
    if (t.state === "dead") {
      actions.push(button("Replay", (e) => replay(e.currentTarget), { kind: "primary", attrs: { "data-action": "replay" } }));
      actions.push(button("Purge", (e) => purge(e.currentTarget), { kind: "danger", attrs: { "data-action": "purge" } }));
    }
    if (["scheduled", "ready", "retrying"].includes(t.state)) {
      actions.push(button("Cancel", (e) => cancel(e.currentTarget), { kind: "danger", attrs: { "data-action": "cancel" } }));
    }
    let payload;
    if (t.payload !== undefined) payload = jsonView(t.payload);
    else if (t.payload_base64 !== undefined) {
      payload = [h("p", { class: "muted" }, `Not JSON: ${count(Math.floor((t.payload_base64.length * 3) / 4))} bytes, shown as base64.`),
        h("pre", { class: "json wrap", id: "payload" }, t.payload_base64)];
    } else payload = h("p", { class: "muted" }, "No payload.");
    const active = t.state === "active";
    replace(root,
      h("div", { class: "page-head" },
        h("h1", {},
          h("a", { href: "#/", class: "crumb" }, "Queues"), " / ",
          h("a", { href: `#/queues/${encodeURIComponent(t.queue)}`, class: "crumb" }, t.queue), " / ",
          t.kind),
        stateBadge(t.state),
        t.dead_reason ? badge(words(t.dead_reason), "bad") : null,
        h("div", { class: "spacer" }),
        actions),
      failure ? errorPanel(failure) : null,
      h("div", { class: "columns three" },
        h("section", { class: "panel", id: "task-facts" }, h("h2", {}, "Task"), facts([
          ["Id", h("span", { class: "mono" }, t.id)],
          ["Queue", h("a", { href: `#/queues/${encodeURIComponent(t.queue)}` }, t.queue)],
          ["Kind", t.kind],
          ["State", stateBadge(t.state)],
          ["Attempts", `${t.attempt} of ${t.retry.max_attempts}`],
          ["Priority", String(t.priority)],
          ["Created", when(t.created_at)],
          ["Run at", when(t.run_at)],
          ["Expires", when(t.expires_at)],
          ["Finished", when(t.finished_at)],
          ["Timeout", t.timeout ? duration(parseDuration(t.timeout)) : null],
          ["Idempotency key", t.idempotency_key],
          ["Partition key", t.partition_key],
          ["Limit key", t.limit_key],
        ])),
        h("section", { class: "panel", id: "task-lease" }, h("h2", {}, "Lease and attempts"), facts([
          ["Fence", t.fence ? String(t.fence) : "never reserved"],
          [active ? "Lease expires" : "Last lease expiry", when(t.lease_expires_at)],
          ["Worker", t.worker],
          ["Retry policy", `${t.retry.max_attempts} attempts, backoff ${t.retry.backoff_initial} → ${t.retry.backoff_max} ×${t.retry.backoff_multiplier}, jitter ${t.retry.jitter}`],
          ["Dead reason", t.dead_reason ? words(t.dead_reason) : null],
        ]), h("h3", {}, "Latest error"),
        t.last_error ? h("pre", { class: "error-block", id: "last-error" }, t.last_error) : h("p", { class: "muted" }, "No failed attempt.")),
        h("section", { class: "panel" }, h("h2", {}, "Headers"), table(t.headers, "No headers."),
          h("h2", {}, "Effects"), table(t.effects, "No recorded side effects."))),
      h("section", { class: "panel" }, h("h2", {}, "Payload"), payload));
  }

  render();
  load();
  // The task may move on (a worker finishes it): read it again with every live reading.
  return { update: () => load(), title: `Task ${id.slice(0, 8)}` };
}
