// A small time-series line chart in SVG: a sliding window of samples, a y axis from zero
// with round ticks, gaps where a value is unknown, a legend with the latest values (or the
// values under the pointer), and a "no data" note when there is nothing to draw.

import { h, s, replace } from "./dom.js";
import { compact, latency } from "./format.js";

const HEIGHT = 168;
const MARGIN = { left: 52, right: 10, top: 10, bottom: 22 };
const MIN_SPAN_MS = 60000;

/** A round step so that about `count` steps cover `span`: 1, 2 or 5 times a power of ten. */
export function niceStep(span, count) {
  if (!(span > 0)) return 1;
  const raw = span / count;
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const fraction = raw / power;
  return (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
}

export class LineChart {
  /**
   * `series`: [{key, label}] in drawing order; `format(value)` writes a value for the axis
   * and legend; `windowMs`: the most time the x axis spans.
   */
  constructor({ title, series, format, windowMs = 300000, id }) {
    this.series = series;
    this.format = format;
    this.windowMs = windowMs;
    this.points = [];
    this.empty = "no data";
    this.hover = null;
    this.svg = s("svg", { class: "chart-plot", height: HEIGHT, role: "img", "aria-label": title });
    this.legend = h("div", { class: "chart-legend" });
    this.element = h("figure", { class: "chart", id },
      h("figcaption", {}, h("span", { class: "chart-title" }, title), this.legend),
      this.svg);
    this.svg.addEventListener("mousemove", (event) => this.pointAt(event));
    this.svg.addEventListener("mouseleave", () => { this.hover = null; this.draw(); });
    new ResizeObserver(() => this.draw()).observe(this.svg);
  }

  /** Replaces the samples ([{t, values: {key: number|null}}], oldest first) and redraws. */
  update(points, empty = "no data") {
    this.points = points;
    this.empty = empty;
    this.draw();
  }

  pointAt(event) {
    if (this.points.length === 0) return;
    const box = this.svg.getBoundingClientRect();
    const x = event.clientX - box.left;
    let best = null;
    for (const point of this.points) {
      const distance = Math.abs(this.x(point.t) - x);
      if (!best || distance < best.distance) best = { point, distance };
    }
    this.hover = best ? best.point : null;
    this.draw();
  }

  x(t) {
    const width = this.width - MARGIN.left - MARGIN.right;
    return MARGIN.left + width * (1 - (this.now - t) / this.span);
  }

  draw() {
    this.width = this.svg.clientWidth || 600;
    this.now = this.points.length ? this.points[this.points.length - 1].t : Date.now();
    // The x axis spans the history there is, from one minute up to the whole window, so a
    // page just opened does not draw its first seconds in a corner.
    const oldest = this.points.length ? this.points[0].t : this.now;
    this.span = Math.min(this.windowMs, Math.max(MIN_SPAN_MS, this.now - oldest));
    const visible = this.points.filter((p) => this.now - p.t <= this.span);
    const values = visible.flatMap((p) => this.series.map((ser) => p.values[ser.key]))
      .filter((v) => v !== null && v !== undefined && Number.isFinite(v));
    const top = HEIGHT - MARGIN.bottom;
    const step = niceStep(Math.max(...values, 0) || 1, 4);
    const yMax = Math.max(step, Math.ceil((Math.max(...values, 0) || 1) / step) * step);
    const y = (v) => top - (top - MARGIN.top) * (v / yMax);
    const nodes = [];
    for (let v = 0; v <= yMax + step / 2; v += step) {
      nodes.push(s("line", { class: "grid", x1: MARGIN.left, x2: this.width - MARGIN.right, y1: y(v), y2: y(v) }));
      nodes.push(s("text", { class: "axis", x: MARGIN.left - 6, y: y(v) + 4, "text-anchor": "end" }, this.format(v)));
    }
    const tickMs = this.span >= 240000 ? 60000 : this.span >= 120000 ? 30000 : 15000;
    for (let ago = 0; ago <= this.span; ago += tickMs) {
      const x = this.x(this.now - ago);
      const label = ago === 0 ? "now" : ago % 60000 === 0 ? `−${ago / 60000}m` : `−${ago / 1000}s`;
      nodes.push(s("text", { class: "axis", x, y: HEIGHT - 6, "text-anchor": ago === 0 ? "end" : "middle" }, label));
    }
    this.series.forEach((ser, i) => {
      let d = "";
      let open = false;
      let most = 0;
      for (const p of visible) {
        const v = p.values[ser.key];
        if (v === null || v === undefined || !Number.isFinite(v)) { open = false; continue; }
        most = Math.max(most, v);
        const point = `${this.x(p.t).toFixed(1)},${y(v).toFixed(1)}`;
        // A lone point is a zero-length segment, drawn as a dot by the round line caps.
        d += open ? `L${point}` : `M${point}L${point}`;
        open = true;
      }
      if (d) nodes.push(s("path", { class: `line series-${i}`, d, "data-series": ser.key, "data-max": most }));
    });
    if (values.length === 0) {
      nodes.push(s("text", { class: "chart-empty", x: (MARGIN.left + this.width) / 2, y: HEIGHT / 2, "text-anchor": "middle" }, this.empty));
    }
    if (this.hover) {
      const x = this.x(this.hover.t);
      nodes.push(s("line", { class: "cursor", x1: x, x2: x, y1: MARGIN.top, y2: top }));
    }
    replace(this.svg, nodes);
    this.drawLegend(values.length === 0);
  }

  drawLegend(empty) {
    const shown = this.hover || this.points[this.points.length - 1];
    const items = this.series.map((ser, i) => {
      const v = shown ? shown.values[ser.key] : null;
      return h("span", { class: "legend-item", "data-series": ser.key },
        h("i", { class: `swatch series-${i}` }),
        ser.label + " ",
        h("b", {}, empty || v === null || v === undefined ? "–" : this.format(v)));
    });
    if (this.hover) {
      items.unshift(h("span", { class: "legend-when" }, `${Math.round((this.now - this.hover.t) / 1000)}s ago`));
    }
    replace(this.legend, items);
  }
}

/** The throughput chart: enqueued, completed and dead-lettered per second. */
export function throughputChart(id) {
  return new LineChart({
    id,
    title: "Throughput (tasks/s)",
    series: [
      { key: "enqueued", label: "enqueued" },
      { key: "completed", label: "completed" },
      { key: "dead", label: "dead-lettered" },
    ],
    format: compact,
  });
}

/** The start-latency chart: p50, p90 and p99 of the time from due to reserved. */
export function latencyChart(id) {
  return new LineChart({
    id,
    title: "Start latency (due → reserved)",
    series: [
      { key: "p50", label: "p50" },
      { key: "p90", label: "p90" },
      { key: "p99", label: "p99" },
    ],
    format: latency,
  });
}

/** Redraws a throughput and a latency chart with `live`'s series `key`. */
export function updateCharts(live, key, throughput, latencyOf) {
  const points = live.points(key);
  throughput.update(points, points.length ? "no data" : "no data yet: rates need two readings");
  latencyOf.update(points, live.hasLatency
    ? "no data: no task started in this window"
    : "no data: this server does not report start latency");
}
