import type { AdapterApp } from '@lameduck/test-utils'
import { keepAliveAgent, request, until, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { adapterApps, createApp } from './app.js'

// A smoke test of test/app.ts, the Express side of the shared conformance suite: every route of the
// contract answers as described, and the Shutdown behind it sees the requests.
let running: AdapterApp | undefined
afterEach(async () => {
  await running?.close()
  running = undefined
})

describe('test/app.ts exports', () => {
  it('createApp is the Express 5 entry of adapterApps', () => {
    expect(adapterApps.map((entry) => entry.name)).toEqual(['Express 4', 'Express 5'])
    expect(typeof createApp).toBe('function')
  })
})

describe.each(adapterApps)('the adapter-contract app on $name', ({ createApp }) => {
  it('answers every contract route and records each handler that ran', async () => {
    const app = await createApp({ signals: false, logger: false })
    running = app
    const agent = keepAliveAgent()
    const fast = await request(app.port, { agent, path: '/fast' })
    expect([fast.status, fast.body]).toEqual([200, 'fast'])
    const echo = await request(app.port, { agent, method: 'POST', path: '/echo', body: 'abc' })
    expect([echo.status, echo.body]).toEqual([200, 'abc'])
    const big = await request(app.port, { agent, path: '/big' })
    expect([big.status, big.body.length, big.body.replaceAll('x', '')]).toEqual([200, 1024 * 1024, ''])
    expect((await request(app.port, { agent, path: '/throw' })).status).toBe(500)
    expect((await request(app.port, { agent, path: '/reject' })).status).toBe(500)

    const slow = request(app.port, { method: 'POST', path: '/slow', body: 'four' })
    const stream = request(app.port, { path: '/stream' })
    const first = await within(2_000, app.nextParked(), 'the first handler to park')
    const second = await within(2_000, app.nextParked(), 'the second handler to park')
    expect(app.parkedCount).toBe(2)
    expect(app.shutdown.inFlight).toBe(2)
    first.resolve()
    second.resolve()
    const [slowResponse, streamResponse] = await within(
      2_000,
      Promise.all([slow, stream]),
      'both parked responses',
    )
    expect([slowResponse.status, slowResponse.body]).toEqual([200, 'slow 4'])
    expect([streamResponse.status, streamResponse.body, streamResponse.headers['transfer-encoding']]).toEqual(
      [200, 'chunk 0\nchunk 1\n', 'chunked'],
    )
    await until(() => app.shutdown.inFlight === 0 && app.parkedCount === 0, 2_000, 'every request released')
    expect([...app.hits].sort()).toEqual(['/big', '/echo', '/fast', '/reject', '/slow', '/stream', '/throw'])
    agent.destroy()
  })

  it('ends /sse when the shutdown signal aborts, and works without attach (server discovered)', async () => {
    const app = await createApp({ signals: false, logger: false, timeoutMs: 3_000 }, { attach: false })
    running = app
    const sse = request(app.port, { path: '/sse' })
    await until(() => app.hits.includes('/sse'), 2_000, 'the SSE handler to start')
    const report = await within(3_000, app.shutdown.close('test'), 'the shutdown to drain the SSE stream')
    const response = await within(2_000, sse, 'the SSE response to end')
    expect([response.status, response.headers['content-type'], response.body]).toEqual([
      200,
      'text/event-stream',
      'data: hello\n\n',
    ])
    expect(report.graceful).toBe(true)
    expect(report.requests.completed).toBe(1)
  })
})
