import { createFakeClock } from '@lameduck/test-utils'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  type Clock,
  createShutdown,
  type LateRequestPolicy,
  type Release,
  type ShutdownReport,
  type ShutdownState,
} from '../src/index.js'

// fast-check over the core state machine on a fake clock: random interleavings of enter/release,
// track/settle, hook registration, close(), force() and time passing deadlines, with the
// invariants of issue 9 checked after every step and once the shutdown has closed.

const ORDER: readonly ShutdownState[] = ['serving', 'draining', 'stopping', 'closing', 'closed']
const index = (state: ShutdownState) => ORDER.indexOf(state)

type HookBehaviour = 'ok' | 'throw' | 'reject' | 'hang' | 'honours-signal' | { slowMs: number }

type Action =
  | { kind: 'enter' }
  | { kind: 'release'; pick: number; twice: boolean }
  | { kind: 'track'; style: 'promise' | 'function'; ignoresSignal: boolean }
  | { kind: 'settle'; pick: number; ok: boolean }
  | { kind: 'onClose'; behaviour: HookBehaviour; timeoutMs: number | undefined }
  | { kind: 'onDrain'; behaviour: HookBehaviour; timeoutMs: number | undefined }
  | { kind: 'close'; drainDelayMs: number | undefined }
  | { kind: 'force' }
  | { kind: 'advance'; ms: number }

interface Setup {
  timeoutMs: number
  drainDelayMs: number
  hookTimeoutMs: number
  forcedHookTimeoutMs: number
  lateRequests: LateRequestPolicy
  exitCodes: { graceful: number; failed: number }
}

const behaviour: fc.Arbitrary<HookBehaviour> = fc.oneof(
  fc.constantFrom<HookBehaviour>('ok', 'throw', 'reject', 'hang', 'honours-signal'),
  fc.record({ slowMs: fc.integer({ min: 0, max: 600 }) }),
)
const hookTimeout = fc.option(fc.integer({ min: 0, max: 500 }), { nil: undefined })

const action: fc.Arbitrary<Action> = fc.oneof(
  { weight: 4, arbitrary: fc.constant<Action>({ kind: 'enter' }) },
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant('release' as const), pick: fc.nat(), twice: fc.boolean() }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('track' as const),
      style: fc.constantFrom('promise' as const, 'function' as const),
      ignoresSignal: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('settle' as const), pick: fc.nat(), ok: fc.boolean() }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('onClose' as const), behaviour, timeoutMs: hookTimeout }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('onDrain' as const), behaviour, timeoutMs: hookTimeout }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('close' as const),
      drainDelayMs: fc.option(fc.integer({ min: 0, max: 800 }), { nil: undefined }),
    }),
  },
  { weight: 1, arbitrary: fc.constant<Action>({ kind: 'force' }) },
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 700 }) }),
  },
)

const setup: fc.Arbitrary<Setup> = fc
  .record({
    timeoutMs: fc.integer({ min: 0, max: 2_000 }),
    drainFraction: fc.double({ min: 0, max: 0.99, noNaN: true }),
    hookTimeoutMs: fc.integer({ min: 0, max: 500 }),
    forcedHookTimeoutMs: fc.integer({ min: 0, max: 300 }),
    lateRequests: fc.constantFrom<LateRequestPolicy>('serve', 'refuse'),
    graceful: fc.integer({ min: 0, max: 3 }),
    failed: fc.integer({ min: 1, max: 9 }),
  })
  .map(({ drainFraction, graceful, failed, ...rest }) => ({
    ...rest,
    drainDelayMs: Math.floor(rest.timeoutMs * drainFraction),
    exitCodes: { graceful, failed },
  }))

/** A clock that lets every promise job run before the next timer fires, as Node's loop does. */
function steppedClock() {
  const fake = createFakeClock()
  const due = new Map<unknown, number>()
  const clock: Clock = {
    now: () => fake.now(),
    setTimeout(callback, ms) {
      let handle: unknown
      const wrapped = () => {
        due.delete(handle)
        callback()
      }
      handle = fake.setTimeout(wrapped, ms)
      due.set(handle, fake.now() + Math.max(0, ms))
      return handle
    },
    clearTimeout(handle) {
      due.delete(handle)
      fake.clearTimeout(handle)
    },
  }
  // A macrotask turn: all promise jobs queued so far, and the ones they queue, have run.
  const settle = () => new Promise<void>((resolve) => setImmediate(resolve))
  async function advance(ms: number): Promise<void> {
    const target = fake.now() + ms
    await settle()
    for (let step = 0; step < 10_000; step++) {
      const next = Math.min(...due.values())
      if (!(next <= target)) break
      await fake.advance(Math.max(0, next - fake.now()))
      await settle()
    }
    await fake.advance(Math.max(0, target - fake.now()))
    await settle()
  }
  return { clock, advance, settle, now: () => fake.now(), pendingTimers: () => due.size }
}

interface HookRecord {
  label: string
  phase: 'drain' | 'close'
  behaviour: HookBehaviour
  timeoutMs: number
  runs: number
  /** force() had been called when the hook started: close hooks then get forcedHookTimeoutMs at most. */
  forcedAtStart: boolean
  /** When it started; a close hook still running at a later force() gets forcedHookTimeoutMs more at most. */
  startedAt: number | undefined
}

interface TaskRecord {
  settled: 'pending' | 'resolved' | 'rejected'
  /** Settled by its signal's abort: it was still pending when the shutdown decided to force. */
  abortedWhilePending: boolean
  resolve(): void
  reject(error: Error): void
  signal?: AbortSignal
}

async function runScenario(config: Setup, actions: readonly Action[]): Promise<void> {
  const time = steppedClock()
  const shutdown = createShutdown({
    ...config,
    signals: false,
    logger: false,
    progressIntervalMs: 0,
    clock: time.clock,
  })
  const transitions: Array<[ShutdownState, ShutdownState, number]> = []
  const releases: Array<{ release: Release; released: boolean }> = []
  const tasks: TaskRecord[] = []
  const hooks: HookRecord[] = []
  const invocations: string[] = []
  const reports: Promise<ShutdownReport>[] = []
  const closedEvents: ShutdownReport[] = []
  let model = 0
  let startedAt: number | undefined
  let forceCalledAt: number | undefined
  let forceCalled = false
  /** The first force(), whatever the state: it cuts drain hooks still running then, and caps close hooks. */
  let firstForceAt: number | undefined
  let atClosing: { at: number; inFlight: number; tasks: number } | undefined
  let tasksAtReport: { resolved: number; rejected: number } | undefined

  // The core decides to force before it aborts the tasks' signal; a task settled by that abort was pending.
  const unsettled = () =>
    tasks.filter((task) => task.settled === 'pending' || task.abortedWhilePending).length
  shutdown.on('statechange', (next, previous) => {
    transitions.push([previous, next, time.now()])
    if (next === 'closing') atClosing = { at: time.now(), inFlight: model, tasks: unsettled() }
  })
  shutdown.on('closed', (report) => {
    closedEvents.push(report)
    tasksAtReport = {
      resolved: tasks.filter((task) => task.settled === 'resolved').length,
      rejected: tasks.filter((task) => task.settled === 'rejected').length,
    }
  })

  function hook(record: HookRecord) {
    return (signal: AbortSignal): unknown => {
      record.runs++
      record.forcedAtStart = forceCalled
      record.startedAt = time.now()
      invocations.push(record.label)
      const b = record.behaviour
      if (b === 'ok') return undefined
      if (b === 'throw') throw new Error(`${record.label} threw`)
      if (b === 'reject') return Promise.reject(new Error(`${record.label} rejected`))
      if (b === 'hang') return new Promise(() => {})
      if (b === 'honours-signal') {
        return new Promise<void>((resolve) =>
          signal.addEventListener('abort', () => resolve(), { once: true }),
        )
      }
      return new Promise<void>((resolve) => time.clock.setTimeout(resolve, b.slowMs))
    }
  }

  function register(kind: 'onClose' | 'onDrain', b: HookBehaviour, timeoutMs: number | undefined): void {
    const record: HookRecord = {
      label: `${kind}-${hooks.length}`,
      phase: kind === 'onClose' ? 'close' : 'drain',
      behaviour: b,
      timeoutMs: timeoutMs ?? config.hookTimeoutMs,
      runs: 0,
      forcedAtStart: false,
      startedAt: undefined,
    }
    const state = shutdown.state
    const tooLate = kind === 'onClose' ? index(state) >= index('closing') : state !== 'serving'
    const options = timeoutMs === undefined ? undefined : { timeoutMs }
    if (tooLate) {
      expect(() => shutdown[kind](record.label, hook(record), options)).toThrow(
        expect.objectContaining({ code: 'ERR_LAMEDUCK_CLOSED' }),
      )
      return
    }
    shutdown[kind](record.label, hook(record), options)
    hooks.push(record)
  }

  function checkStep(): void {
    expect(shutdown.inFlight).toBeGreaterThanOrEqual(0)
    expect(shutdown.inFlight).toBe(model)
    expect(shutdown.isReady).toBe(shutdown.state === 'serving')
    expect(shutdown.signal.aborted).toBe(index(shutdown.state) >= index('stopping'))
    for (const hookRecord of hooks) expect(hookRecord.runs).toBeLessThanOrEqual(1)
  }

  for (const step of actions) {
    switch (step.kind) {
      case 'enter': {
        const state = shutdown.state
        const refused =
          index(state) >= index('closing') || (state === 'stopping' && config.lateRequests === 'refuse')
        const release = shutdown.enter()
        expect(release === undefined).toBe(refused)
        if (release) {
          releases.push({ release, released: false })
          model++
        }
        break
      }
      case 'release': {
        if (releases.length === 0) break
        const entry = releases[step.pick % releases.length]
        if (!entry) break
        entry.release()
        if (step.twice) entry.release()
        if (!entry.released) model--
        entry.released = true
        break
      }
      case 'track': {
        const tooLate = index(shutdown.state) >= index('closing')
        let resolve!: () => void
        let reject!: (error: Error) => void
        const promise = new Promise<void>((res, rej) => {
          resolve = res
          reject = rej
        })
        const record: TaskRecord = {
          settled: 'pending',
          abortedWhilePending: false,
          resolve() {
            if (record.settled !== 'pending') return
            record.settled = 'resolved'
            resolve()
          },
          reject(error) {
            if (record.settled !== 'pending') return
            record.settled = 'rejected'
            reject(error)
          },
        }
        const task =
          step.style === 'promise'
            ? promise
            : (signal: AbortSignal) => {
                record.signal = signal
                signal.addEventListener(
                  'abort',
                  () => {
                    if (record.settled === 'pending') record.abortedWhilePending = true
                    if (!step.ignoresSignal) record.reject(new Error('aborted'))
                  },
                  { once: true },
                )
                return promise
              }
        if (tooLate) {
          expect(() => shutdown.track('task', task)).toThrow(
            expect.objectContaining({ code: 'ERR_LAMEDUCK_CLOSED' }),
          )
          break
        }
        // A rejection is reported by the shutdown, never unhandled: the returned promise is not awaited here.
        void shutdown.track(`task-${tasks.length}`, task).catch(() => {})
        tasks.push(record)
        break
      }
      case 'settle': {
        const pending = tasks.filter((task) => task.settled === 'pending')
        const task = pending[step.pick % Math.max(1, pending.length)]
        if (!task) break
        if (step.ok) task.resolve()
        else task.reject(new Error('task failed'))
        break
      }
      case 'onClose':
      case 'onDrain':
        register(step.kind, step.behaviour, step.timeoutMs)
        break
      case 'close': {
        if (startedAt === undefined) startedAt = time.now()
        // A per-call delay at or over timeoutMs is rejected (options.test.ts); the property caps it.
        const options =
          step.drainDelayMs === undefined
            ? undefined
            : { drainDelayMs: Math.min(step.drainDelayMs, Math.max(0, config.timeoutMs - 1)) }
        reports.push(shutdown.close('property', options))
        break
      }
      case 'force':
        if (startedAt === undefined) startedAt = time.now()
        if (forceCalledAt === undefined && index(shutdown.state) < index('closing'))
          forceCalledAt = time.now()
        forceCalled = true
        firstForceAt ??= time.now()
        reports.push(shutdown.force('forced'))
        break
      case 'advance':
        await time.advance(step.ms)
        break
    }
    await time.settle()
    checkStep()
  }

  // Let the shutdown finish: close if nobody did, then let time pass until it has closed. Every
  // wait inside is bounded (deadline, hook timeouts), so a stall here is a hang in the core.
  if (startedAt === undefined) {
    startedAt = time.now()
    reports.push(shutdown.close('property'))
  }
  for (let step = 0; step < 1_000 && shutdown.state !== 'closed'; step++) {
    expect(time.pendingTimers(), `stuck in "${shutdown.state}" with no timer left`).toBeGreaterThan(0)
    await time.advance(100)
    checkStep()
  }
  expect(shutdown.state).toBe('closed')
  const results = await Promise.all(reports)
  const report = results[0] as ShutdownReport

  // close() resolves once, with the same report for every caller, and 'closed' fires once with it.
  for (const result of results) expect(result).toBe(report)
  expect(closedEvents).toEqual([report])
  expect(closedEvents[0]).toBe(report)

  // States only move forward, one step at a time, through every state.
  expect(transitions.map(([previous, next]) => [previous, next])).toEqual([
    ['serving', 'draining'],
    ['draining', 'stopping'],
    ['stopping', 'closing'],
    ['closing', 'closed'],
  ])
  const closedAt = transitions.at(-1)?.[2] ?? Number.NaN
  expect(report.durationMs).toBe(closedAt - startedAt)

  // Forced ⇔ work was pending when the drain ended, and that happens only at the deadline or force().
  const closing = atClosing as NonNullable<typeof atClosing>
  const pending = closing.inFlight > 0 || closing.tasks > 0
  const deadline = startedAt + config.timeoutMs
  expect(report.graceful).toBe(!pending)
  if (pending)
    expect(closing.at >= deadline || (forceCalledAt !== undefined && forceCalledAt <= closing.at)).toBe(true)
  else expect(closing.at).toBeLessThanOrEqual(deadline)
  expect(report.requests.forced).toBe(pending ? closing.inFlight : 0)
  expect(report.tasks.aborted).toBe(pending ? closing.tasks : 0)
  expect(report.tasks).toMatchObject({ completed: tasksAtReport?.resolved, failed: tasksAtReport?.rejected })
  for (const task of tasks) if (task.signal) expect(task.signal.aborted).toBe(pending)

  // Each registered hook ran exactly once; close hooks newest first, after the drain hooks.
  for (const record of hooks) expect(record.runs, record.label).toBe(1)
  expect([...report.hooks.map((outcome) => outcome.label)].sort()).toEqual(
    hooks.map((record) => record.label).sort(),
  )
  const closeLabels = hooks.filter((record) => record.phase === 'close').map((record) => record.label)
  expect(invocations.filter((label) => label.startsWith('onClose'))).toEqual([...closeLabels].reverse())
  expect(report.hooks.filter((outcome) => outcome.phase === 'close').map((outcome) => outcome.label)).toEqual(
    [...closeLabels].reverse(),
  )

  // Each hook's outcome follows from what it did and the time it was given.
  for (const record of hooks) {
    const outcome = report.hooks.find((candidate) => candidate.label === record.label)
    // A drain hook is also cut at the deadline, or when force() made the deadline now.
    const drainCut =
      startedAt === undefined
        ? Number.POSITIVE_INFINITY
        : Math.max(
            0,
            Math.min(startedAt + config.timeoutMs, firstForceAt ?? Number.POSITIVE_INFINITY) - startedAt,
          )
    const b = record.behaviour
    const slowMs = typeof b === 'object' ? b.slowMs : undefined
    // A close hook still running at the first force() after it started (neither settled nor timed
    // out by then) ends at most forcedHookTimeoutMs after that force().
    const forcedAfterMs =
      record.phase === 'close' && !record.forcedAtStart && firstForceAt !== undefined
        ? firstForceAt - (record.startedAt ?? Number.NaN)
        : Number.POSITIVE_INFINITY
    const cutMs = forcedAfterMs + config.forcedHookTimeoutMs
    const cutByForce =
      forcedAfterMs < Math.min(record.timeoutMs, slowMs ?? Number.POSITIVE_INFINITY) &&
      cutMs < record.timeoutMs
    const given =
      record.phase === 'close' && record.forcedAtStart
        ? Math.min(record.timeoutMs, config.forcedHookTimeoutMs)
        : record.phase === 'drain'
          ? Math.min(record.timeoutMs, drainCut)
          : cutByForce
            ? cutMs
            : record.timeoutMs
    // At a tie the hook's own timer, set when it started, fires before the cut's, set at force().
    const timesOut =
      b === 'hang' ||
      b === 'honours-signal' ||
      (slowMs !== undefined && (cutByForce ? slowMs > given : slowMs >= given))
    expect(outcome, record.label).toMatchObject({
      phase: record.phase,
      timedOut: timesOut,
      ok: !timesOut && (b === 'ok' || slowMs !== undefined),
    })
    if (timesOut) expect(outcome?.durationMs).toBe(given)
    else if (slowMs !== undefined) expect(outcome?.durationMs).toBe(slowMs)
  }

  // The exit code follows from the report.
  const hooksOk = report.hooks.every((outcome) => outcome.ok)
  expect(report.exitCode).toBe(
    report.graceful && hooksOk ? config.exitCodes.graceful : config.exitCodes.failed,
  )

  // Nothing is left scheduled on the clock once closed (a hanging hook's own timer aside).
  expect(shutdown.enter()).toBeUndefined()
}

describe('the core state machine under random interleavings (fast-check, fake clock)', () => {
  // Interleavings the generator reaches rarely, pinned as examples of the same model.
  it('cuts a drain hook still running when force() comes after the drain ended (closing)', async () => {
    const config: Setup = {
      timeoutMs: 1_000,
      drainDelayMs: 0,
      hookTimeoutMs: 500,
      forcedHookTimeoutMs: 50,
      lateRequests: 'serve',
      exitCodes: { graceful: 0, failed: 1 },
    }
    await runScenario(config, [
      { kind: 'onDrain', behaviour: 'hang', timeoutMs: undefined },
      { kind: 'onClose', behaviour: { slowMs: 300 }, timeoutMs: undefined },
      { kind: 'close', drainDelayMs: undefined },
      { kind: 'advance', ms: 100 },
      { kind: 'force' },
    ])
  })

  it('forces at the deadline with a request and an ignoring task pending, hooks capped after force()', async () => {
    const config: Setup = {
      timeoutMs: 300,
      drainDelayMs: 100,
      hookTimeoutMs: 200,
      forcedHookTimeoutMs: 50,
      lateRequests: 'refuse',
      exitCodes: { graceful: 0, failed: 7 },
    }
    await runScenario(config, [
      { kind: 'enter' },
      { kind: 'track', style: 'function', ignoresSignal: true },
      { kind: 'onClose', behaviour: 'hang', timeoutMs: 1_000 },
      { kind: 'close', drainDelayMs: undefined },
      { kind: 'advance', ms: 150 },
      { kind: 'enter' },
      { kind: 'advance', ms: 200 },
      { kind: 'force' },
      { kind: 'release', pick: 0, twice: true },
    ])
  })

  it('keeps every invariant of issue 9', async () => {
    await fc.assert(
      fc.asyncProperty(setup, fc.array(action, { maxLength: 40 }), (config, actions) =>
        runScenario(config, actions),
      ),
      { numRuns: Number(process.env.LAMEDUCK_PROPERTY_RUNS ?? 150) },
    )
  })

  // DESIGN.md's budget is `timeoutMs + Σ onClose timeouts`: drain hooks are cut at the deadline.
  it('ends within the design time budget: timeoutMs plus the close hooks, each within its timeout', async () => {
    await fc.assert(
      fc.asyncProperty(setup, fc.array(action, { maxLength: 40 }), async (config, actions) => {
        const time = steppedClock()
        const shutdown = createShutdown({
          ...config,
          signals: false,
          logger: false,
          progressIntervalMs: 0,
          clock: time.clock,
        })
        // Subscribed first: the shutdown may well close while the actions still run.
        const report = new Promise<ShutdownReport>((resolve) => shutdown.on('closed', resolve))
        let closeBudget = 0
        let started: number | undefined
        for (const step of actions) {
          if ((step.kind === 'onClose' || step.kind === 'onDrain') && shutdown.state === 'serving') {
            const timeoutMs = step.timeoutMs ?? config.hookTimeoutMs
            if (step.kind === 'onClose') closeBudget += timeoutMs
            shutdown[step.kind]('hook', () => new Promise(() => {}), { timeoutMs })
          } else if (step.kind === 'enter') {
            shutdown.enter()
          } else if (step.kind === 'close' && started === undefined) {
            started = time.now()
            void shutdown.close('budget')
          } else if (step.kind === 'advance') {
            await time.advance(step.ms)
          }
        }
        if (started === undefined) {
          started = time.now()
          void shutdown.close('budget')
        }
        // The stepped clock fires every timer due on the way, in order: one step past the budget is enough.
        for (let i = 0; i < 3 && shutdown.state !== 'closed'; i++)
          await time.advance(config.timeoutMs + closeBudget + 1_000)
        expect((await report).durationMs).toBeLessThanOrEqual(config.timeoutMs + closeBudget)
      }),
      { numRuns: 100 },
    )
  })
})
