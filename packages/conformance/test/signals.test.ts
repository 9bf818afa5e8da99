import net from 'node:net'
import { fileURLToPath } from 'node:url'
import {
  connectOutcome,
  keepAliveAgent,
  request,
  signalUntilCounted,
  startFixture,
  stopFixtures,
  within,
} from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'

// Real signals to child processes running the built packages (dist/): exit codes, output order and
// loose time bounds. Each fixture prints `ready <port>` once it can be signalled.
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url))
const app = (options: object, env: Record<string, string> = {}) =>
  startFixture(fixture('app.mjs'), [], { LAMEDUCK_OPTIONS: JSON.stringify(options), ...env })
const cut = (promise: Promise<unknown>) =>
  promise.then(
    () => 'answered',
    (error: NodeJS.ErrnoException) => error.code ?? error.message,
  )
const count = (text: string, line: string) => text.split('\n').filter((l) => l === line).length

afterEach(stopFixtures)

describe('signals in a real process', () => {
  it('SIGTERM before listen(): hooks run, exit 0 promptly', async () => {
    const child = await startFixture(fixture('before-listen.mjs'))
    const sentAt = child.kill('SIGTERM')
    const exit = await within(3_000, child.exited, 'the process to exit')
    expect(exit.code).toBe(0)
    expect(exit.at - sentAt).toBeLessThan(2_000)
    expect(child.output()).toContain('hook: startup cancelled')
    expect(child.output()).toContain('closed graceful=true exitCode=0')
    expect(count(child.output(), 'exit 0')).toBe(1)
  })

  it('SIGTERM before listen(), listen() after the shutdown: the late listener never accepts and the process still exits promptly', async () => {
    const child = await startFixture(fixture('before-listen.mjs'), [], { FIXTURE_LATE_LISTEN: '1' })
    child.kill('SIGTERM')
    await child.waitForLine('closed graceful=true')
    // The start-up work finishes after the shutdown and calls listen(), as real apps do.
    child.child.send('listen')
    const line = await child.waitForLine(/^(listening \d+|listen failed)/)
    const sentAt = Date.now()
    if (line.startsWith('listening'))
      expect(await connectOutcome(Number(line.split(' ')[1]))).toBe('ECONNREFUSED')
    const exit = await within(3_000, child.exited, 'the process to exit')
    expect(exit.code).toBe(0)
    expect(exit.at - sentAt).toBeLessThan(1_000)
  })

  it('SIGTERM during the drain delay: still serves new connections until the delay ends, then exits 0', async () => {
    // Long enough that a stalled CI machine still sends its request inside the delay.
    const child = await app({ timeoutMs: 4_000, drainDelayMs: 1_000 })
    const sentAt = child.kill('SIGTERM')
    await child.waitForLine('first state draining')
    const during = await request(child.port, { path: '/fast', agent: false })
    expect([during.status, during.body]).toEqual([200, 'done /fast'])
    await child.waitForLine('first state stopping')
    expect(await connectOutcome(child.port)).toBe('ECONNREFUSED')
    const exit = await within(4_000, child.exited, 'the process to exit')
    expect(exit.code).toBe(0)
    expect(exit.at - sentAt).toBeGreaterThanOrEqual(1_000)
    expect(exit.at - sentAt).toBeLessThan(3_500)
    const out = child.output()
    expect(out.indexOf('first received /fast')).toBeLessThan(out.indexOf('first state stopping'))
    expect(out.indexOf('first state stopping')).toBeLessThan(out.indexOf('first hook: db closed'))
  })

  it('a second signal forces: the stuck request is cut, close hooks still run but capped, exit 1', async () => {
    const child = await app(
      { timeoutMs: 10_000, forcedHookTimeoutMs: 200 },
      { FIXTURE_HOOKS: 'db,slow:10000:10000' },
    )
    const stuck = cut(request(child.port, { path: '/hang', agent: false }))
    await child.waitForLine('first received /hang')
    child.kill('SIGTERM')
    await child.waitForLine('first state stopping')
    // Signals within 500 ms of the first count as it: sent until one counts as a second.
    const secondAt = await signalUntilCounted(child, 'SIGINT', 'second signal')
    const exit = await within(3_000, child.exited, 'the process to exit after the second signal')
    expect(exit.code).toBe(1)
    expect(exit.at - secondAt).toBeLessThan(2_000)
    expect(await stuck).toMatch(/ECONNRESET|socket hang up/)
    const out = child.output()
    expect(out).toContain('second signal (SIGINT): forcing the shutdown now')
    // Newest first: the slow hook (capped at 200 ms), then the database.
    expect(out.indexOf('first hook: slow started')).toBeLessThan(out.indexOf('first hook: db closed'))
    expect(out).toContain('first closed graceful=false exitCode=1')
    expect(count(out, 'exit 1')).toBe(1)
  })

  it('a third signal exits at once with 1, even while a capped hook still runs', async () => {
    const child = await app(
      { timeoutMs: 10_000, forcedHookTimeoutMs: 8_000 },
      { FIXTURE_HOOKS: 'db,slow:10000:10000' },
    )
    child.kill('SIGTERM')
    await child.waitForLine('first state stopping')
    await child.waitForLine('first hook: slow started')
    await signalUntilCounted(child, 'SIGINT', 'second signal (SIGINT)')
    const thirdAt = await signalUntilCounted(child, 'SIGTERM', 'third signal')
    const exit = await within(3_000, child.exited, 'the process to exit on the third signal')
    expect(exit.code).toBe(1)
    expect(exit.at - thirdAt).toBeLessThan(1_000)
    expect(child.output()).toContain('third signal (SIGTERM): exiting at once with code 1')
    expect(child.output()).not.toContain('first hook: db closed')
  })

  it('close() from inside a handler: that response completes with Connection: close, the process ends by itself with 0', async () => {
    const child = await app({ timeoutMs: 3_000 })
    const agent = keepAliveAgent()
    const answered = await request(child.port, { path: '/close', agent })
    expect([answered.status, answered.body, answered.headers.connection]).toEqual([200, 'closing', 'close'])
    const exit = await within(3_000, child.exited, 'the process to exit once nothing holds it')
    agent.destroy()
    expect(exit.code).toBe(0)
    expect(child.output()).toContain('first closed graceful=true exitCode=0')
    expect(child.output()).toMatch(/closed \(handler\) gracefully/)
  })

  it('a SIGTERM during a shutdown close() started joins it: one run, not forced, exit 0', async () => {
    const child = await app({ timeoutMs: 3_000, drainDelayMs: 1_000 })
    const answered = await request(child.port, { path: '/close', agent: false })
    expect(answered.body).toBe('closing')
    await child.waitForLine('first state draining')
    child.kill('SIGTERM')
    const exit = await within(4_000, child.exited, 'the process to exit')
    expect(exit.code).toBe(0)
    const out = child.output()
    expect(count(out, 'first closed graceful=true exitCode=0')).toBe(1)
    expect(out).toMatch(/closed \(handler\) gracefully/)
    expect(out).not.toContain('second signal')
  })

  it('two Shutdowns in one process: one SIGTERM closes both, the process exits once with the highest code', async () => {
    const child = await app(
      { timeoutMs: 3_000 },
      { FIXTURE_SECOND: JSON.stringify({ timeoutMs: 3_000, exitCodes: { failed: 3 } }) },
    )
    const secondPort = Number((await child.waitForLine(/^second \d+/)).split(' ')[1])
    const slow = request(secondPort, { path: '/slow', agent: false })
    await child.waitForLine('second received /slow')
    child.kill('SIGTERM')
    expect((await within(3_000, slow, 'the second server to finish its request')).status).toBe(200)
    const exit = await within(3_000, child.exited, 'the process to exit')
    expect(exit.code).toBe(3)
    const out = child.output()
    expect(count(out, 'first closed graceful=true exitCode=0')).toBe(1)
    expect(count(out, 'second closed graceful=true exitCode=3')).toBe(1)
    expect(count(out, 'first hook: db closed')).toBe(1)
    expect(count(out, 'second hook: db closed')).toBe(1)
    expect(count(out, 'exit 3')).toBe(1)
  })

  it('the ESM and CJS builds (directly and through the adapters) install one listener per signal and exit once', async () => {
    const child = await startFixture(fixture('dual.mjs'), [], { FIXTURE_CJS_CODE: '4' })
    const out = () => child.output()
    expect(out()).toContain('listeners SIGTERM=1 SIGINT=1')
    expect(out()).toContain('brands true,true,true,true')
    child.kill('SIGTERM')
    const exit = await within(3_000, child.exited, 'the process to exit')
    expect(exit.code).toBe(4)
    for (const name of ['core esm', 'core cjs', 'express esm', 'koa cjs'])
      expect(count(out(), `hook: ${name}`)).toBe(1)
    expect(count(out(), 'exit 4')).toBe(1)
  })

  it('a server that failed to listen (EADDRINUSE) does not stop the shutdown: SIGTERM still drains and exits 0', async () => {
    const blocker = net.createServer()
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
    const taken = (blocker.address() as net.AddressInfo).port
    try {
      const child = await app({ timeoutMs: 3_000 }, { FIXTURE_TAKEN: String(taken) })
      expect(child.output()).toContain('listen failed EADDRINUSE')
      const served = await request(child.port, { path: '/fast', agent: false })
      expect(served.status).toBe(200)
      const sentAt = child.kill('SIGTERM')
      const exit = await within(3_000, child.exited, 'the process to exit')
      expect(exit.code).toBe(0)
      expect(exit.at - sentAt).toBeLessThan(2_000)
      expect(child.output()).toContain('first closed graceful=true exitCode=0')
      // The blocker's port was never taken over or closed by the shutdown.
      expect(await connectOutcome(taken)).toBe('connected')
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()))
    }
  })
})
