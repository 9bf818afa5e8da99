import { fileURLToPath } from 'node:url'
import {
  keepAliveAgent,
  request,
  signalUntilCounted,
  startFixture,
  stopFixtures,
  within,
} from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'

const server = fileURLToPath(new URL('./fixtures/server.mjs', import.meta.url))
const restart = fileURLToPath(new URL('./fixtures/restart.mjs', import.meta.url))
const start = (options: object = {}, env: Record<string, string> = {}) =>
  startFixture(server, [], { LAMEDUCK_OPTIONS: JSON.stringify({ timeoutMs: 5_000, ...options }), ...env })

afterEach(stopFixtures)

type Fixture = Awaited<ReturnType<typeof startFixture>>

/** A `/slow` request in flight, then `signals` sent: its response and the exit, each within 3 s. */
async function signalDuringSlow(
  app: Fixture,
  signals: readonly NodeJS.Signals[] = ['SIGTERM'],
  { port = app.port, ms = 300 } = {},
) {
  const slow = request(port, { path: `/slow?ms=${ms}` })
  await app.waitForLine('received /slow')
  for (const signal of signals) app.kill(signal)
  const response = await within(3_000, slow, 'the slow response')
  const exit = await within(3_000, app.exited, 'the process to exit')
  return { response, exit }
}

describe('signals and the process', () => {
  it('exits 0 on SIGTERM promptly, not after the 60 s keep-alive timeout, hooks after the responses', async () => {
    const app = await start()
    const agent = keepAliveAgent()
    await request(app.port, { agent, path: '/fast' }) // leaves an idle keep-alive socket open
    const slow = request(app.port, { path: '/slow?ms=300' })
    await app.waitForLine('received /slow')
    const sentAt = app.kill('SIGTERM')
    const response = await within(3_000, slow, 'the slow response')
    expect(response.body).toBe('done /slow 0')
    expect(response.headers.connection).toBe('close')
    const exit = await within(3_000, app.exited, 'the process to exit')
    expect(exit.code).toBe(0)
    expect(exit.at - sentAt).toBeLessThan(2_000)
    const out = app.output()
    expect(out.indexOf('response sent /slow')).toBeLessThan(out.indexOf('hook: db closed'))
    expect(out).toMatch(/closed \(SIGTERM\) gracefully in \d+ ms: requests 1 completed/)
    agent.destroy()
  })

  // One request to stop, delivered more than once, drains once: never a second signal that forces.
  it.each([
    [
      'a SIGINT repeated within 500 ms (npm and pnpm forward Ctrl-C twice)',
      {},
      ['SIGINT', 'SIGINT'],
      /closed \(SIGINT\) gracefully/,
    ],
    [
      'SIGINT then SIGTERM within 500 ms (Ctrl-C, then a cluster primary passing it on)',
      {},
      ['SIGINT', 'SIGTERM'],
      // Sent back to back, the two may be delivered in either order.
      /SIG(INT|TERM) \d+ ms after SIG(TERM|INT): taken as the same request to stop[\s\S]*closed \(SIG(INT|TERM)\) gracefully/,
    ],
    [
      'one kill of a signal listed under two names (SIGIO and SIGPOLL)',
      { signals: ['SIGIO', 'SIGPOLL'] },
      ['SIGIO'],
      /closed \(SIGIO\) gracefully/,
    ],
  ] as const)('counts %s once', async (_, options, signals, logged) => {
    const app = await start(options)
    const { response, exit } = await signalDuringSlow(app, signals, { ms: 400 })
    expect(response.body).toBe('done /slow 0')
    expect(exit.code).toBe(0)
    expect(app.output()).not.toContain('second signal')
    expect(app.output()).toMatch(logged)
  })

  it.each(['throws', 'rejects'])(
    'ends the process as Node would when the exit option is a function that %s, the failure logged',
    async (how) => {
      const app = await start({}, { FIXTURE_EXIT_THROWS: how })
      const { response, exit } = await signalDuringSlow(app)
      expect(response.status).toBe(200)
      expect(exit.code).toBe(0)
      expect(app.output()).toContain('exit function called with 0')
      expect(app.output()).toContain("the exit option's function failed; exit code 0")
    },
  )

  it('survives an async statechange listener and an async logger that reject, serving what is in flight', async () => {
    const app = await start({}, { FIXTURE_ASYNC_REJECTS: '1' })
    const { response, exit } = await signalDuringSlow(app)
    expect(response.body).toBe('done /slow 0')
    expect(exit.code).toBe(0)
    expect(app.output()).toContain('hook: db closed')
    expect(app.output()).toContain('[async logger] a statechange listener rejected')
    expect(app.output()).toMatch(/\[async logger\] closed \(SIGTERM\) gracefully/)
  })

  it('keeps a non-zero exit code the application set', async () => {
    const app = await start({}, { FIXTURE_EXIT_CODE: '3' })
    app.kill('SIGTERM')
    const exit = await within(3_000, app.exited, 'the process to exit')
    expect(exit.code).toBe(3)
  })

  it('exits with the failed code when the drain is forced at the deadline', async () => {
    const app = await start({ timeoutMs: 300 })
    const stuck = request(app.port, { path: '/slow?ms=20000' }).catch(
      (error: NodeJS.ErrnoException) => error.code,
    )
    await app.waitForLine('received /slow')
    app.kill('SIGTERM')
    const exit = await within(3_000, app.exited, 'the process to exit')
    expect(exit.code).toBe(1)
    expect(await stuck).toBe('ECONNRESET')
    expect(app.output()).toContain('hook: db closed')
    expect(app.output()).toMatch(/closed \(SIGTERM\) FORCED/)
  })

  it('caps an onClose hook already running at forcedHookTimeoutMs from a second signal on', async () => {
    const app = await start({ hookTimeoutMs: 8_000, forcedHookTimeoutMs: 300 }, { FIXTURE_STUCK_HOOK: '1' })
    app.kill('SIGTERM')
    await app.waitForLine('hook: stuck started')
    // Signals within 500 ms of the first count as it: sent until one counts as a second.
    const forcedAt = await signalUntilCounted(app, 'SIGINT', 'second signal')
    const exit = await within(3_000, app.exited, 'the process to exit')
    expect(exit.code).toBe(1)
    expect(exit.at - forcedAt).toBeGreaterThanOrEqual(300)
    expect(exit.at - forcedAt).toBeLessThan(2_000)
    const out = app.output()
    expect(out).toContain('second signal (SIGINT): forcing the shutdown now')
    expect(out).toMatch(
      /close hook "stuck" timed out after \d+ ms \(cut to 300 ms once the shutdown was forced\)/,
    )
    expect(out).toContain('hook: db closed')
  })

  it('drains a Shutdown made after every earlier one closed on its first signal, not forcing it', async () => {
    const app = await startFixture(restart)
    // SIGINT, then SIGTERM soon after: to the new Shutdown, a first signal, not a duplicate of the last.
    app.kill('SIGINT')
    const restarted = await app.waitForLine(/^restarted \d+/)
    const { response, exit } = await signalDuringSlow(app, ['SIGTERM'], {
      port: Number(restarted.split(' ')[1]),
    })
    expect(response.body).toBe('done /slow')
    expect(exit.code).toBe(0)
    const out = app.output()
    expect(out).not.toContain('second signal')
    expect(out).toContain('closed (SIGINT) gracefully')
    expect(out).toMatch(/closed \(SIGTERM\) gracefully in \d+ ms: requests 1 completed/)
  })

  it('exits at once, not through the watchdog, when an IPC channel to its parent is held open (cluster workers, PM2)', async () => {
    const app = await start({ exitWatchdogMs: 5_000 }, { FIXTURE_IPC_LISTENER: '1' })
    const sentAt = app.kill('SIGTERM')
    const exit = await within(3_000, app.exited, 'the process to exit')
    expect(exit.code).toBe(0)
    expect(exit.at - sentAt).toBeLessThan(2_000)
    expect(app.output()).not.toContain('did not exit within')
  })

  it('exits through the watchdog when the app leaves a handle open, naming what held the loop', async () => {
    const app = await start({ exitWatchdogMs: 300 }, { FIXTURE_LEAK_INTERVAL: '1' })
    const sentAt = app.kill('SIGTERM')
    const exit = await within(3_000, app.exited, 'the watchdog to exit the process')
    expect(exit.code).toBe(0)
    expect(exit.at - sentAt).toBeGreaterThanOrEqual(300)
    expect(app.output()).toMatch(
      /did not exit within 300 ms of the shutdown; still holding the event loop: .*Timeout/,
    )
  })

  // --trace-exit makes Node print a warning whenever process.exit() ends the process; a process
  // whose event loop simply empties prints none.
  const traceExit = { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --trace-exit` }

  /** Starts the fixture with `env` under --trace-exit, sends SIGTERM, and waits for all its output. */
  async function untilEnd(env: Record<string, string>) {
    const app = await start({}, { ...traceExit, ...env })
    const closed = new Promise((resolve) => app.child.once('close', resolve))
    app.kill('SIGTERM')
    const exit = await within(3_000, app.exited, 'the process to exit')
    await within(3_000, closed, 'the output to end')
    return { output: app.output(), code: exit.code }
  }

  it("ends the process with process.exit() once every 'exit' listener has run, with the code they left", async () => {
    const { output, code } = await untilEnd({ FIXTURE_EXIT_LISTENER: '5' })
    expect(output).toContain('exit listener ran with 0')
    expect(output).toMatch(/Exited the environment with code 5/)
    expect(code).toBe(5)
  })

  it.each([
    ["an 'exit' listener was added after the shutdown ended", 'keep'],
    ["a listener that was there as 'exit' began is removed during it", 'remove late'],
  ])('leaves the end to Node when %s', async (_, earlier) => {
    const { output, code } = await untilEnd({
      FIXTURE_EXIT_LISTENER: earlier,
      FIXTURE_LATE_EXIT_LISTENER: '1',
    })
    expect(output).toContain('exit listener ran with 0')
    expect(output).toContain('late exit listener ran with 0')
    expect(output).not.toContain('Exited the environment')
    expect(code).toBe(0)
  })

  it.each(['exception', 'rejection'])(
    'lets Node print an unhandled %s after the shutdown ended, and end with code 1',
    async (kind) => {
      const { output, code } = await untilEnd({ FIXTURE_LATE_THROW: kind })
      expect(output).toContain('closed (SIGTERM) gracefully')
      expect(output).toMatch(/Error: late failure after the shutdown\n\s+at /)
      expect(code).toBe(1)
    },
  )

  it('warns about other SIGTERM listeners installed before it, once', async () => {
    const app = await start({}, { FIXTURE_OTHER_LISTENER: '1' })
    expect(app.output()).toContain('1 other SIGTERM listener(s) already installed')
    app.kill('SIGTERM')
    const exit = await within(3_000, app.exited, 'the process to exit')
    expect(exit.code).toBe(0)
    expect(app.output().match(/other SIGTERM listener/g)).toHaveLength(1)
  })

  it.each([
    ['beside none', { FIXTURE_LATE_OTHER_LISTENER: '1' }],
    ['in place of one there before', { FIXTURE_OTHER_LISTENER: '1', FIXTURE_LATE_OTHER_LISTENER: 'instead' }],
  ])('warns at the signal about another SIGTERM listener added after it, %s', async (_, env) => {
    const app = await start({}, env)
    app.kill('SIGTERM')
    const exit = await within(3_000, app.exited, 'the process to exit')
    expect(exit.code).toBe(0)
    expect(app.output()).toContain("1 other SIGTERM listener(s) added after lameduck's run beside it")
    expect(app.output()).toContain('late other listener ran')
  })
})
