// One queue (#/queues/NAME?state=S&after=ID): its state counts, backpressure settings and
// totals, its live charts, and its tasks in one state, a page at a time.

import { call } from "./api.js";
import { h, replace } from "./dom.js";
import { count, compact, duration, parseDuration, relative, shortId, time, words } from "./format.js";
import { latencyChart, throughputChart, updateCharts } from "./chart.js";
import { backpressureChips, togglePause, waiting } from "./queues.js";
import { badge, button, emptyRow, errorPanel } from "./ui.js";

const STATES = ["ready", "scheduled", "active", "retrying", "dead", "completed", "cancelled"];
const PAGE = 50;

function definitions(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([term, value, attrs]) =>
    [h("dt", {}, term), h("dd", attrs || {}, value)]));
}

function limit(value, render) {
  return value === null || value === undefined ? h("span", { class: "muted" }, "none") : render(value);
}

function taskRow(task, state) {
  const when = state === "active" ? [task.lease_expires_at, "lease"]
    : state === "scheduled" || state === "retrying" ? [task.run_at, "runs"]
      : state === "completed" || state === "dead" || state === "cancelled" ? [task.finished_at, "finished"]
        : [task.created_at, "created"];
  return h("tr", { "data-task": task.id },
    h("td", { class: "mono" }, h("a", { href: `#/tasks/${task.id}`, title: task.id }, shortId(task.id))),
    h("td", {}, task.kind),
    h("td", { class: "num" }, String(task.priority)),
    h("td", { class: "num" }, `${task.attempt}/${task.retry.max_attempts}`),
    h("td", { title: time(task.created_at) }, relative(task.created_at)),
    h("td", { title: time(when[0]) }, when[0] ? `${when[1]} ${relative(when[0])}` : "–"),
    h("td", {}, task.worker || ""),
    h("td", { class: "error-text", title: task.last_error || "" },
      task.dead_reason ? badge(words(task.dead_reason), "bad") : null,
      task.last_error ? " " + task.last_error : ""));
}

export function mount(root, params, live) {
  const name = params.name;
  const state = STATES.includes(params.query.get("state")) ? params.query.get("state") : "ready";
  const after = params.query.get("after");
  const base = `#/queues/${encodeURIComponent(name)}`;
  const head = h("div", { class: "page-head" });
  const cards = h("section", { class: "cards state-cards" });
  const settings = h("section", { class: "panel" });
  const totals = h("section", { class: "panel" });
  const throughput = throughputChart("chart-throughput");
  const latencyOf = latencyChart("chart-latency");
  const tasksBody = h("tbody", {});
  const tasksArea = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  const pauseButton = button("Pause", () => togglePause(live, live.queue(name), pauseButton), { attrs: { "data-action": "pause" } });
  replace(root,
    head,
    cards,
    h("section", { class: "charts" }, throughput.element, latencyOf.element),
    h("div", { class: "columns" }, settings, totals),
    h("section", { class: "panel", id: "tasks" },
      h("div", { class: "panel-head" },
        h("h2", {}, "Tasks"),
        h("nav", { class: "subtabs" }, STATES.map((st) =>
          h("a", { href: `${base}?state=${st}`, class: st === state ? "active" : null, "data-state": st }, st)))),
      tasksArea,
      pager));

  let reading = null;
  let shown = null;
  async function loadTasks() {
    if (reading) return;
    reading = call("GET", "v1/tasks", { query: { queue: name, state, after, limit: PAGE } });
    try {
      const page = await reading;
      // Redraw only when the page changed, so a selection in it survives the updates.
      const key = JSON.stringify(page);
      if (key === shown) return;
      shown = key;
      replace(tasksBody, page.tasks.length ? page.tasks.map((t) => taskRow(t, state))
        : emptyRow(8, after ? "No more tasks in this state." : `No ${state} tasks.`));
      replace(tasksArea, h("table", { class: "grid-table", id: "task-list" },
        h("thead", {}, h("tr", {}, ["Task", "Kind", "Prio", "Attempt", "Created", "When", "Worker", "Error"]
          .map((title, i) => h("th", { class: i === 2 || i === 3 ? "num" : null }, title)))),
        tasksBody));
      replace(pager,
        after ? h("a", { class: "btn btn-small", href: `${base}?state=${state}` }, "« First page") : null,
        page.next_after ? h("a", { class: "btn btn-small", href: `${base}?state=${state}&after=${page.next_after}` }, "Next page »") : null);
    } catch (error) {
      shown = null;
      replace(tasksArea, errorPanel(error));
      replace(pager);
    } finally {
      reading = null;
    }
  }

  function update() {
    updateCharts(live, name, throughput, latencyOf);
    loadTasks();
    const q = live.queue(name);
    if (!q) {
      replace(head, h("h1", {}, name), live.latest ? badge("not found", "bad") : null);
      if (live.latest) replace(cards, h("p", { class: "muted" }, "This queue does not exist, or the token may not see it."));
      return;
    }
    replace(head,
      h("h1", {}, h("a", { href: "#/", class: "crumb" }, "Queues"), " / ", q.queue),
      q.config.paused ? badge("paused", "warn") : badge("running", "ok"),
      q.refusing ? badge("refusing enqueues", "bad") : null,
      h("div", { class: "spacer" }),
      h("a", { class: "btn btn-small", href: `#/dead?queue=${encodeURIComponent(name)}` }, `Dead letters (${count(q.counts.dead)})`),
      pauseButton);
    pauseButton.textContent = q.config.paused ? "Resume" : "Pause";
    pauseButton.dataset.action = q.config.paused ? "resume" : "pause";
    pauseButton.className = q.config.paused ? "btn btn-small btn-primary" : "btn btn-small";
    replace(cards, STATES.map((st) => h("a", {
      class: ["card", "card-link", st === state && "selected"], href: `${base}?state=${st}`, "data-state": st,
    }, h("div", { class: "card-label" }, st), h("div", { class: ["card-value", "state-text-" + st] }, count(q.counts[st])))));
    const c = q.config;
    replace(settings, h("h2", {}, "Backpressure"), h("div", { class: "chips" }, backpressureChips(q)), definitions([
      ["Waiting", `${count(waiting(q))}${c.length_max ? ` of ${count(c.length_max)} max` : ""}`],
      ["Watermarks", limit(c.watermarks, (w) => `high ${count(w.high)}, low ${count(w.low)} — ${q.refusing ? "refusing" : "accepting"}`)],
      ["Overflow", c.length_max ? words(c.overflow) : h("span", { class: "muted" }, "no length limit")],
      ["Rate limit", limit(c.rate_limit, (r) => `${compact(r.rate)}/s, burst ${r.burst}`)],
      ["Per key rate", limit(c.key_rate_limit, (r) => `${compact(r.rate)}/s, burst ${r.burst}`)],
      ["Concurrency", limit(c.concurrency_max, (m) => `${count(q.counts.active)} active of ${count(m)}`)],
      ["Per key concurrency", limit(c.key_concurrency_max, (m) => `at most ${count(m)}`)],
      ["Task TTL", limit(c.ttl, (t) => duration(parseDuration(t)))],
      ["Oldest ready", q.oldest_ready_age ? duration(parseDuration(q.oldest_ready_age)) : "–"],
      ["Retry", `${c.retry.max_attempts} attempts, backoff ${c.retry.backoff_initial} → ${c.retry.backoff_max} ×${c.retry.backoff_multiplier}`],
    ]));
    const t = q.totals;
    replace(totals, h("h2", {}, "Totals since creation"), definitions([
      ["Enqueued", count(t.enqueued)],
      ["Deduplicated", count(t.deduplicated)],
      ["Reserved", count(t.reserved)],
      ["Completed", count(t.completed)],
      ["Retried", count(t.retried)],
      ["Released", count(t.released)],
      ["Leases expired", count(t.leases_expired)],
      ["Stale acks refused", count(t.stale_refused)],
      ["Dead-lettered", `${count(Object.values(t.dead).reduce((a, b) => a + b, 0))} (${Object.entries(t.dead).filter(([, n]) => n > 0).map(([r, n]) => `${words(r)} ${count(n)}`).join(", ") || "none"})`],
      ["Replayed", count(t.replayed)],
      ["Cancelled", count(t.cancelled)],
      ["Refused: full / overloaded", `${count(t.rejected_full)} / ${count(t.rejected_overloaded)}`],
      ["Throttled: rate / concurrency", `${count(t.throttled_rate)} / ${count(t.throttled_concurrency)}`],
      ["Effects recorded", count(t.effects_recorded)],
    ]));
  }

  update();
  return { update, title: name };
}
