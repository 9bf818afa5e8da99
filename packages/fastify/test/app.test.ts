import type { AdapterApp } from '@lameduck/test-utils'
import { keepAliveAgent, request, until, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createApp } from './app.js'

let current: AdapterApp | undefined
afterEach(async () => {
  await current?.close()
  current = undefined
})

async function start(options: Parameters<typeof createApp>[0]) {
  current = await createApp(options)
  return current
}

describe('the contract app (test/app.ts)', () => {
  it('serves every contract route and parks /slow and /stream until released', async () => {
    const app = await start({ signals: false, logger: false })
    const agent = keepAliveAgent()
    expect(await request(app.port, { agent, path: '/fast' })).toMatchObject({ status: 200, body: 'fast' })
    expect(await request(app.port, { agent, method: 'POST', path: '/echo', body: 'hello' })).toMatchObject({
      status: 200,
      body: 'hello',
    })
    expect((await request(app.port, { agent, path: '/big' })).body).toHaveLength(1024 * 1024)
    expect((await request(app.port, { agent, path: '/throw' })).status).toBe(500)
    expect((await request(app.port, { agent, path: '/reject' })).status).toBe(500)

    const slow = request(app.port, {
      method: 'POST',
      path: '/slow',
      body: 'abc',
      headers: { 'content-type': 'application/octet-stream' },
    })
    const slowGate = await within(2_000, app.nextParked(), '/slow to park')
    const stream = request(app.port, { path: '/stream' })
    const streamGate = await within(2_000, app.nextParked(), '/stream to park')
    expect(app.parkedCount).toBe(2)
    expect(app.shutdown.inFlight).toBe(2)
    slowGate.resolve()
    streamGate.resolve()
    expect(await within(2_000, slow, 'the /slow response')).toMatchObject({ status: 200, body: 'slow 3' })
    const streamed = await within(2_000, stream, 'the /stream response')
    expect(streamed.body).toBe('chunk 0\nchunk 1\n')
    expect(streamed.headers['transfer-encoding']).toBe('chunked')
    expect(app.hits).toEqual(['/fast', '/echo', '/big', '/throw', '/reject', '/slow', '/stream'])
    agent.destroy()
  })

  it('ends /sse when the shutdown signal aborts', async () => {
    const app = await start({ signals: false, logger: false, timeoutMs: 3_000 })
    const sse = request(app.port, { path: '/sse' })
    await until(() => app.hits.includes('/sse'), 2_000, '/sse to start')
    const report = app.shutdown.close('test')
    const response = await within(2_000, sse, 'the /sse response to end')
    expect(response.headers['content-type']).toBe('text/event-stream')
    expect(response.body).toBe('data: hello\n\n')
    expect((await within(3_000, report, 'the report')).graceful).toBe(true)
  })
})
