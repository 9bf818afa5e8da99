import http from 'node:http'
import { closeServer, deferred, keepAliveAgent, listen, request, until, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createShutdown, graceful } from '../src/index.js'
import { expressVersions } from './helpers/express.ts'

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

// "Several apps, one Shutdown" with one app mounted inside the other: a request to the sub-app
// passes both graceful() middlewares and must be counted once, released once.
describe.each(expressVersions)('a sub-app with its graceful() on one Shutdown, $name', ({ express }) => {
  it('counts a request through both middlewares once: released when it closes, and the drain is graceful', async () => {
    const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000, drainDelayMs: 0 })
    const parked = deferred<void>()
    const release = deferred<void>()
    const admin = express()
    admin.use(graceful({ shutdown }))
    admin.get('/stats', (_req, res) => {
      res.send('stats')
    })
    admin.get('/slow', async (_req, res) => {
      parked.resolve()
      await release.promise
      res.send('slow')
    })
    const app = express()
    app.use(graceful({ shutdown, health: true }))
    app.use('/admin', admin)
    const server = shutdown.attach(http.createServer(app))
    const port = await listen(server)
    cleanups.push(() => closeServer(server))
    const agent = keepAliveAgent(1)
    cleanups.push(() => agent.destroy())

    const stats = await within(2_000, request(port, { agent, path: '/admin/stats' }), '/admin/stats')
    expect([stats.status, stats.body]).toEqual([200, 'stats'])
    await until(() => shutdown.inFlight === 0, 2_000, 'the mounted request to be released')

    const slow = request(port, { agent, path: '/admin/slow' })
    await within(2_000, parked.promise, '/admin/slow to park')
    expect(shutdown.inFlight).toBe(1)
    const closing = shutdown.close('test')
    await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
    release.resolve()
    const answered = await within(2_000, slow, '/admin/slow to finish')
    expect([answered.status, answered.body, answered.headers.connection]).toEqual([200, 'slow', 'close'])
    const report = await within(2_000, closing, 'the drain to complete')
    expect(report.graceful).toBe(true)
    expect(report.requests.forced).toBe(0)
    expect(report.requests.completed).toBe(1)
  })
})
