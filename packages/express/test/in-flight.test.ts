import { keepAliveAgent, request, until, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { type ExpressTestApp, startExpressApp } from './helpers/app.ts'
import { expressVersions } from './helpers/express.ts'

let running: ExpressTestApp | undefined
afterEach(async () => {
  await running?.close()
  running = undefined
})

const BIG = 256 * 1024

describe.each(expressVersions)('requests in flight at the signal with $name', ({ express }) => {
  it('finish with their full bodies and Connection: close', async () => {
    const app = await startExpressApp(
      express,
      { signals: false, logger: false, timeoutMs: 5_000 },
      (app, { route, park }) => {
        app.get(
          '/slow',
          route(async (_req, res) => {
            await park()
            res.send('slow done')
          }),
        )
        app.get(
          '/big',
          route(async (_req, res) => {
            await park()
            res.type('text/plain').send('y'.repeat(BIG))
          }),
        )
        app.get(
          '/stream',
          route(async (_req, res) => {
            res.writeHead(200, { 'content-type': 'text/plain' })
            res.write('chunk 0\n')
            await park()
            res.end('chunk 1\n')
          }),
        )
      },
    )
    running = app
    const [a, b, c] = [keepAliveAgent(), keepAliveAgent(), keepAliveAgent()]
    const agents = [a, b, c]
    // Each connection is used once first, so these are real keep-alive connections.
    for (const agent of agents) await request(app.port, { agent, path: '/missing' })
    const slow = request(app.port, { agent: a, path: '/slow' })
    const big = request(app.port, { agent: b, path: '/big' })
    const stream = request(app.port, { agent: c, path: '/stream' })
    const gates = await within(
      2_000,
      Promise.all([app.nextParked(), app.nextParked(), app.nextParked()]),
      'three requests to park',
    )
    expect(app.shutdown.inFlight).toBe(3)

    const report = app.shutdown.close('test')
    await until(() => app.shutdown.state === 'stopping', 2_000, 'stopping')
    for (const gate of gates) gate.resolve()

    const [slowRes, bigRes, streamRes] = await within(
      2_000,
      Promise.all([slow, big, stream]),
      'the three responses',
    )
    expect([slowRes.status, slowRes.body, slowRes.headers.connection, slowRes.reused]).toEqual([
      200,
      'slow done',
      'close',
      true,
    ])
    expect([bigRes.status, bigRes.body.length, bigRes.headers.connection, bigRes.reused]).toEqual([
      200,
      BIG,
      'close',
      true,
    ])
    expect(bigRes.body).toBe('y'.repeat(BIG))
    // Its headers went out before the signal, so only the body can be promised: in full.
    expect([streamRes.status, streamRes.body]).toEqual([200, 'chunk 0\nchunk 1\n'])

    const done = await within(3_000, report, 'the drain to finish')
    expect(done.graceful).toBe(true)
    expect(done.requests.completed).toBe(3)
    expect(app.shutdown.inFlight).toBe(0)
    for (const agent of agents) agent.destroy()
  })
})
