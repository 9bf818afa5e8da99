import {
  connectOutcome,
  keepAliveAgent,
  type RawConnection,
  rawConnect,
  rawRequest,
  request,
  until,
  within,
} from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createAppWith, type KoaTestApp, koaVersions } from './app.js'

let app: KoaTestApp | undefined
const raws: RawConnection[] = []
afterEach(async () => {
  for (const raw of raws.splice(0)) raw.socket.destroy()
  if (app) {
    await app.shutdown.force('afterEach')
    await app.close()
  }
  app = undefined
})

describe.each(koaVersions)('%s: requests in flight when the shutdown starts', (_name, Koa) => {
  const create = createAppWith(Koa)

  it('finish with their full bodies and Connection: close; new connections are refused', async () => {
    app = await create({ signals: false, logger: false, timeoutMs: 5_000 })
    const agent = keepAliveAgent(2)
    const first = request(app.port, { agent, method: 'POST', path: '/slow', body: 'a body of 17 bytes' })
    const firstGate = await within(2_000, app.nextParked(), 'the first /slow to park')
    const second = request(app.port, { agent, path: '/slow' })
    const secondGate = await within(2_000, app.nextParked(), 'the second /slow to park')
    const streamRaw = await rawConnect(app.port)
    raws.push(streamRaw)
    streamRaw.write(rawRequest('GET', '/stream'))
    const streamGate = await within(2_000, app.nextParked(), '/stream to park')
    await streamRaw.waitFor('chunk 0\n')

    const report = app.shutdown.close('test')
    await until(() => app?.shutdown.state === 'stopping', 2_000, 'stopping')
    expect(await connectOutcome(app.port)).toBe('ECONNREFUSED')
    expect(app.shutdown.inFlight).toBe(3)
    firstGate.resolve()
    secondGate.resolve()
    streamGate.resolve()
    const responses = await within(2_000, Promise.all([first, second]), 'both /slow responses')
    expect(responses.map((r) => [r.status, r.body, r.headers.connection])).toEqual([
      [200, 'slow 18', 'close'],
      [200, 'slow 0', 'close'],
    ])
    // Its headers left before the signal, so it keeps its keep-alive header; the socket is closed after it.
    const { data, error } = await within(
      2_000,
      streamRaw.closed,
      'the stream connection to close after its body',
    )
    expect(error).toBeUndefined()
    expect(data).toContain('chunk 0\n')
    expect(data.endsWith('chunk 1\n\r\n0\r\n\r\n')).toBe(true)
    const done = await within(2_000, report, 'the report')
    expect(done).toMatchObject({ graceful: true, requests: { completed: 3, refused: 0, forced: 0 } })
    agent.destroy()
  })

  it('ctx.state.shutdown.signal ends an SSE stream when stopping begins, and the drain completes', async () => {
    app = await create({ signals: false, logger: false, timeoutMs: 5_000 })
    const raw = await rawConnect(app.port)
    raws.push(raw)
    raw.write(rawRequest('GET', '/sse'))
    await raw.waitFor('data: hello\n\n')
    expect(app.shutdown.inFlight).toBe(1)
    const report = app.shutdown.close('test')
    const { data } = await within(2_000, raw.closed, 'the SSE connection to end')
    expect(data.endsWith('\r\n0\r\n\r\n')).toBe(true)
    expect((await within(2_000, report, 'the report')).graceful).toBe(true)
  })

  it('downstream middleware finds the Shutdown at ctx.state.shutdown', async () => {
    app = await create({ signals: false, logger: false })
    expect(await request(app.port, { agent: false, path: '/state' })).toMatchObject({
      status: 200,
      body: 'same',
    })
  })

  it('works mounted alone, without attach(): the server is found on the first request, with one log line recommending attach', async () => {
    const messages: string[] = []
    const logger = { info: (_: object, message: string) => messages.push(message), warn() {}, error() {} }
    app = await create({ signals: false, logger, timeoutMs: 5_000 }, { attach: false })
    const agent = keepAliveAgent()
    expect((await request(app.port, { agent, path: '/fast' })).status).toBe(200)
    expect((await request(app.port, { agent, path: '/fast' })).reused).toBe(true)
    const recommendations = messages.filter((message) => message.includes('call shutdown.attach(server)'))
    expect(recommendations).toHaveLength(1)

    const slow = request(app.port, { agent: false, path: '/slow' })
    const gate = await within(2_000, app.nextParked(), '/slow to park')
    const report = app.shutdown.close('test')
    await until(() => app?.shutdown.state === 'stopping', 2_000, 'stopping')
    expect(await connectOutcome(app.port)).toBe('ECONNREFUSED')
    gate.resolve()
    const response = await within(2_000, slow, 'the in-flight /slow')
    expect([response.status, response.body, response.headers.connection]).toEqual([200, 'slow 0', 'close'])
    // The idle keep-alive socket, opened before the server was known, is closed too.
    expect(await within(2_000, report, 'the report')).toMatchObject({
      graceful: true,
      connectionsDestroyed: 0,
    })
    expect(messages.filter((message) => message.includes('call shutdown.attach(server)'))).toHaveLength(1)
    agent.destroy()
  })

  it('a request in flight that throws is still answered 500 by Koa', async () => {
    app = await create({ signals: false, logger: false, timeoutMs: 5_000 })
    const raw = await rawConnect(app.port)
    raws.push(raw)
    raw.write(rawRequest('GET', '/park-throw'))
    const gate = await within(2_000, app.nextParked(), '/park-throw to park')
    void app.shutdown.close('test')
    await until(() => app?.shutdown.state === 'stopping', 2_000, 'stopping')
    gate.resolve()
    await raw.waitFor('\r\n\r\nInternal Server Error')
    expect(raw.received()).toMatch(/^HTTP\/1\.1 500 Internal Server Error\r\n/)
    await until(() => app?.shutdown.inFlight === 0, 2_000, 'the release after the 500')
  })

  it('the 500 of a request in flight that throws carries Connection: close and its socket closes at once', async () => {
    app = await create({ signals: false, logger: false, timeoutMs: 5_000 })
    const raw = await rawConnect(app.port)
    raws.push(raw)
    raw.write(rawRequest('GET', '/park-throw'))
    const gate = await within(2_000, app.nextParked(), '/park-throw to park')
    const report = app.shutdown.close('test')
    await until(() => app?.shutdown.state === 'stopping', 2_000, 'stopping')
    gate.resolve()
    const { data, error } = await within(2_000, raw.closed, 'the socket to close right after the 500')
    expect(error).toBeUndefined()
    expect(data).toMatch(/^HTTP\/1\.1 500 Internal Server Error\r\n/)
    expect(data.slice(0, data.indexOf('\r\n\r\n')).toLowerCase()).toContain('\r\nconnection: close')
    expect((await within(2_000, report, 'the drain')).graceful).toBe(true)
  })
})
