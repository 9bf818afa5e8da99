// Medians, spreads and Markdown tables. Noisy machines: quote medians with their min–max, never one run.

/** Median of the finite numbers in `values`, or NaN when there are none. */
export function median(values) {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b)
  if (sorted.length === 0) return Number.NaN
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/** `{ median, min, max, n }` of the finite numbers in `values`. */
export function spread(values) {
  const finite = values.filter(Number.isFinite)
  return {
    median: median(finite),
    min: finite.length ? Math.min(...finite) : Number.NaN,
    max: finite.length ? Math.max(...finite) : Number.NaN,
    n: finite.length,
  }
}

/**
 * An interval for the median of `values` that assumes nothing about their distribution: the k-th
 * smallest and k-th largest value, with the largest k whose coverage, 1 − 2·P(B < k) for B the number
 * of values below the true median (Binomial(n, ½)), is still at least `confidence`. With too few values
 * for that, k = 1 (min–max) and whatever coverage that has (5 values: 93.75 %; 1 value: 0).
 */
export function medianInterval(values, confidence = 0.9) {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b)
  const n = sorted.length
  if (n === 0) return { low: Number.NaN, high: Number.NaN, coverage: 0 }
  // P(B = i) for i = 0…n, built up from P(B = 0) = 2^-n.
  const pmf = [2 ** -n]
  for (let i = 1; i <= n; i++) pmf.push((pmf[i - 1] * (n - i + 1)) / i)
  let k = 1
  let below = pmf[0] // P(B < k)
  while (2 * (k + 1) <= n + 1 && 1 - 2 * (below + pmf[k]) >= confidence) {
    below += pmf[k]
    k++
  }
  return { low: sorted[k - 1], high: sorted[n - k], coverage: Math.max(0, 1 - 2 * below) }
}

/**
 * Whether `values` (per-round ratios) show a target `≤ limit` met, missed or neither: met when the
 * median's interval lies at or below it, not met when it lies above, otherwise not decided — the
 * rounds disagree more than the gap.
 */
export function verdict(values, limit) {
  const { low, high, coverage } = medianInterval(values)
  if (coverage === 0) return `one round: ${median(values) <= limit ? 'met' : 'not met'}, not a verdict`
  const interval = `the median's ${(coverage * 100).toFixed(coverage >= 0.995 ? 0 : 1)} % interval is ${low.toFixed(3)}–${high.toFixed(3)}×`
  if (high <= limit) return `met in this run; ${interval}`
  if (low > limit) return `not met in this run; ${interval}`
  return `not decided by this run; ${interval}`
}

/** `1,234` style, `digits` decimals; `–` for NaN. */
export function fmt(value, digits = 0) {
  if (!Number.isFinite(value)) return '–'
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

/** `median (min–max)`, or just the value when every run agreed or there was one run. */
export function fmtSpread(values, digits = 0, unit = '') {
  const { median: mid, min, max, n } = spread(values)
  if (n === 0) return '–'
  const head = `${fmt(mid, digits)}${unit}`
  return n === 1 || fmt(min, digits) === fmt(max, digits)
    ? head
    : `${head} (${fmt(min, digits)}–${fmt(max, digits)})`
}

/** Shares (0.93 for 93 %) as `93% (88–97)`. */
export function fmtPercentSpread(shares) {
  return fmtSpread(
    shares.map((share) => share * 100),
    0,
    '%',
  )
}

/** The overhead section's load `mode` as a table cell (`short`) or in a sentence. */
export function modeLabel(mode, short = false) {
  if (mode !== 'close') return 'keep-alive'
  return short ? 'new per request' : 'new connection per request'
}

/** A ratio as `1.013×`. */
export function fmtRatio(value) {
  return Number.isFinite(value) ? `${value.toFixed(3)}×` : '–'
}

/** A ratio spread as `1.013× (0.990–1.040)`. */
export function fmtRatioSpread(values) {
  const { median: mid, min, max, n } = spread(values)
  if (n === 0) return '–'
  return n === 1 ? fmtRatio(mid) : `${fmtRatio(mid)} (${min.toFixed(3)}–${max.toFixed(3)})`
}

/** A Markdown table: `header` is a list of column titles, `rows` a list of lists of cells. */
export function table(header, rows) {
  const cells = [header, ...rows].map((row) => row.map((cell) => String(cell).replaceAll('|', '\\|')))
  const widths = header.map((_, column) => Math.max(3, ...cells.map((row) => row[column]?.length ?? 0)))
  const line = (row) => `| ${row.map((cell, column) => cell.padEnd(widths[column])).join(' | ')} |`
  return [
    line(cells[0]),
    `| ${widths.map((width) => '-'.repeat(width)).join(' | ')} |`,
    ...cells.slice(1).map(line),
  ].join('\n')
}

/** Counts values: `{ 200: 3, reset: 1 }` → `200×3, reset×1`. */
export function fmtCounts(counts) {
  const entries = Object.entries(counts).filter(([, count]) => count > 0)
  return entries.length === 0 ? '–' : entries.map(([key, count]) => `${key}×${count}`).join(', ')
}
