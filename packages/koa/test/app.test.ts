import { closeServer, keepAliveAgent, request, until, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createKoa2App, createKoaApp, type KoaTestApp } from './app.js'

let app: KoaTestApp | undefined
afterEach(async () => {
  if (app) {
    await app.shutdown.force('afterEach')
    await app.close()
  }
  app = undefined
})

// The app the shared conformance suite imports: a smoke test of its routes on both Koa versions.
describe.each([
  ['koa 2', createKoa2App],
  ['koa 3', createKoaApp],
])('%s: the conformance app (test/app.ts)', (_name, create) => {
  it('answers every contract route and records the handlers that ran', async () => {
    app = (await create({ signals: false, logger: false })) as KoaTestApp
    const agent = keepAliveAgent()
    expect(await request(app.port, { agent, path: '/fast' })).toMatchObject({ status: 200, body: 'fast' })
    expect(await request(app.port, { agent, method: 'POST', path: '/echo', body: 'echo me' })).toMatchObject({
      status: 200,
      body: 'echo me',
    })

    const slow = request(app.port, { agent: false, method: 'POST', path: '/slow', body: 'abcd' })
    const slowGate = await within(2_000, app.nextParked(), '/slow to park')
    expect(app.parkedCount).toBe(1)
    slowGate.resolve()
    expect(await within(2_000, slow, 'the /slow response')).toMatchObject({ status: 200, body: 'slow 4' })
    expect(app.parkedCount).toBe(0)

    const stream = request(app.port, { agent: false, path: '/stream' })
    const streamGate = await within(2_000, app.nextParked(), '/stream to park')
    streamGate.resolve()
    const streamed = await within(2_000, stream, 'the /stream response')
    expect(streamed).toMatchObject({ status: 200, body: 'chunk 0\nchunk 1\n' })
    expect(streamed.headers['transfer-encoding']).toBe('chunked')

    const big = await request(app.port, { agent, path: '/big' })
    expect(big.body).toBe('x'.repeat(1024 * 1024))
    expect(await request(app.port, { agent, path: '/throw' })).toMatchObject({
      status: 500,
      body: 'Internal Server Error',
    })
    expect(await request(app.port, { agent, path: '/reject' })).toMatchObject({
      status: 500,
      body: 'Internal Server Error',
    })

    const sse = request(app.port, { agent: false, path: '/sse' })
    await until(() => app?.hits.includes('/sse') === true, 2_000, '/sse to start')
    void app.shutdown.close('test')
    const events = await within(2_000, sse, 'the SSE stream to end on shutdown.signal')
    expect(events).toMatchObject({ status: 200, body: 'data: hello\n\n' })
    expect(events.headers['content-type']).toMatch(/^text\/event-stream/)
    expect(app.hits).toEqual(['/fast', '/echo', '/slow', '/stream', '/big', '/throw', '/reject', '/sse'])
    agent.destroy()
  })

  it('does not attach the server when told not to (the core then discovers it on the first request)', async () => {
    const messages: string[] = []
    const logger = { info: (_: object, message: string) => messages.push(message), warn() {}, error() {} }
    app = (await create({ signals: false, logger }, { attach: false })) as KoaTestApp
    expect(messages).toEqual([])
    await request(app.port, { agent: false, path: '/fast' })
    expect(
      messages.filter((message) => message.includes('attached the server on its first request')),
    ).toHaveLength(1)
    await closeServer(app.server)
  })
})
