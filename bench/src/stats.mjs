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
