// Live updates: every INTERVAL_MS the page reads every queue's statistics (one call,
// GET v1/queues) and keeps a few minutes of derived series per queue and for all queues
// together: enqueued, completed and dead-lettered per second (from the growth of the running
// totals between two readings) and the start-latency percentiles (from the growth of the
// `start_latency` histogram between two readings). Views subscribe and redraw on each reading.

import { call } from "./api.js";
import { deadTotal, histogramDelta, mergeHistograms, percentiles, rate } from "./stats.js";

/** How often the statistics are read. */
export const INTERVAL_MS = 2000;
/** How much history the charts keep. */
export const WINDOW_MS = 300000;
/** The series key of all queues together. */
export const ALL = "*";

const ZERO_TOTALS = { enqueued: 0, completed: 0, dead: {} };

export class Live {
  constructor() {
    this.listeners = new Set();
    /** The latest reading: {t, queues: [QueueStats]}, or null before the first. */
    this.latest = null;
    /** The error of the latest reading, or null. */
    this.error = null;
    /** Whether any queue reports `start_latency` (servers before it do not). */
    this.hasLatency = false;
    this.paused = false;
    this.series = new Map();
    this.running = null;
    this.again = false;
    this.timer = null;
  }

  /** Calls `listener(live)` after every reading; returns the function that stops it. */
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The samples of a queue's series (or ALL's): [{t, values}], oldest first. */
  points(key) {
    return this.series.get(key) || [];
  }

  /** The latest statistics of one queue, or undefined. */
  queue(name) {
    return this.latest ? this.latest.queues.find((q) => q.queue === name) : undefined;
  }

  /** Starts reading every INTERVAL_MS. */
  start() {
    this.refresh();
  }

  /** Stops or restarts the periodic readings. */
  setPaused(paused) {
    this.paused = paused;
    if (paused) {
      clearTimeout(this.timer);
      this.notify();
    } else {
      this.refresh();
    }
  }

  /** Reads now (after an action changed something), then every INTERVAL_MS again. */
  async refresh() {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    clearTimeout(this.timer);
    this.running = this.read();
    await this.running;
    this.running = null;
    if (this.again) {
      this.again = false;
      return this.refresh();
    }
    if (!this.paused) this.timer = setTimeout(() => this.refresh(), INTERVAL_MS);
    return undefined;
  }

  async read() {
    try {
      const answer = await call("GET", "v1/queues");
      this.record(answer.queues, Date.now());
      this.error = null;
    } catch (error) {
      this.error = error;
    }
    this.notify();
  }

  notify() {
    for (const listener of this.listeners) {
      try {
        listener(this);
      } catch (failure) {
        console.error(failure);
      }
    }
  }

  /** Adds one reading of every queue's statistics, taken at `t` (ms). */
  record(queues, t) {
    const previous = this.latest;
    this.latest = { t, queues };
    this.hasLatency = queues.some((q) => q.start_latency);
    if (!previous) return;
    const seconds = (t - previous.t) / 1000;
    const before = new Map(previous.queues.map((q) => [q.queue, q]));
    const all = { enqueued: null, completed: null, dead: null };
    const deltas = [];
    for (const q of queues) {
      // A queue that appeared since the last reading was created meanwhile: it starts at zero.
      const p = before.get(q.queue) || { totals: ZERO_TOTALS, start_latency: null };
      const values = {
        enqueued: rate(p.totals.enqueued, q.totals.enqueued, seconds),
        completed: rate(p.totals.completed, q.totals.completed, seconds),
        dead: rate(deadTotal(p.totals), deadTotal(q.totals), seconds),
      };
      const delta = histogramDelta(p.start_latency, q.start_latency);
      if (delta) deltas.push(delta);
      Object.assign(values, percentiles(delta));
      for (const key of Object.keys(all)) {
        if (values[key] !== null) all[key] = (all[key] || 0) + values[key];
      }
      this.push(q.queue, t, values);
    }
    Object.assign(all, percentiles(mergeHistograms(deltas)));
    this.push(ALL, t, all);
    const present = new Set(queues.map((q) => q.queue));
    for (const key of this.series.keys()) {
      if (key !== ALL && !present.has(key)) this.series.delete(key);
    }
  }

  push(key, t, values) {
    const points = this.series.get(key) || [];
    points.push({ t, values });
    while (points.length && t - points[0].t > WINDOW_MS) points.shift();
    this.series.set(key, points);
  }
}
