import http from 'node:http'
import { closeServer, deferred, keepAliveAgent, listen, request, until, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createShutdown, graceful } from '../src/index.js'
import { koaVersions } from './app.js'

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

// "Several apps, one Shutdown" with one app's middleware run inside the other's chain on the same
// ctx (what koa-mount does): the request passes two graceful() on one Shutdown, counted once.
describe.each(koaVersions)('%s: graceful() twice in one chain, on the same Shutdown', (_name, Koa) => {
  it('counts the request once, keeps it counted until the whole chain settles, and drains gracefully', async () => {
    const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000, drainDelayMs: 0 })
    const parked = deferred<void>()
    const release = deferred<void>()
    const app = new Koa()
    app.use(graceful({ shutdown, health: true }))
    app.use(graceful({ shutdown }))
    app.use(async (ctx) => {
      if (ctx.path === '/slow') {
        parked.resolve()
        await release.promise
      }
      ctx.body = ctx.path
    })
    const server = shutdown.attach(http.createServer(app.callback()))
    const port = await listen(server)
    cleanups.push(() => closeServer(server))
    const agent = keepAliveAgent(1)
    cleanups.push(() => agent.destroy())

    const quick = await within(2_000, request(port, { agent, path: '/quick' }), '/quick')
    expect([quick.status, quick.body]).toEqual([200, '/quick'])
    await until(() => shutdown.inFlight === 0, 2_000, 'the request to be released')

    const slow = request(port, { agent, path: '/slow' })
    await within(2_000, parked.promise, '/slow to park')
    expect(shutdown.inFlight).toBe(1)
    const closing = shutdown.close('test')
    await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
    release.resolve()
    const answered = await within(2_000, slow, '/slow to finish')
    expect([answered.status, answered.body, answered.headers.connection]).toEqual([200, '/slow', 'close'])
    const report = await within(2_000, closing, 'the drain to complete')
    expect(report.graceful).toBe(true)
    expect(report.requests.forced).toBe(0)
    expect(report.requests.completed).toBe(1)
  })
})
