import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { type Outcome, startLoad } from './load.js'

/** The frameworks the demo runs. */
export const FRAMEWORKS = ['express', 'koa', 'fastify'] as const
/** One of {@link FRAMEWORKS}. */
export type Framework = (typeof FRAMEWORKS)[number]
/** lameduck, or the framework's documented `close()`. */
export type Mode = 'lameduck' | 'baseline'

/** When things happen in one run, in milliseconds from the moment the app is ready. */
export interface Timeline {
  /** SIGTERM is sent this long after the load starts. */
  readonly signalAtMs: number
  /** The "orchestrator's" grace period: SIGKILL this long after SIGTERM if the app is still running. */
  readonly graceMs: number
  /** The load stops this long after it started (always past the SIGKILL, so a kill happens under load). */
  readonly loadMs: number
  /** lameduck's `timeoutMs`, inside the grace period. */
  readonly timeoutMs: number
  /** lameduck's bound on the journal's close hook. */
  readonly hookTimeoutMs: number
  /**
   * lameduck's `idleGraceMs`: how long the server must have received no request before it closes
   * idle keep-alive connections. The default (50 ms) assumes clients that are not starved of CPU;
   * here the load generator shares two busy cores with the app (and, in CI, with other test runs),
   * and a client stalled that long would look idle and race the close. Clients that keep sending
   * are unaffected: each connection's next request is its last, answered with `Connection: close`.
   */
  readonly idleGraceMs: number
}

/** The timeline for `--seconds`: signal at 30 %, grace half the run (at least 2 s), kill under load. */
export function timelineFor(seconds: number): Timeline {
  const signalAtMs = Math.round(seconds * 300)
  const graceMs = Math.max(2000, Math.round(seconds * 500))
  return {
    signalAtMs,
    graceMs,
    loadMs: Math.max(seconds * 1000, signalAtMs + graceMs + 500),
    timeoutMs: Math.round(graceMs * 0.7),
    hookTimeoutMs: Math.round(graceMs * 0.15),
    idleGraceMs: 500,
  }
}

/** The load shape: the same in both runs. */
export const LOAD = {
  orderClients: 4,
  fastClients: 4,
  fastIntervalMs: 25,
  maxRequestsPerClient: 2_000,
  requestTimeoutMs: 10_000,
}

/** Everything measured in one run. Counts are requests unless named otherwise. */
export interface RunFigures {
  readonly mode: Mode
  /** Requests sent before SIGTERM. */
  readonly beforeSignal: {
    sent: number
    completed: number
    refused503: number
    lost: number
    /** Lost requests by error code (`timeout` for no answer). */
    lostCodes: Record<string, number>
    truncated: number
    otherStatus: number
  }
  /** Requests sent after SIGTERM, by how they ended. */
  readonly afterSignal: {
    sent: number
    servedKeepAlive: number
    servedClose: number
    clean503: number
    resets: number
    /** Resets by error code: ECONNRESET ("socket hang up" too: closed before any answer), EPIPE (written onto a closed connection). */
    resetCodes: Record<string, number>
    truncated: number
    refusedConnections: number
    timeouts: number
    otherStatus: number
  }
  readonly writes: {
    /** Orders the client got a 201 for. */
    acknowledged: number
    /** Of those, how many are in the journal after the process exited. */
    inJournal: number
    /** Acknowledged but not in the journal. */
    lost: number
    /** Receipt lines (one per order, written by the background job) in the journal. */
    receipts: number
    /** Order lines in the journal (acknowledged or not). */
    journalOrders: number
  }
  readonly exit: {
    /** Milliseconds from SIGTERM to the process's exit. */
    signalToExitMs: number
    code: number | null
    signal: NodeJS.Signals | null
    /** True when the demo had to SIGKILL it at the end of the grace period. */
    killed: boolean
  }
  /** lameduck's report (lameduck runs only). */
  readonly report: Record<string, unknown> | null
  /** lameduck's last log line, the report summary (lameduck runs only). */
  readonly summary: string | null
  /** Every line the app printed, stdout and stderr interleaved. */
  readonly output: string
}

/** What the run tells the progress display. */
export interface RunProgress {
  readonly phase: 'starting' | 'loading' | 'signalled' | 'exited' | 'killed'
  readonly elapsedMs: number
  readonly sent: number
  readonly ok: number
  readonly failed: number
}

/** Options of {@link runScenario}. */
export interface RunOptions {
  readonly framework: Framework
  readonly mode: Mode
  readonly timeline: Timeline
  onProgress?(progress: RunProgress): void
}

const APP = fileURLToPath(new URL('./app.js', import.meta.url))
const running = new Set<ChildProcess>()

/** SIGKILLs, by PID, every app this process started that is still running. Safe to call on any exit path. */
export function killChildren(): void {
  for (const child of running) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  running.clear()
}

/**
 * Starts the app as a child process, drives the load, sends SIGTERM mid-load, keeps loading,
 * SIGKILLs the app if it outlives the grace period, then reads the journal. Every figure is measured
 * here, from the client's side and from the file; nothing is taken from the app's own claims
 * except lameduck's report, which is shown as the app's log line.
 */
export async function runScenario(options: RunOptions): Promise<RunFigures> {
  const { timeline } = options
  const dir = await mkdtemp(join(tmpdir(), 'lameduck-demo-'))
  const journalPath = join(dir, 'orders.jsonl')
  const child = spawn(
    process.execPath,
    [
      APP,
      ...['--framework', options.framework, '--mode', options.mode, '--journal', journalPath],
      ...['--timeout-ms', String(timeline.timeoutMs), '--hook-timeout-ms', String(timeline.hookTimeoutMs)],
      ...['--idle-grace-ms', String(timeline.idleGraceMs)],
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  running.add(child)
  try {
    return await drive(child, options, journalPath)
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    running.delete(child)
    await rm(dir, { recursive: true, force: true })
  }
}

async function drive(child: ChildProcess, options: RunOptions, journalPath: string): Promise<RunFigures> {
  const { timeline } = options
  let output = ''
  let onLine: (() => void) | undefined
  const collect = (chunk: Buffer) => {
    output += chunk.toString()
    onLine?.()
  }
  child.stdout?.on('data', collect)
  child.stderr?.on('data', collect)
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>(
    (resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal, at: performance.now() }))
    },
  )

  const port = await waitForReady(
    child,
    () => output,
    (listener) => {
      onLine = listener
    },
  )
  onLine = undefined

  const outcomes: Outcome[] = []
  let signalAt = Number.POSITIVE_INFINITY
  let phase: RunProgress['phase'] = 'loading'
  const startedAt = performance.now()
  const load = startLoad({
    port,
    ...LOAD,
    endAt: startedAt + timeline.loadMs,
    onOutcome: (outcome) => outcomes.push(outcome),
  })

  const report = () => {
    const ok = outcomes.filter((o) => o.kind === 'served' || o.kind === 'served-close').length
    options.onProgress?.({
      phase,
      elapsedMs: performance.now() - startedAt,
      sent: outcomes.length,
      ok,
      failed: outcomes.length - ok,
    })
  }
  const ticker = setInterval(report, 100)
  let killed = false
  let killTimer: NodeJS.Timeout | undefined
  const signalTimer = setTimeout(() => {
    signalAt = performance.now()
    child.kill('SIGTERM')
    phase = 'signalled'
    report()
    killTimer = setTimeout(() => {
      if (child.exitCode !== null || child.signalCode !== null) return
      killed = true
      phase = 'killed'
      child.kill('SIGKILL')
      report()
    }, timeline.graceMs)
  }, timeline.signalAtMs)

  const exit = await exited
  if (!killed) phase = 'exited'
  report()
  clearTimeout(killTimer)
  // The app may have died before the signal (a crash): fail loudly rather than show a table.
  if (signalAt === Number.POSITIVE_INFINITY) {
    clearTimeout(signalTimer)
    load.stop()
    clearInterval(ticker)
    throw new Error(
      `the ${options.mode} app exited before SIGTERM (code ${exit.code}, signal ${exit.signal}); its output:\n${output}`,
    )
  }
  await load.done
  clearInterval(ticker)

  return {
    mode: options.mode,
    ...countRequests(outcomes, signalAt),
    writes: await countWrites(journalPath, outcomes),
    exit: { signalToExitMs: Math.round(exit.at - signalAt), code: exit.code, signal: exit.signal, killed },
    ...readReport(output),
    output,
  }
}

function waitForReady(
  child: ChildProcess,
  output: () => string,
  listen: (listener: () => void) => void,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => fail(new Error(`the app did not print "ready <port>" within 10 s; output:\n${output()}`)),
      10_000,
    )
    const fail = (error: Error) => {
      clearTimeout(timer)
      reject(error)
    }
    child.once('exit', (code, signal) =>
      fail(new Error(`the app exited during startup (code ${code}, signal ${signal}); output:\n${output()}`)),
    )
    listen(() => {
      const match = /^ready (\d+)$/m.exec(output())
      if (match) {
        clearTimeout(timer)
        resolve(Number(match[1]))
      }
    })
  })
}

function countRequests(
  outcomes: readonly Outcome[],
  signalAt: number,
): Pick<RunFigures, 'beforeSignal' | 'afterSignal'> {
  const before = outcomes.filter((o) => o.sentAt < signalAt)
  const after = outcomes.filter((o) => o.sentAt >= signalAt)
  const count = (list: readonly Outcome[], ...kinds: Outcome['kind'][]) =>
    list.filter((o) => kinds.includes(o.kind)).length
  return {
    beforeSignal: {
      sent: before.length,
      completed: count(before, 'served', 'served-close'),
      refused503: count(before, 'refusal-503'),
      lost: count(before, 'reset', 'refused', 'timeout'),
      lostCodes: tally(
        before.filter((o) => ['reset', 'refused', 'timeout'].includes(o.kind)).map((o) => o.code ?? o.kind),
      ),
      truncated: count(before, 'truncated'),
      otherStatus: count(before, 'other-status'),
    },
    afterSignal: {
      sent: after.length,
      servedKeepAlive: count(after, 'served'),
      servedClose: count(after, 'served-close'),
      clean503: count(after, 'refusal-503'),
      resets: count(after, 'reset'),
      resetCodes: tally(after.filter((o) => o.kind === 'reset').map((o) => o.code ?? 'unknown')),
      truncated: count(after, 'truncated'),
      refusedConnections: count(after, 'refused'),
      timeouts: count(after, 'timeout'),
      otherStatus: count(after, 'other-status'),
    },
  }
}

function tally(values: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const value of values) counts[value] = (counts[value] ?? 0) + 1
  return counts
}

async function countWrites(journalPath: string, outcomes: readonly Outcome[]): Promise<RunFigures['writes']> {
  const acknowledged = new Set(outcomes.flatMap((o) => (o.orderId === undefined ? [] : [o.orderId])))
  const orders = new Set<number>()
  let receipts = 0
  const text = await readFile(journalPath, 'utf8').catch(() => '')
  for (const line of text.split('\n')) {
    let record: { type?: unknown; id?: unknown }
    try {
      record = JSON.parse(line) as typeof record
    } catch {
      continue // an empty last line, or one cut short by a kill
    }
    if (record.type === 'order' && typeof record.id === 'number') orders.add(record.id)
    else if (record.type === 'receipt') receipts++
  }
  const inJournal = [...acknowledged].filter((id) => orders.has(id)).length
  return {
    acknowledged: acknowledged.size,
    inJournal,
    lost: acknowledged.size - inJournal,
    receipts,
    journalOrders: orders.size,
  }
}

function readReport(output: string): Pick<RunFigures, 'report' | 'summary'> {
  let report: Record<string, unknown> | null = null
  let summary: string | null = null
  for (const line of output.split('\n')) {
    if (line.startsWith('report {')) report = parseObject(line.slice('report '.length)) ?? report
    // The default logger writes `[lameduck] closed …`; a pino logger (Fastify's) writes JSON with `msg`.
    const plain = /^\[lameduck\] (closed \(.*)$/.exec(line)?.[1]
    const structured = line.startsWith('{') ? parseObject(line)?.msg : undefined
    if (plain !== undefined) summary = plain
    else if (typeof structured === 'string' && structured.startsWith('closed (')) summary = structured
  }
  return { report, summary }
}

function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text)
    return value !== null && typeof value === 'object' ? (value as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}
