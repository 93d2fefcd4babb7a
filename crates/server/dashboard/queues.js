// The overview (#/): totals over every queue, the live charts, and one row per queue with
// its depth by state, its backpressure state, and pause/resume.

import { call } from "./api.js";
import { ALL } from "./live.js";
import { h, replace } from "./dom.js";
import { count, compact, duration, parseDuration, perSecond } from "./format.js";
import { latencyChart, throughputChart, updateCharts } from "./chart.js";
import { act, badge, button, confirmAction, emptyRow } from "./ui.js";

const DEPTH_STATES = ["scheduled", "ready", "active", "retrying"];
const COUNT_STATES = ["scheduled", "ready", "active", "retrying", "dead", "completed"];

/** Tasks waiting to run: what watermarks and `length_max` bound. */
export function waiting(q) {
  return q.counts.scheduled + q.counts.ready + q.counts.retrying;
}

/** Pauses or resumes a queue after asking, then reads the statistics again. */
export async function togglePause(live, q, source) {
  const paused = q.config.paused;
  if (!paused) {
    const sure = await confirmAction({
      title: `Pause ${q.queue}?`,
      text: "Workers stop reserving tasks from this queue until it is resumed. Enqueue keeps working, so tasks pile up.",
      ok: "Pause queue",
      danger: true,
    });
    if (!sure) return;
  }
  const path = `v1/queues/${encodeURIComponent(q.queue)}/${paused ? "resume" : "pause"}`;
  await act(source, () => call("POST", path), `${q.queue} ${paused ? "resumed" : "paused"}`);
  await live.refresh();
}

/** The backpressure settings and state of a queue, as small chips. */
export function backpressureChips(q) {
  const c = q.config;
  const chips = [];
  if (q.refusing) chips.push(badge("refusing", "bad"));
  if (c.watermarks) {
    chips.push(h("span", { class: "chip", title: `Enqueue is refused above ${c.watermarks.high} waiting tasks until the queue is back at ${c.watermarks.low}` },
      `waiting ${compact(waiting(q))}/${compact(c.watermarks.high)} (low ${compact(c.watermarks.low)})`));
  }
  if (c.length_max !== null && c.length_max !== undefined) {
    chips.push(h("span", { class: "chip", title: `At ${c.length_max} waiting tasks enqueue ${c.overflow === "reject" ? "is refused" : "dead-letters the oldest"}` },
      `max ${compact(c.length_max)} ${c.overflow === "reject" ? "reject" : "drop oldest"}`));
  }
  if (c.rate_limit) {
    chips.push(h("span", { class: "chip", title: "Reservations per second over all workers (burst)" },
      `rate ${compact(c.rate_limit.rate)}/s ×${c.rate_limit.burst}`));
  }
  if (c.key_rate_limit) {
    chips.push(h("span", { class: "chip", title: "Reservations per second per limit key (burst)" },
      `key rate ${compact(c.key_rate_limit.rate)}/s ×${c.key_rate_limit.burst}`));
  }
  if (c.concurrency_max) {
    const full = q.counts.active >= c.concurrency_max;
    chips.push(h("span", { class: ["chip", full && "chip-warn"], title: "Tasks leased at once over all workers" },
      `active ${compact(q.counts.active)}/${compact(c.concurrency_max)}`));
  }
  if (c.key_concurrency_max) {
    chips.push(h("span", { class: "chip", title: "Tasks leased at once per limit key" },
      `key active ≤${compact(c.key_concurrency_max)}`));
  }
  if (c.ttl) chips.push(h("span", { class: "chip", title: "Tasks still waiting this long after enqueue are dead-lettered" }, `ttl ${duration(parseDuration(c.ttl))}`));
  return chips.length ? chips : [h("span", { class: "muted" }, "no limits")];
}

/** A bar of the queue's live tasks by state, widths relative to `largest`. */
function depthBar(q, largest) {
  const bar = h("div", { class: "depth-bar", title: DEPTH_STATES.map((st) => `${st} ${q.counts[st]}`).join(", ") });
  const total = DEPTH_STATES.reduce((sum, st) => sum + q.counts[st], 0);
  for (const st of DEPTH_STATES) {
    if (q.counts[st] === 0) continue;
    const part = h("span", { class: "depth-" + st });
    part.style.width = `${(100 * q.counts[st]) / Math.max(largest, 1)}%`;
    bar.append(part);
  }
  if (total === 0) bar.classList.add("depth-empty");
  return bar;
}

function card(label, value, attrs = {}) {
  return h("div", { class: "card", ...attrs }, h("div", { class: "card-label" }, label), h("div", { class: "card-value" }, value));
}

/** A row of the queue table, kept between readings so its button survives the updates. */
class QueueRow {
  constructor(live, name) {
    this.live = live;
    this.name = name;
    this.cells = {};
    this.pauseButton = button("Pause", () => togglePause(live, this.q, this.pauseButton), { attrs: { "data-action": "pause" } });
    const td = (key, cls) => (this.cells[key] = h("td", { class: cls, "data-col": key }));
    this.element = h("tr", { "data-queue": name },
      td("name", "name"),
      COUNT_STATES.map((st) => td(st, "num")),
      td("depth", "depth"),
      td("oldest", "num"),
      td("rate-enqueued", "num"),
      td("rate-completed", "num"),
      td("backpressure", "bp"),
      td("throttled", "num"),
      td("refused", "num"),
      h("td", { class: "actions" }, this.pauseButton));
  }

  update(q, largest, rates) {
    this.q = q;
    const c = this.cells;
    const link = `#/queues/${encodeURIComponent(q.queue)}`;
    replace(c.name, h("a", { href: link }, q.queue), q.config.paused ? badge("paused", "warn") : null);
    for (const st of COUNT_STATES) {
      const n = q.counts[st];
      replace(c[st], n === 0 ? h("span", { class: "zero" }, "0")
        : h("a", { href: `${link}?state=${st}`, class: st === "dead" ? "bad" : null }, count(n)));
    }
    replace(c.depth, depthBar(q, largest));
    c.oldest.textContent = q.oldest_ready_age ? duration(parseDuration(q.oldest_ready_age)) : "–";
    c["rate-enqueued"].textContent = rates ? perSecond(rates.enqueued) : "–";
    c["rate-completed"].textContent = rates ? perSecond(rates.completed) : "–";
    replace(c.backpressure, h("div", { class: "chips" }, backpressureChips(q)));
    const t = q.totals;
    replace(c.throttled, h("span", { title: "reserve calls held back by a rate limit / by a concurrency limit" }, `${compact(t.throttled_rate)} / ${compact(t.throttled_concurrency)}`));
    replace(c.refused, h("span", { title: "enqueues refused: queue full / above the high watermark", class: t.rejected_full + t.rejected_overloaded > 0 ? "warn" : null },
      `${compact(t.rejected_full)} / ${compact(t.rejected_overloaded)}`));
    this.pauseButton.textContent = q.config.paused ? "Resume" : "Pause";
    this.pauseButton.dataset.action = q.config.paused ? "resume" : "pause";
    this.pauseButton.className = q.config.paused ? "btn btn-small btn-primary" : "btn btn-small";
  }
}

export function mount(root, _params, live) {
  const summary = h("section", { class: "cards", id: "summary" });
  const throughput = throughputChart("chart-throughput");
  const latencyOf = latencyChart("chart-latency");
  const body = h("tbody", {});
  const rows = new Map();
  const table = h("table", { class: "grid-table", id: "queues" },
    h("thead", {}, h("tr", {},
      h("th", {}, "Queue"),
      COUNT_STATES.map((st) => h("th", { class: "num" }, st)),
      h("th", { title: "Scheduled, ready, active and retrying tasks, relative to the deepest queue" }, "Depth"),
      h("th", { class: "num", title: "Age of the oldest ready task" }, "Oldest ready"),
      h("th", { class: "num" }, "Enq/s"),
      h("th", { class: "num" }, "Done/s"),
      h("th", {}, "Backpressure"),
      h("th", { class: "num", title: "Reserve calls held back by a rate limit / by a concurrency limit" }, "Throttled"),
      h("th", { class: "num", title: "Enqueues refused: queue full / above the high watermark" }, "Refused"),
      h("th", {}, ""))),
    body);
  replace(root,
    h("div", { class: "page-head" }, h("h1", {}, "Queues")),
    summary,
    h("section", { class: "charts" }, throughput.element, latencyOf.element),
    h("section", { class: "panel" }, h("div", { class: "table-wrap" }, table)));

  function update() {
    updateCharts(live, ALL, throughput, latencyOf);
    if (!live.latest) {
      replace(body, emptyRow(16, live.error ? "Could not read the queues." : "Loading…"));
      return;
    }
    const queues = [...live.latest.queues].sort((a, b) => a.queue.localeCompare(b.queue));
    const sum = (f) => queues.reduce((n, q) => n + f(q), 0);
    const latest = (key) => {
      const points = live.points(key);
      return points.length ? points[points.length - 1].values : null;
    };
    const all = latest(ALL);
    replace(summary,
      card("Queues", `${queues.length}`, { "data-card": "queues" }),
      card("Paused", count(sum((q) => (q.config.paused ? 1 : 0))), { "data-card": "paused" }),
      card("Refusing", count(sum((q) => (q.refusing ? 1 : 0))), { "data-card": "refusing" }),
      card("Waiting", count(sum(waiting)), { "data-card": "waiting" }),
      card("Active", count(sum((q) => q.counts.active)), { "data-card": "active" }),
      card("Dead letters", count(sum((q) => q.counts.dead)), { "data-card": "dead" }),
      card("Enqueued/s", all ? perSecond(all.enqueued) : "–", { "data-card": "enqueued" }),
      card("Completed/s", all ? perSecond(all.completed) : "–", { "data-card": "completed" }));
    if (queues.length === 0) {
      rows.clear();
      replace(body, emptyRow(16, "No queues yet. A queue appears with its first task or configuration."));
      return;
    }
    const largest = Math.max(...queues.map((q) => DEPTH_STATES.reduce((n, st) => n + q.counts[st], 0)));
    const ordered = queues.map((q) => {
      let row = rows.get(q.queue);
      if (!row) {
        row = new QueueRow(live, q.queue);
        rows.set(q.queue, row);
      }
      row.update(q, largest, latest(q.queue));
      return row;
    });
    for (const name of rows.keys()) {
      if (!queues.some((q) => q.queue === name)) rows.delete(name);
    }
    // Re-appending rows already in place keeps them (and the button under the pointer).
    const current = [...body.children];
    if (current.length !== ordered.length || ordered.some((row, i) => current[i] !== row.element)) {
      replace(body, ordered.map((row) => row.element));
    }
  }

  update();
  return { update, title: "Queues" };
}
