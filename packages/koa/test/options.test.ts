import * as core from '@lameduck/core'
import { createShutdown } from '@lameduck/core'
import { request, until, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import * as koa from '../src/index.js'
import { graceful } from '../src/index.js'
import { createAppWith, type KoaTestApp, koaVersions } from './app.js'

const apps: KoaTestApp[] = []
afterEach(async () => {
  for (const app of apps.splice(0)) {
    await app.shutdown.force('afterEach')
    await app.close()
  }
})

describe('graceful() options', () => {
  it('are validated when graceful() is called, with the core messages naming @lameduck/koa', () => {
    expect(() => graceful({ timeout: 1 } as never)).toThrow(
      expect.objectContaining({
        name: 'TypeError',
        code: 'ERR_LAMEDUCK_INVALID_OPTION',
        message: '@lameduck/koa: unknown option "timeout"; did you mean "timeoutMs"?',
      }),
    )
    expect(() => graceful({ health: 'yes' } as never)).toThrow(
      expect.objectContaining({
        code: 'ERR_LAMEDUCK_INVALID_OPTION',
        message:
          '@lameduck/koa: option "health" must be true, false or an object { readyPath?, livePath? }; received "yes" (string).',
      }),
    )
    const shared = createShutdown({ signals: false, logger: false })
    expect(() => graceful({ shutdown: shared, timeoutMs: 1 })).toThrow(
      expect.objectContaining({
        code: 'ERR_LAMEDUCK_INVALID_OPTION',
        message:
          '@lameduck/koa: option "timeoutMs" must be set on the given "shutdown" (createShutdown) rather than beside it; received 1 (number).',
      }),
    )
    // The Shutdown's own methods are the core's, whoever created it.
    expect(() => graceful({ shutdown: shared }).shutdown.track('', Promise.resolve())).toThrow(
      expect.objectContaining({
        code: 'ERR_LAMEDUCK_INVALID_ARGUMENT',
        message: expect.stringMatching(/^@lameduck\/core: track\(\) argument "label"/),
      }),
    )
  })

  it('returns a named middleware carrying its Shutdown', () => {
    const mw = graceful({ signals: false, logger: false })
    expect(mw.name).toBe('gracefulMiddleware')
    expect(core.isShutdown(mw.shutdown)).toBe(true)
  })

  it('re-exports the whole core API', () => {
    const ours = new Map(Object.entries(koa))
    expect(Object.keys(core).length).toBeGreaterThan(0)
    for (const [name, value] of Object.entries(core)) expect(ours.get(name), name).toBe(value)
  })
})

describe.each(koaVersions)('%s: one Shutdown shared by two apps', (_name, Koa) => {
  it('counts both, stops both listeners and drains both', async () => {
    const shared = createShutdown({ signals: false, logger: false, timeoutMs: 5_000 })
    const create = createAppWith(Koa)
    const one = await create({ shutdown: shared })
    apps.push(one)
    const two = await create({ shutdown: shared, health: true })
    apps.push(two)
    expect([one.shutdown, two.shutdown]).toEqual([shared, shared])
    const first = request(one.port, { agent: false, path: '/slow' })
    const second = request(two.port, { agent: false, path: '/slow' })
    const gates = [
      await within(2_000, one.nextParked(), 'app one to park'),
      await within(2_000, two.nextParked(), 'app two to park'),
    ]
    expect(shared.inFlight).toBe(2)
    const report = shared.close('test')
    await until(() => !one.server.listening && !two.server.listening, 2_000, 'both listeners to close')
    for (const gate of gates) gate.resolve()
    const responses = await within(2_000, Promise.all([first, second]), 'both responses')
    expect(responses.map((r) => [r.status, r.headers.connection])).toEqual([
      [200, 'close'],
      [200, 'close'],
    ])
    expect(await within(2_000, report, 'the report')).toMatchObject({
      graceful: true,
      requests: { completed: 2 },
    })
  })
})
