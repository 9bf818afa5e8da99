import { Readable } from 'node:stream'
import { createFakeClock, type FakeClock, within } from '@lameduck/test-utils'
import { describe, expect, it } from 'vitest'
import {
  createShutdown,
  type ShutdownOptions,
  type ShutdownReport,
  type ShutdownState,
} from '../src/index.js'

function setup(options: ShutdownOptions = {}) {
  const clock = createFakeClock()
  const lines: Array<[string, string]> = []
  const logger = {
    info: (_: unknown, message: string) => lines.push(['info', message]),
    warn: (_: unknown, message: string) => lines.push(['warn', message]),
    error: (_: unknown, message: string) => lines.push(['error', message]),
  }
  const shutdown = createShutdown({ signals: false, logger, clock, ...options })
  const states: ShutdownState[] = []
  shutdown.on('statechange', (state) => states.push(state))
  return { clock, shutdown, states, lines }
}

async function settle(clock: FakeClock): Promise<void> {
  await clock.flush()
}

describe('the shutdown lifecycle', () => {
  it('moves serving → draining → stopping → closing → closed, in order, readiness off from the start', async () => {
    const { clock, shutdown, states } = setup({ drainDelayMs: 1_000, timeoutMs: 5_000 })
    expect(shutdown.state).toBe('serving')
    expect(shutdown.isReady).toBe(true)
    const release = shutdown.enter()
    const report = shutdown.close('test')
    expect(shutdown.state).toBe('draining')
    expect(shutdown.isReady).toBe(false)
    expect(shutdown.signal.aborted).toBe(false)
    await clock.advance(999)
    expect(shutdown.state).toBe('draining')
    await clock.advance(1)
    expect(shutdown.state).toBe('stopping')
    expect(shutdown.signal.aborted).toBe(true)
    release?.()
    const done = await report
    expect(states).toEqual(['draining', 'stopping', 'closing', 'closed'])
    expect(done).toMatchObject({
      reason: 'test',
      graceful: true,
      exitCode: 0,
      requests: { completed: 1, refused: 0, forced: 0 },
    })
    expect(done.durationMs).toBe(1_000)
  })

  it('returns one promise and one report for every caller of close()', async () => {
    const { clock, shutdown } = setup()
    const first = shutdown.close('one')
    const second = shutdown.close('two')
    expect(second).toBe(first)
    await clock.advance(0)
    const [a, b] = await Promise.all([first, second])
    expect(a).toBe(b)
    expect(a.reason).toBe('one')
  })

  it('joins the run when close() is called again while it starts (a statechange listener, a drain hook)', async () => {
    const { clock, shutdown } = setup({ timeoutMs: 5_000 })
    const joined: Promise<ShutdownReport>[] = []
    shutdown.on('statechange', (state) => {
      if (state === 'draining') joined.push(shutdown.close('from a listener'))
    })
    shutdown.onDrain('joins', () => {
      joined.push(shutdown.close('from a drain hook'))
    })
    const report = shutdown.close('outer')
    expect(joined).toHaveLength(2)
    for (const promise of joined) expect(promise).toBe(report)
    await clock.advance(0)
    const done = await report
    expect(done).toMatchObject({ reason: 'outer', graceful: true, exitCode: 0 })
    expect(done.hooks.map((h) => [h.label, h.ok])).toEqual([['joins', true]])
    // Nothing left scheduled: a second run's deadline timer would keep the process alive for timeoutMs.
    expect(clock.pending).toBe(0)
  })

  it('still cuts drain hooks on force() when a drain hook joined the run with close()', async () => {
    const { clock, shutdown } = setup({ timeoutMs: 10_000, hookTimeoutMs: 8_000 })
    shutdown.onDrain('stuck', () => new Promise(() => {}))
    // Awaiting the report inside a drain hook waits for the drain hooks: only the deadline ends it.
    shutdown.onDrain('awaits the report', () => shutdown.close('from a drain hook'))
    const report = shutdown.close('outer')
    await clock.advance(100)
    void shutdown.force('force')
    await clock.advance(0)
    const done = await within(1_000, report, 'the report, without the clock moving past force()')
    expect(done.hooks.map((h) => [h.label, h.timedOut, h.durationMs])).toEqual([
      ['stuck', true, 100],
      ['awaits the report', true, 100],
    ])
    expect(done.durationMs).toBe(100)
  })

  it('counts requests until stopping, refuses from closing on, and releases only once', async () => {
    const { clock, shutdown } = setup({ drainDelayMs: 100, timeoutMs: 1_000 })
    const a = shutdown.enter()
    const b = shutdown.enter()
    expect(shutdown.inFlight).toBe(2)
    a?.()
    a?.()
    expect(shutdown.inFlight).toBe(1)
    const report = shutdown.close()
    const c = shutdown.enter() // draining: still served
    expect(c).toBeTypeOf('function')
    expect(shutdown.inFlight).toBe(2)
    await clock.advance(100)
    const late = shutdown.enter() // stopping, lateRequests 'serve'
    expect(late).toBeTypeOf('function')
    late?.()
    b?.()
    await clock.flush()
    // The one entered while draining still holds the drain.
    expect(shutdown.state).toBe('stopping')
    expect(shutdown.inFlight).toBe(1)
    c?.()
    await clock.flush()
    expect(shutdown.inFlight).toBe(0)
    expect(shutdown.state).not.toBe('stopping')
    expect(shutdown.enter()).toBeUndefined()
    const done = await report
    expect(done.requests).toEqual({ completed: 3, refused: 0, forced: 0 })
  })

  it('refuses from stopping on under lateRequests: refuse', async () => {
    const { clock, shutdown } = setup({ lateRequests: 'refuse' })
    const held = shutdown.enter()
    const report = shutdown.close()
    await clock.flush()
    expect(shutdown.state).toBe('stopping')
    expect(shutdown.enter()).toBeUndefined()
    held?.()
    expect((await report).requests).toEqual({ completed: 1, refused: 1, forced: 0 })
  })

  it('lets any number of requests and tasks listen to the shared signals without a leak warning', async () => {
    const warnings: Error[] = []
    const onWarning = (warning: Error) => warnings.push(warning)
    process.on('warning', onWarning)
    try {
      const { clock, shutdown } = setup({ timeoutMs: 1_000 })
      let aborted = 0
      const count = () => aborted++
      // 50 SSE streams on shutdown.signal, and a tracked task handing its signal to 50 operations.
      for (let i = 0; i < 50; i++) shutdown.signal.addEventListener('abort', () => count())
      const task = shutdown.track('fan-out', async (signal) => {
        for (let i = 0; i < 50; i++) signal.addEventListener('abort', () => count())
        await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()))
      })
      const report = shutdown.force('test')
      await settle(clock)
      await within(2_000, task, 'the task to end on its signal')
      await within(2_000, report, 'the report')
      await new Promise<void>((resolve) => setImmediate(resolve)) // warnings are emitted on the next tick
      expect(aborted).toBe(100)
      expect(warnings.map((warning) => warning.name)).not.toContain('MaxListenersExceededWarning')
    } finally {
      process.off('warning', onWarning)
    }
  })

  it('holds the drain open for tracked tasks and reports a rejection without throwing it', async () => {
    const { clock, shutdown, lines } = setup({ timeoutMs: 1_000 })
    let finish!: () => void
    const ok = shutdown.track('ok', new Promise<void>((resolve) => (finish = resolve)))
    const failing = shutdown.track('boom', async () => {
      throw new Error('boom')
    })
    await expect(failing).rejects.toThrow('boom')
    const report = shutdown.close()
    await clock.advance(500)
    expect(shutdown.state).toBe('stopping')
    finish()
    await ok
    const done = await report
    expect(done.tasks).toEqual({ completed: 1, failed: 1, aborted: 0 })
    expect(done.graceful).toBe(true)
    expect(lines).toContainEqual(['error', 'task "boom" failed'])
  })

  it("enter() takes a request that is not an IncomingMessage (Fastify's inject: light-my-request)", async () => {
    const { shutdown } = setup()
    const injected = Object.assign(new Readable({ read() {} }), {
      headers: {},
      httpVersionMajor: 1,
      url: '/',
    })
    const release = shutdown.enter(injected as never)
    expect(typeof release).toBe('function')
    expect(shutdown.inFlight).toBe(1)
    release?.()
    expect(shutdown.inFlight).toBe(0)
  })

  it('tracks a thenable that is not a native promise (no finally()) like a promise', async () => {
    const { clock, shutdown } = setup({ timeoutMs: 1_000 })
    let finish!: (value: string) => void
    const thenable = {
      // biome-ignore lint/suspicious/noThenProperty: the point of the test is a thenable of the app's own
      then(onFulfilled: (value: string) => unknown) {
        finish = (value) => onFulfilled(value)
      },
    }
    const tracked = shutdown.track('job', thenable as unknown as Promise<string>)
    const report = shutdown.close()
    await clock.advance(500)
    expect(shutdown.state).toBe('stopping')
    finish('done')
    expect(await tracked).toBe('done')
    const done = await report
    expect(done.tasks).toEqual({ completed: 1, failed: 0, aborted: 0 })
    expect(done.graceful).toBe(true)
  })

  it('forces at the deadline: aborts tasks, counts stuck requests, still runs close hooks, exit code 1', async () => {
    const { clock, shutdown } = setup({ timeoutMs: 1_000 })
    shutdown.enter()
    let taskSignal: AbortSignal | undefined
    void shutdown.track('stubborn', (signal) => {
      taskSignal = signal
      return new Promise(() => {})
    })
    const ran: string[] = []
    shutdown.onClose('db', () => {
      ran.push('db')
    })
    const report = shutdown.close()
    await clock.advance(999)
    expect(shutdown.state).toBe('stopping')
    expect(taskSignal?.aborted).toBe(false)
    await clock.advance(1)
    const done = await report
    expect(taskSignal?.aborted).toBe(true)
    expect(ran).toEqual(['db'])
    expect(done).toMatchObject({
      graceful: false,
      exitCode: 1,
      requests: { forced: 1 },
      tasks: { aborted: 1 },
    })
  })

  it('runs close hooks newest first, one at a time; a throwing or overrunning hook is reported and the next still runs', async () => {
    const { clock, shutdown } = setup({ hookTimeoutMs: 300 })
    const order: string[] = []
    let hungSignal: AbortSignal | undefined
    shutdown.onClose('first', () => {
      order.push('first')
    })
    shutdown.onClose('hangs', (signal) => {
      order.push('hangs')
      hungSignal = signal
      return new Promise(() => {})
    })
    shutdown.onClose('throws', () => {
      order.push('throws')
      throw new Error('nope')
    })
    shutdown.onClose('own timeout', () => new Promise<void>((resolve) => clock.setTimeout(resolve, 50)), {
      timeoutMs: 40,
    })
    const report = shutdown.close()
    await clock.advance(1_000)
    const done = await report
    expect(order).toEqual(['throws', 'hangs', 'first'])
    expect(hungSignal?.aborted).toBe(true)
    expect(done.hooks.map((h) => [h.label, h.phase, h.ok, h.timedOut])).toEqual([
      ['own timeout', 'close', false, true],
      ['throws', 'close', false, false],
      ['hangs', 'close', false, true],
      ['first', 'close', true, false],
    ])
    expect(done.hooks[1]?.error).toEqual(new Error('nope'))
    expect(done.graceful).toBe(true)
    expect(done.exitCode).toBe(1)
  })

  it('starts drain hooks concurrently when draining begins and stops on time whatever they do', async () => {
    const { clock, shutdown } = setup({ drainDelayMs: 200, timeoutMs: 2_000, hookTimeoutMs: 500 })
    const started: string[] = []
    shutdown.onDrain('slow', () => {
      started.push('slow')
      return new Promise<void>((resolve) => clock.setTimeout(resolve, 400))
    })
    shutdown.onDrain('stuck', () => {
      started.push('stuck')
      return new Promise(() => {})
    })
    const report = shutdown.close()
    expect(started).toEqual(['slow', 'stuck'])
    await clock.advance(200)
    expect(shutdown.state).not.toBe('draining')
    await clock.advance(1_000)
    const done = await report
    expect(done.hooks.map((h) => [h.label, h.phase, h.ok, h.timedOut])).toEqual([
      ['slow', 'drain', true, false],
      ['stuck', 'drain', false, true],
    ])
  })

  it('force() makes the deadline now and caps close hooks at forcedHookTimeoutMs', async () => {
    const { clock, shutdown } = setup({
      drainDelayMs: 1_000,
      timeoutMs: 10_000,
      forcedHookTimeoutMs: 100,
      hookTimeoutMs: 5_000,
    })
    shutdown.enter()
    shutdown.onClose('slow', () => new Promise(() => {}))
    void shutdown.close('SIGTERM')
    const report = shutdown.force('SIGTERM')
    await clock.advance(100)
    const done = await report
    expect(done.graceful).toBe(false)
    expect(done.hooks[0]).toMatchObject({ label: 'slow', timedOut: true, durationMs: 100 })
    expect(done.durationMs).toBe(100)
  })

  it('force() while a close hook runs cuts what is left of it to forcedHookTimeoutMs', async () => {
    const { clock, shutdown, lines } = setup({ hookTimeoutMs: 6_000, forcedHookTimeoutMs: 500 })
    let dbSignal: AbortSignal | undefined
    shutdown.onClose('next', () => new Promise(() => {}), { timeoutMs: 300 })
    shutdown.onClose('db', (signal) => {
      dbSignal = signal
      return new Promise(() => {})
    })
    const report = shutdown.close('SIGTERM')
    await clock.advance(200)
    expect(shutdown.state).toBe('closing')
    void shutdown.force('SIGTERM')
    await clock.advance(499)
    expect(dbSignal?.aborted).toBe(false)
    await clock.advance(1)
    expect(dbSignal?.aborted).toBe(true)
    await clock.advance(300)
    const done = await report
    expect(done.hooks.map((h) => [h.label, h.timedOut, h.durationMs])).toEqual([
      ['db', true, 700],
      ['next', true, 300],
    ])
    expect(done.durationMs).toBe(1_000)
    expect(lines).toContainEqual([
      'error',
      'close hook "db" timed out after 700 ms (cut to 500 ms once the shutdown was forced)',
    ])
  })

  it('rejects registrations once their phase began, with ERR_LAMEDUCK_CLOSED', async () => {
    const { clock, shutdown } = setup({ drainDelayMs: 100 })
    const report = shutdown.close()
    expect(() => shutdown.onDrain('late', () => {})).toThrow(
      expect.objectContaining({
        code: 'ERR_LAMEDUCK_CLOSED',
        message: '@lameduck/core: onDrain() cannot be called once the shutdown is draining.',
      }),
    )
    await clock.advance(100)
    await report
    expect(() => shutdown.onClose('late', () => {})).toThrow(
      expect.objectContaining({ code: 'ERR_LAMEDUCK_CLOSED' }),
    )
    expect(() => shutdown.track('late', Promise.resolve())).toThrow(
      expect.objectContaining({ code: 'ERR_LAMEDUCK_CLOSED' }),
    )
  })

  it('logs progress while stopping and sums the shutdown up in its last line', async () => {
    const { clock, shutdown, lines } = setup({ timeoutMs: 5_000, progressIntervalMs: 1_000 })
    const release = shutdown.enter()
    const report = shutdown.close('SIGTERM')
    await clock.advance(2_000)
    release?.()
    await report
    const info = lines.filter(([level]) => level === 'info').map(([, message]) => message)
    expect(info).toContain('awaiting 1 request, 0 tasks, 0 connections (4.0 s left)')
    expect(info).toContain('awaiting 1 request, 0 tasks, 0 connections (3.0 s left)')
    expect(info.at(-1)).toBe(
      'closed (SIGTERM) gracefully in 2000 ms: requests 1 completed, 0 refused, 0 forced; tasks 0 completed, 0 failed, 0 aborted; hooks 0 ok, 0 failed; exit code 0',
    )
  })

  it('closes on await using (Symbol.asyncDispose)', async () => {
    const { clock, shutdown, states } = setup()
    const disposing = shutdown[Symbol.asyncDispose]()
    await clock.advance(0)
    await disposing
    expect(states.at(-1)).toBe('closed')
    await settle(clock)
  })
})
