import { ORDER_WORK_MS } from './app/orders.js'
import type { Framework, RunFigures, Timeline } from './run.js'
import { LOAD } from './run.js'

/** How the baseline shuts down, per framework: what its docs show. */
export function baselineName(framework: Framework): string {
  return framework === 'fastify' ? 'app.close()' : 'server.close()'
}

interface Style {
  bold(text: string): string
  good(text: string): string
  bad(text: string): string
}

const plain: Style = { bold: (t) => t, good: (t) => t, bad: (t) => t }
const ansi: Style = {
  bold: (t) => `\x1b[1m${t}\x1b[22m`,
  good: (t) => `\x1b[32m${t}\x1b[39m`,
  bad: (t) => `\x1b[31m${t}\x1b[39m`,
}

type Cell = { text: string; tone?: 'good' | 'bad' }
type Row = { section?: string; label: string; cells: [Cell, Cell] } | { blank: true }

// A count where anything above zero is a failure.
const failures = (n: number): Cell => ({ text: String(n), tone: n > 0 ? 'bad' : 'good' })
const neutral = (n: number): Cell => ({ text: String(n) })

function exitTime(figures: RunFigures): Cell {
  const seconds = `${(figures.exit.signalToExitMs / 1000).toFixed(2)} s`
  return figures.exit.killed ? { text: `${seconds} (SIGKILLed)`, tone: 'bad' } : { text: seconds }
}

function exitCode(figures: RunFigures): Cell {
  if (figures.exit.code === null) return { text: `none (${figures.exit.signal})`, tone: 'bad' }
  return { text: String(figures.exit.code), tone: figures.exit.code === 0 ? 'good' : 'bad' }
}

/**
 * Renders the side-by-side table. Plain text unless `color` (stdout is a TTY and NO_COLOR unset);
 * rows that are zero in both columns and rarely happen (other statuses, timeouts) are left out.
 */
export function renderTable(
  framework: Framework,
  timeline: Timeline,
  runs: { lameduck: RunFigures; baseline: RunFigures },
  color: boolean,
): string {
  const style = color ? ansi : plain
  const { lameduck: l, baseline: b } = runs
  const both = (pick: (f: RunFigures) => number, cell: (n: number) => Cell): [Cell, Cell] => [
    cell(pick(l)),
    cell(pick(b)),
  ]
  const rare = (pick: (f: RunFigures) => number) => pick(l) > 0 || pick(b) > 0

  const rows: Row[] = [
    {
      section: 'requests sent before SIGTERM',
      label: 'sent',
      cells: both((f) => f.beforeSignal.sent, neutral),
    },
    { label: 'completed', cells: both((f) => f.beforeSignal.completed, neutral) },
    ...(rare((f) => f.beforeSignal.refused503)
      ? [{ label: 'answered 503', cells: both((f) => f.beforeSignal.refused503, failures) }]
      : []),
    { label: 'lost (no answer)', cells: both((f) => f.beforeSignal.lost, failures) },
    { label: 'truncated', cells: both((f) => f.beforeSignal.truncated, failures) },
    ...(rare((f) => f.beforeSignal.otherStatus)
      ? [{ label: 'other status', cells: both((f) => f.beforeSignal.otherStatus, failures) }]
      : []),
    { blank: true },
    {
      section: 'requests sent after SIGTERM',
      label: 'sent',
      cells: both((f) => f.afterSignal.sent, neutral),
    },
    { label: 'served, connection kept open', cells: both((f) => f.afterSignal.servedKeepAlive, neutral) },
    { label: 'served with Connection: close', cells: both((f) => f.afterSignal.servedClose, neutral) },
    { label: 'clean 503s', cells: both((f) => f.afterSignal.clean503, neutral) },
    { label: 'connection resets', cells: both((f) => f.afterSignal.resets, failures) },
    { label: 'truncated', cells: both((f) => f.afterSignal.truncated, failures) },
    { label: 'refused connections', cells: both((f) => f.afterSignal.refusedConnections, neutral) },
    ...(rare((f) => f.afterSignal.timeouts)
      ? [{ label: 'no answer in 10 s', cells: both((f) => f.afterSignal.timeouts, failures) }]
      : []),
    ...(rare((f) => f.afterSignal.otherStatus)
      ? [{ label: 'other status', cells: both((f) => f.afterSignal.otherStatus, failures) }]
      : []),
    { blank: true },
    {
      section: 'orders (journal)',
      label: 'acknowledged (201)',
      cells: both((f) => f.writes.acknowledged, neutral),
    },
    { label: 'in the journal after exit', cells: both((f) => f.writes.inJournal, neutral) },
    { label: 'lost writes', cells: both((f) => f.writes.lost, failures) },
    {
      label: 'receipts by background jobs',
      cells: [l, b].map((f) => ({
        text: `${f.writes.receipts} of ${f.writes.journalOrders}`,
        tone: f.writes.receipts < f.writes.journalOrders ? 'bad' : 'good',
      })) as [Cell, Cell],
    },
    { blank: true },
    { section: 'exit', label: 'SIGTERM → exit', cells: [exitTime(l), exitTime(b)] },
    { label: 'exit code', cells: [exitCode(l), exitCode(b)] },
  ]

  const heads = ['lameduck', baselineName(framework)] as const
  const labelWidth = Math.max(...rows.map((r) => ('blank' in r ? 0 : r.label.length + 2)), 0)
  const sectionWidth = Math.max(...rows.map((r) => ('section' in r && r.section ? r.section.length : 0)))
  const colWidth = Math.max(
    ...heads.map((h) => h.length),
    ...rows.flatMap((r) => ('blank' in r ? [] : r.cells.map((c) => c.text.length))),
  )
  const paint = (cell: Cell) => {
    const text = cell.text.padStart(colWidth)
    return cell.tone === 'bad' ? style.bad(text) : cell.tone === 'good' ? style.good(text) : text
  }

  const lines: string[] = []
  lines.push(
    style.bold(`lameduck demo: ${framework}, the same app shut down two ways, measured live`),
    `load: ${LOAD.orderClients} keep-alive connections sending POST /orders (${ORDER_WORK_MS} ms each), ` +
      `${LOAD.fastClients} sending GET /fast every ${LOAD.fastIntervalMs} ms`,
    `SIGTERM ${(timeline.signalAtMs / 1000).toFixed(1)} s into the load, which goes on; ` +
      `SIGKILL ${(timeline.graceMs / 1000).toFixed(1)} s later if still running (the orchestrator's grace period); ` +
      `lameduck timeoutMs ${timeline.timeoutMs}, idleGraceMs ${timeline.idleGraceMs}`,
    '',
    `${' '.repeat(sectionWidth + 2 + labelWidth)}  ${heads.map((h) => style.bold(h.padStart(colWidth))).join('  ')}`,
  )
  for (const row of rows) {
    if ('blank' in row) {
      lines.push('')
      continue
    }
    const section = (row.section ?? '').padEnd(sectionWidth)
    lines.push(
      `${row.section ? style.bold(section) : section}  ${row.label.padEnd(labelWidth)}  ${row.cells.map(paint).join('  ')}`,
    )
  }
  lines.push(
    '',
    `lameduck's report: ${l.summary ?? '(no report line: see --verbose)'}`,
    `${baselineName(framework)}: ${verdict(b)}`,
  )
  return lines.join('\n')
}

/** One sentence on what the baseline run cost, from its figures. */
export function verdict(f: RunFigures): string {
  const problems = [
    f.beforeSignal.lost + f.afterSignal.resets + f.afterSignal.timeouts > 0
      ? `${f.beforeSignal.lost + f.afterSignal.resets + f.afterSignal.timeouts} request(s) lost to resets`
      : '',
    f.beforeSignal.truncated + f.afterSignal.truncated > 0
      ? `${f.beforeSignal.truncated + f.afterSignal.truncated} truncated`
      : '',
    f.writes.lost > 0 ? `${f.writes.lost} acknowledged order(s) missing from the journal` : '',
    f.writes.receipts < f.writes.journalOrders
      ? `${f.writes.journalOrders - f.writes.receipts} background job(s) never finished`
      : '',
    f.exit.killed
      ? `still running ${(f.exit.signalToExitMs / 1000).toFixed(1)} s after SIGTERM, so it was SIGKILLed`
      : '',
  ].filter(Boolean)
  return problems.length > 0 ? `${problems.join('; ')}.` : `nothing lost; exited with code ${f.exit.code}.`
}
