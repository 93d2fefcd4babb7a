// The arithmetic behind the live charts: rates from two samples of running totals, and
// latency percentiles from two samples of a histogram. Pure functions, no DOM; the browser
// test imports this module and checks them on known data.
//
// A histogram is the `start_latency` of the queue statistics:
//   {"bounds_seconds": [b0, b1, ..., bn-1], "counts": [c0, ..., cn], "sum_seconds": s}
// where counts[i] counts observations in (bounds[i-1], bounds[i]] (bounds[-1] = 0) and the
// last count is the +Inf bucket. Counts are per bucket, not cumulative, and only grow.

/** Per second from two readings of a running total; null without a usable pair. */
export function rate(previous, current, seconds) {
  if (previous === undefined || previous === null || current === undefined || current === null) {
    return null;
  }
  if (!(seconds > 0)) return null;
  // A total that went down was reset (a new broker behind the server): no rate this time.
  if (current < previous) return null;
  return (current - previous) / seconds;
}

/** Every dead letter a queue ever had, over all reasons. */
export function deadTotal(totals) {
  return Object.values(totals.dead || {}).reduce((sum, n) => sum + n, 0);
}

function sameBounds(a, b) {
  return a.length === b.length && a.every((bound, i) => bound === b[i]);
}

function wellFormed(histogram) {
  return Boolean(histogram) && Array.isArray(histogram.bounds_seconds) &&
    Array.isArray(histogram.counts) &&
    histogram.counts.length === histogram.bounds_seconds.length + 1;
}

/**
 * What was observed between two readings of a histogram: the difference of the counts,
 * bucket by bucket. Null when either reading is missing or malformed, or the buckets changed.
 * A count that went down means the histogram was reset; then the current reading is all that
 * is known to have happened since.
 */
export function histogramDelta(previous, current) {
  if (!wellFormed(previous) || !wellFormed(current)) return null;
  if (!sameBounds(previous.bounds_seconds, current.bounds_seconds)) return null;
  const counts = current.counts.map((n, i) => n - previous.counts[i]);
  if (counts.some((n) => n < 0)) return current;
  return {
    bounds_seconds: current.bounds_seconds,
    counts,
    sum_seconds: current.sum_seconds - previous.sum_seconds,
  };
}

/** The bucket-wise sum of histograms with the same buckets (those with others are left out). */
export function mergeHistograms(histograms) {
  const usable = histograms.filter(wellFormed);
  if (usable.length === 0) return null;
  const bounds = usable[0].bounds_seconds;
  const counts = new Array(bounds.length + 1).fill(0);
  let sum = 0;
  for (const histogram of usable) {
    if (!sameBounds(histogram.bounds_seconds, bounds)) continue;
    histogram.counts.forEach((n, i) => { counts[i] += n; });
    sum += histogram.sum_seconds || 0;
  }
  return { bounds_seconds: bounds, counts, sum_seconds: sum };
}

/** How many observations a histogram holds. */
export function observations(histogram) {
  return wellFormed(histogram) ? histogram.counts.reduce((sum, n) => sum + n, 0) : 0;
}

/**
 * The q-quantile (0 ≤ q ≤ 1) of a histogram, as Prometheus's histogram_quantile estimates it:
 * find the bucket holding the observation of rank q × total, and interpolate linearly inside
 * it (the first bucket starts at 0). A quantile in the +Inf bucket is reported as the highest
 * finite bound, the most the histogram can say. Null when the histogram is empty.
 */
export function quantile(histogram, q) {
  const total = observations(histogram);
  if (total === 0) return null;
  const bounds = histogram.bounds_seconds;
  const rank = q * total;
  let below = 0;
  for (let i = 0; i < histogram.counts.length; i++) {
    const inBucket = histogram.counts[i];
    if (inBucket > 0 && below + inBucket >= rank) {
      if (i === bounds.length) return bounds.length > 0 ? bounds[bounds.length - 1] : null;
      const lower = i === 0 ? 0 : bounds[i - 1];
      const upper = bounds[i];
      return lower + (upper - lower) * Math.max(0, rank - below) / inBucket;
    }
    below += inBucket;
  }
  return null;
}

/** p50, p90 and p99 of a histogram, each null when it is empty. */
export function percentiles(histogram) {
  return { p50: quantile(histogram, 0.5), p90: quantile(histogram, 0.9), p99: quantile(histogram, 0.99) };
}
