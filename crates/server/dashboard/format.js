// How numbers, durations and times are written on the page.

const grouped = new Intl.NumberFormat("en-US");

/** A count with thousands separators: 1,234,567. */
export function count(n) {
  return n === null || n === undefined ? "–" : grouped.format(n);
}

/** A number for an axis or a small space: 950, 1.2k, 3.4M. */
export function compact(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  const abs = Math.abs(n);
  if (abs >= 1e9) return trim(n / 1e9) + "G";
  if (abs >= 1e6) return trim(n / 1e6) + "M";
  if (abs >= 1e3) return trim(n / 1e3) + "k";
  if (abs >= 10 || abs === 0) return String(Math.round(n));
  return trim(n);
}

function trim(x) {
  return (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2))
    .replace(/\.0+$/, "")
    .replace(/(\.\d*?)0+$/, "$1");
}

/** A rate per second: "12.5/s". */
export function perSecond(n) {
  return n === null || n === undefined ? "–" : compact(n) + "/s";
}

const UNITS_MS = { ms: 1, s: 1000, m: 60000, h: 3600000, d: 86400000 };

/** Milliseconds in a wire duration ("30s", "250ms", or a number of milliseconds); null if absent. */
export function parseDuration(text) {
  if (text === null || text === undefined) return null;
  if (typeof text === "number") return text;
  const match = /^(\d+)(ms|s|m|h|d)$/.exec(text);
  return match ? Number(match[1]) * UNITS_MS[match[2]] : null;
}

/** A duration for people, two units at most: "250ms", "42s", "3m 20s", "2h 5m", "4d 1h". */
export function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return Math.round(ms) + "ms";
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  const parts = [[Math.floor(s / 86400), "d"], [Math.floor(s / 3600) % 24, "h"],
    [Math.floor(s / 60) % 60, "m"], [s % 60, "s"]];
  const first = parts.findIndex(([n]) => n > 0);
  return parts.slice(first, first + 2).filter(([n]) => n > 0).map(([n, u]) => n + u).join(" ");
}

/** A latency in seconds, with a unit that keeps 2-3 significant digits: 85µs, 2.4ms, 1.20s. */
export function latency(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  if (seconds === 0) return "0";
  if (seconds < 1e-3) return (seconds * 1e6).toFixed(0) + "µs";
  if (seconds < 1) return trim(seconds * 1e3) + "ms";
  if (seconds < 60) return trim(seconds) + "s";
  return duration(seconds * 1000);
}

const pad = (n) => String(n).padStart(2, "0");

/** A timestamp (milliseconds since the epoch) in local time: 2026-11-22 14:03:05. */
export function time(ms) {
  if (ms === null || ms === undefined) return "–";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** How far a timestamp is from now: "3m ago", "in 20s". */
export function relative(ms, now = Date.now()) {
  if (ms === null || ms === undefined) return "";
  const delta = ms - now;
  if (Math.abs(delta) < 1000) return "now";
  return delta < 0 ? duration(-delta) + " ago" : "in " + duration(delta);
}

/** A task id short enough for a table: the start (time) and the end (random part). */
export function shortId(id) {
  return id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id;
}

/** "max_attempts" → "max attempts". */
export function words(identifier) {
  return identifier ? identifier.replaceAll("_", " ") : "–";
}
