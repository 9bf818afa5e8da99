import type { RunResult } from './rolling.ts'

/** The issue's bound on an old process's exit: drainDelayMs + this, measured from SIGTERM. */
export const EXIT_MARGIN_MS = 250
/** The issue's bound on nginx's failed upstream attempts per restarted instance. */
export const MAX_FAILED_ATTEMPTS_PER_RESTART = 3

/** One run judged against issue 10: a table row, and every requirement it broke. */
export interface Verdict {
  readonly row: Readonly<Record<string, string>>
  readonly violations: readonly string[]
  /** Figures the cell summary adds up. */
  readonly totals: {
    readonly requests: number
    readonly posts: number
    readonly clientErrors: number
    readonly retried: number
    readonly maxExitMs: number
    readonly maxFailedPerRestart: number
  }
}

/** Judges one run: (1)/(2) client errors and proxy retries, (3) each old process's exit. */
export function judge(result: RunResult): Verdict {
  const { load, restarts, cell } = result
  const violations: string[] = []
  const ok = load.outcomes.ok ?? 0
  const clientErrors = load.requests - ok
  const postErrors = load.byMethod.POST.sent - load.byMethod.POST.ok
  if (load.stoppedBy !== 'parent')
    violations.push(`the load stopped by its ${load.stoppedBy} before the rolling restart ended`)
  if (clientErrors > 0) {
    const kinds = Object.entries(load.outcomes)
      .filter(([outcome]) => outcome !== 'ok')
      .map(([outcome, n]) => `${n} × ${outcome}`)
    violations.push(`${clientErrors} client error(s) (${postErrors} on POSTs): ${kinds.join(', ')}`)
  }

  const row: Record<string, string> = {
    run: String(result.run),
    requests: String(load.requests),
    POSTs: String(load.byMethod.POST.sent),
    'client errors': String(clientErrors),
    'new conns': String(load.connectionsOpened),
  }

  let retried = 0
  let maxFailedPerRestart = 0
  if (result.haproxy) {
    const log = result.haproxy
    retried = log.retried
    row.retried = String(log.retried)
    row['5xx (log)'] = String(log.errors5xx)
    if (log.retried > 0)
      violations.push(
        `HAProxy retried ${log.retried} request(s) (${log.redispatched} redispatched): ${log.samples.slice(0, 5).join(' | ')}`,
      )
    if (log.errors5xx > 0) {
      // A drain shows as "wrong status" (503) then "Connection refused"; anything else took a live
      // app out (a timeout: the app answered its probe too late, usually a starved machine).
      const unexpected = log.checkFailures.filter(
        (failure) => !/wrong status|connection problem/i.test(failure.reason),
      )
      const why =
        unexpected.length > 0
          ? `; HAProxy took live apps out: ${unexpected
              .slice(0, 4)
              .map((failure) => `${failure.server}: ${failure.reason}`)
              .join(', ')}`
          : ''
      violations.push(
        `HAProxy logged ${log.errors5xx} answer(s) >= 500${why}: ${log.samples.slice(0, 5).join(' | ')}`,
      )
    }
    // When HAProxy took each old instance out, relative to its SIGTERM: the drain must outlast it.
    for (const restart of restarts) {
      const server = restart.instance.slice(0, 1)
      const down = log.transitions.find(
        (t) => t.server === server && t.state === 'DOWN' && t.at >= restart.signalledAt - 5,
      )
      row[`${restart.instance} down`] = down ? `${down.at - restart.signalledAt}` : '-'
    }
  }
  if (result.nginx) {
    const log = result.nginx
    const kinds: Record<string, number> = {}
    for (const entry of log.errorLog) kinds[entry.kind] = (kinds[entry.kind] ?? 0) + 1
    for (const restart of restarts) {
      const failed = log.failedAttempts[restart.port] ?? 0
      maxFailedPerRestart = Math.max(maxFailedPerRestart, failed)
      row[`${restart.instance} failed`] = String(failed)
      if (failed > MAX_FAILED_ATTEMPTS_PER_RESTART) {
        violations.push(
          `nginx made ${failed} failed attempts on ${restart.instance}'s port ${restart.port} (at most ${MAX_FAILED_ATTEMPTS_PER_RESTART})`,
        )
      }
    }
    row.refused = String(kinds.refused ?? 0)
    row['reset/premature'] = `${kinds.reset ?? 0}/${kinds['prematurely closed'] ?? 0}`
    const unexpected = log.errorLog.filter((entry) => entry.kind !== 'refused' && entry.kind !== 'disabled')
    row['other log'] = String(unexpected.length)
    if (unexpected.length > 0) {
      violations.push(
        `nginx's error log has ${unexpected.length} line(s) other than refused connections:\n  ${unexpected
          .slice(0, 10)
          .map((entry) => entry.line)
          .join('\n  ')}`,
      )
    }
    retried = log.retriedRequests
    row.retried = String(log.retriedRequests)
  }

  let maxExitMs = 0
  const bound = cell.drainDelayMs + EXIT_MARGIN_MS
  for (const restart of restarts) {
    const { code, signal } = restart.exit
    maxExitMs = Math.max(maxExitMs, restart.exitMs)
    row[`${restart.instance} exit`] = `${code ?? signal} in ${restart.exitMs}`
    row[`${restart.instance} sig`] = restart.signalMs === undefined ? '-' : String(restart.signalMs)
    row[`${restart.instance} lag`] = restart.lagMs === undefined ? '-' : String(restart.lagMs)
    if (code !== 0 || signal !== null) {
      violations.push(
        `${restart.instance} exited with ${code === null ? `signal ${signal}` : `code ${code}`}; its output:\n${restart.output}`,
      )
    }
    if (restart.exitMs > bound) {
      violations.push(
        `${restart.instance} exited ${restart.exitMs} ms after SIGTERM (seen by the suite after ${restart.seenExitMs} ms; the signal was handled after ${restart.signalMs ?? '?'} ms; bound: drainDelayMs ${cell.drainDelayMs} + ${EXIT_MARGIN_MS}); its output:\n${restart.output}`,
      )
    }
  }
  row.seconds = (result.durationMs / 1000).toFixed(1)

  return {
    row,
    violations,
    totals: {
      requests: load.requests,
      posts: load.byMethod.POST.sent,
      clientErrors,
      retried,
      maxExitMs,
      maxFailedPerRestart,
    },
  }
}

/** A plain-text table with a header row, columns padded to their widest cell. */
export function table(rows: readonly Readonly<Record<string, string>>[]): string {
  const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))]
  const widths = columns.map((column) =>
    Math.max(column.length, ...rows.map((row) => (row[column] ?? '').length)),
  )
  const line = (cells: readonly string[]) =>
    cells.map((cell, index) => cell.padStart(widths[index] ?? 0)).join('  ')
  return [
    line(columns),
    line(widths.map((width) => '-'.repeat(width))),
    ...rows.map((row) => line(columns.map((column) => row[column] ?? ''))),
  ].join('\n')
}

/** The cell's summary: one row per run and a total row. */
export function cellSummary(title: string, verdicts: readonly Verdict[]): string {
  const sum = (pick: (v: Verdict) => number) => verdicts.reduce((total, verdict) => total + pick(verdict), 0)
  const max = (pick: (v: Verdict) => number) => Math.max(0, ...verdicts.map(pick))
  const failedRuns = verdicts.filter((verdict) => verdict.violations.length > 0).length
  return [
    `== ${title}: ${verdicts.length} run(s), ${failedRuns} failed ==`,
    table(verdicts.map((verdict) => verdict.row)),
    `total: ${sum((v) => v.totals.requests)} requests (${sum((v) => v.totals.posts)} POSTs), ${sum((v) => v.totals.clientErrors)} client errors, ` +
      `${sum((v) => v.totals.retried)} retried; slowest exit ${max((v) => v.totals.maxExitMs)} ms after SIGTERM` +
      (verdicts.some((v) => v.row.refused !== undefined)
        ? `; most failed attempts in one restart ${max((v) => v.totals.maxFailedPerRestart)}`
        : ''),
    '',
  ].join('\n')
}
