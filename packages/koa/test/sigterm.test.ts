import { fileURLToPath } from 'node:url'
import {
  connectOutcome,
  keepAliveAgent,
  request,
  startFixture,
  stopFixtures,
  within,
} from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'

// The fixtures import the built dist/: run `pnpm --filter @lameduck/koa build` first (turbo does).
const esmFixture = fileURLToPath(new URL('./fixtures/server.mjs', import.meta.url))
const cjsFixture = fileURLToPath(new URL('./fixtures/server.cjs', import.meta.url))

afterEach(stopFixtures)

describe.each([
  ['koa 2', 'koa2'],
  ['koa 3', 'koa'],
])('%s in a child process stopped by a real SIGTERM', (_name, koaPackage) => {
  it('completes the slow response and the last request on a just-used connection with Connection: close, refuses new connections, runs onClose after the responses, exits 0', async () => {
    const fixture = await startFixture(esmFixture, [koaPackage])
    const slowAgent = keepAliveAgent()
    const idleAgent = keepAliveAgent()
    try {
      const slow = request(fixture.port, { agent: slowAgent, path: '/slow' })
      slow.catch(() => {}) // awaited below; a failed assertion before that must not leave it unhandled
      await fixture.waitForLine('parked /slow')
      const before = await request(fixture.port, { agent: idleAgent, path: '/fast' })
      expect([before.status, before.headers.connection]).toEqual([200, 'keep-alive'])

      fixture.kill('SIGTERM')
      await fixture.waitForLine('listening false')
      expect(await connectOutcome(fixture.port)).toBe('ECONNREFUSED')
      const last = await within(
        2_000,
        request(fixture.port, { agent: idleAgent, path: '/release' }),
        'the request on the just-used connection',
      )
      expect([last.status, last.body, last.reused, last.headers.connection]).toEqual([
        200,
        'released',
        true,
        'close',
      ])
      const slowResponse = await within(2_000, slow, 'the slow response')
      expect([slowResponse.status, slowResponse.body, slowResponse.headers.connection]).toEqual([
        200,
        'slow done',
        'close',
      ])
      const answeredAt = Date.now()

      const exit = await within(4_000, fixture.exited, 'the child to exit')
      expect([exit.code, exit.signal]).toEqual([0, null])
      // Prompt: not held by the keep-alive timeout (60 s), not ended by the core's watchdog (1 s).
      expect(exit.at - answeredAt).toBeLessThan(900)
      const output = fixture.output()
      expect(output).not.toContain('did not exit within')
      expect(output).toContain('closed (SIGTERM) gracefully')
      const lines = output.split('\n')
      const onClose = lines.indexOf('onClose db')
      expect(onClose).toBeGreaterThan(lines.indexOf('sent /slow'))
      expect(onClose).toBeGreaterThan(lines.indexOf('sent /release'))
      expect(lines.indexOf('sent /slow')).toBeGreaterThan(-1)
      expect(lines.indexOf('sent /release')).toBeGreaterThan(-1)
    } finally {
      slowAgent.destroy()
      idleAgent.destroy()
    }
  })

  it('works for CommonJS: require() of the built .cjs serves, then drains on SIGTERM and exits 0', async () => {
    const fixture = await startFixture(cjsFixture, [koaPackage])
    expect(fixture.output()).toContain(
      'exports graceful=function createShutdown=function middleware=gracefulMiddleware isShutdown=true',
    )
    expect(await request(fixture.port, { agent: false, path: '/' })).toMatchObject({
      status: 200,
      body: 'cjs same',
    })
    fixture.kill('SIGTERM')
    const exit = await within(4_000, fixture.exited, 'the child to exit')
    expect([exit.code, exit.signal]).toEqual([0, null])
    expect(fixture.output()).toContain('onClose cjs')
  })
})
