import http from 'node:http'
import {
  closeServer,
  deferred,
  listen,
  parseResponses,
  rawConnect,
  rawRequest,
  request,
  until,
  within,
} from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createShutdown, writeRefusal } from '../src/index.js'
import { type Gate, startApp, type TestApp } from './helpers/app.js'

let app: TestApp | undefined
const servers: http.Server[] = []
afterEach(async () => {
  if (app) await closeServer(app.server)
  app = undefined
  for (const server of servers.splice(0)) await closeServer(server)
})

describe('pipelined requests across the gate', () => {
  it('answers every request pipelined before stopping, closing after the newest one', async () => {
    app = await startApp({ timeoutMs: 5_000 })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/slow') + rawRequest('GET', '/slow'))
    const first = await within(2_000, app.nextParked(), 'the first request to park')
    const second = await within(2_000, app.nextParked(), 'the pipelined request to park')
    const report = app.shutdown.close('test')
    first.resolve()
    second.resolve()
    const { data, error } = await within(3_000, raw.closed, 'the connection to close')
    expect(error).toBeUndefined()
    expect(parseResponses(data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
      [200, 'ok /slow', 'keep-alive'],
      [200, 'ok /slow', 'close'],
    ])
    expect((await report).requests.completed).toBe(2)
  })

  it('never drops a response already written behind a slower one: the socket is reaped once idle', async () => {
    app = await startApp({ timeoutMs: 5_000 })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/slow') + rawRequest('GET', '/two'))
    const gate = await within(2_000, app.nextParked(), 'the first request to park')
    await until(() => app?.hits.includes('/two') === true, 2_000, 'the pipelined request to be answered')
    const report = app.shutdown.close('test')
    gate.resolve()
    const { data, error } = await within(3_000, raw.closed, 'the connection to close')
    expect(error).toBeUndefined()
    expect(parseResponses(data).map((r) => [r.status, r.body])).toEqual([
      [200, 'ok /slow'],
      [200, 'ok /two'],
    ])
    expect((await report).graceful).toBe(true)
  })

  it.each<Gate>(['enter', 'admit'])(
    'releases a request pipelined behind a slow one when the client leaves before either is answered (%s)',
    async (via) => {
      app = await startApp({ timeoutMs: 5_000 }, via)
      const raw = await rawConnect(app.port)
      raw.write(rawRequest('GET', '/slow') + rawRequest('GET', '/queued'))
      const gate = await within(2_000, app.nextParked(), 'the first request to park')
      // Answered at once, but queued behind /slow: Node never emits 'close' on this response.
      await until(() => app?.hits.includes('/queued') === true, 2_000, 'the pipelined request to run')
      expect(app.shutdown.inFlight).toBe(2)
      raw.socket.destroy()
      await until(() => app?.shutdown.inFlight === 0, 2_000, 'both requests to be released')
      gate.resolve()
      const report = await within(2_000, app.shutdown.close('test'), 'the drain, before its deadline')
      expect(report.graceful).toBe(true)
    },
  )

  it("refuses requests pipelined behind a connection's last response without running their handlers", async () => {
    app = await startApp({ timeoutMs: 5_000, idleGraceMs: 1_000 })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/first'))
    await raw.waitFor('ok /first')
    const busy = request(app.port, { path: '/slow' })
    const gate = await within(2_000, app.nextParked(), 'a request keeping the server busy')
    const report = app.shutdown.close('test')
    await until(() => app?.shutdown.state === 'stopping', 2_000, 'stopping')
    raw.write(
      rawRequest('GET', '/last') +
        rawRequest('POST', '/behind', {}, 'x'.repeat(10)) +
        rawRequest('GET', '/behind2'),
    )
    const { data, error } = await within(3_000, raw.closed, 'the connection to close')
    expect(error).toBeUndefined()
    expect(parseResponses(data).map((r) => [r.status, r.body])).toEqual([
      [200, 'ok /first'],
      [200, 'ok /last'],
    ])
    expect(app.hits).not.toContain('/behind')
    expect(app.hits).not.toContain('/behind2')
    gate.resolve()
    await busy
    const done = await report
    expect(done.requests.refused).toBeGreaterThanOrEqual(1)
    expect(app.shutdown.inFlight).toBe(0)
  })
})

describe('request bodies and expectations while stopping', () => {
  it('delivers the refusal intact when the request body was never read (no reset)', async () => {
    app = await startApp({ timeoutMs: 5_000, idleGraceMs: 1_000, lateRequests: 'refuse' })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/first'))
    await raw.waitFor('ok /first')
    const busy = request(app.port, { path: '/slow' })
    const gate = await within(2_000, app.nextParked(), 'a request keeping the server busy')
    void app.shutdown.close('test')
    await until(() => app?.shutdown.state === 'stopping', 2_000, 'stopping')
    const body = 'y'.repeat(256 * 1024)
    raw.write(rawRequest('POST', '/echo', { 'content-length': String(body.length) }))
    await raw.waitFor('503 Service Unavailable')
    raw.write(body)
    const { data, error } = await within(3_000, raw.closed, 'the refused connection to close')
    expect(error).toBeUndefined()
    const [, refusal] = parseResponses(data)
    expect(refusal?.status).toBe(503)
    expect(refusal?.body).toBe(
      '{"error":"Service Unavailable","message":"Service Unavailable","statusCode":503}',
    )
    expect(app.hits).not.toContain('/echo')
    gate.resolve()
    await busy
  })

  it('answers Expect: 100-continue with the refusal and no 100 Continue once stopping', async () => {
    app = await startApp({ timeoutMs: 5_000, idleGraceMs: 1_000 })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/first'))
    await raw.waitFor('ok /first')
    const busy = request(app.port, { path: '/slow' })
    const gate = await within(2_000, app.nextParked(), 'a request keeping the server busy')
    void app.shutdown.close('test')
    await until(() => app?.shutdown.state === 'stopping', 2_000, 'stopping')
    raw.write(rawRequest('POST', '/echo', { expect: '100-continue', 'content-length': '5' }))
    const { data } = await within(3_000, raw.closed, 'the connection to close')
    expect(data).not.toContain('100 Continue')
    expect(parseResponses(data).map((r) => r.status)).toEqual([200, 503])
    expect(app.hits).not.toContain('/echo')
    gate.resolve()
    await busy
  })

  it('still sends 100 Continue while serving', async () => {
    app = await startApp({ timeoutMs: 5_000 })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('POST', '/echo', { expect: '100-continue', 'content-length': '5' }))
    await raw.waitFor('100 Continue')
    raw.write('hello')
    await raw.waitFor('hello')
    raw.socket.destroy()
  })
})

describe("an app's own checkContinue listener", () => {
  type Order = 'before attach()' | 'after attach()'

  /** An echo server answering `Expect: 100-continue` itself, its listener added `order`; `/slow` waits for `gate`. */
  async function startContinueApp(order: Order, once = false) {
    const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000, idleGraceMs: 1_000 })
    const hits: string[] = []
    const continued: string[] = []
    const gate = deferred()
    const arrived = deferred()
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      if (!shutdown.admit(req, res)) return writeRefusal(req, res, shutdown.refusal(req))
      hits.push(req.url ?? '')
      const chunks: Buffer[] = []
      req.on('data', (chunk: Buffer) => chunks.push(chunk))
      req.on('end', async () => {
        if (req.url === '/slow') {
          arrived.resolve()
          await gate.promise
        }
        const body = req.url === '/echo' ? Buffer.concat(chunks).toString() : `ok ${req.url}`
        // A second run (the bug) must show in `hits`, not as a crash in another test.
        if (res.headersSent) return
        res
          .writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) })
          .end(body)
      })
    }
    const server = http.createServer(handler)
    servers.push(server)
    const onContinue = (req: http.IncomingMessage, res: http.ServerResponse) => {
      continued.push(req.url ?? '')
      res.writeContinue()
      handler(req, res)
    }
    const add = () =>
      once ? server.once('checkContinue', onContinue) : server.on('checkContinue', onContinue)
    if (order === 'before attach()') add()
    shutdown.attach(server)
    if (order === 'after attach()') add()
    return { shutdown, server, hits, continued, gate, arrived: arrived.promise, port: await listen(server) }
  }
  const expectContinue = rawRequest('POST', '/echo', { expect: '100-continue', 'content-length': '5' })

  it.each<Order>(['before attach()', 'after attach()'])(
    'runs it, and the handler once, while serving (listener added %s)',
    async (order) => {
      const { port, hits, continued, shutdown } = await startContinueApp(order)
      const raw = await rawConnect(port)
      raw.write(expectContinue)
      await raw.waitFor('100 Continue')
      raw.write('hello')
      await raw.waitFor(/\r\n\r\nhello$/)
      raw.write(rawRequest('GET', '/after'))
      await raw.waitFor('ok /after')
      expect(raw.received().split('100 Continue').length - 1).toBe(1)
      expect(
        parseResponses(raw.received().replace('HTTP/1.1 100 Continue\r\n\r\n', '')).map((r) => [
          r.status,
          r.body,
        ]),
      ).toEqual([
        [200, 'hello'],
        [200, 'ok /after'],
      ])
      expect(continued).toEqual(['/echo'])
      expect(hits).toEqual(['/echo', '/after'])
      raw.socket.destroy()
      expect(shutdown.inFlight).toBe(0)
    },
  )

  it.each<Order>(['before attach()', 'after attach()'])(
    'answers Expect: 100-continue with the refusal once stopping, without running it (listener added %s)',
    async (order) => {
      const { port, hits, continued, shutdown, gate, arrived } = await startContinueApp(order)
      const raw = await rawConnect(port)
      raw.write(rawRequest('GET', '/first'))
      await raw.waitFor('ok /first')
      const busy = await rawConnect(port)
      busy.write(rawRequest('GET', '/slow'))
      await within(2_000, arrived, 'a request keeping the server busy')
      const report = shutdown.close('test')
      await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
      raw.write(expectContinue)
      const { data, error } = await within(3_000, raw.closed, 'the connection to close')
      expect(error).toBeUndefined()
      expect(data).not.toContain('100 Continue')
      expect(parseResponses(data).map((r) => r.status)).toEqual([200, 503])
      expect(continued).toEqual([])
      expect(hits).not.toContain('/echo')
      gate.resolve()
      await within(2_000, busy.closed, 'the busy connection to close')
      const done = await within(2_000, report, 'the report')
      expect(done.graceful).toBe(true)
      expect(done.requests.refused).toBe(1)
    },
  )

  /** Two `Expect: 100-continue` uploads, one connection each: each gets exactly one `100 Continue`. */
  async function twoExpectRequests(port: number): Promise<void> {
    for (let i = 0; i < 2; i++) {
      const raw = await rawConnect(port)
      raw.write(expectContinue)
      await raw.waitFor('100 Continue')
      raw.write('hello')
      await raw.waitFor(/\r\n\r\nhello$/)
      expect(raw.received().split('100 Continue').length - 1).toBe(1)
      raw.socket.destroy()
    }
  }

  it('lets a once() listener run once, then answers as Node does', async () => {
    const { port, hits, continued } = await startContinueApp('after attach()', true)
    await twoExpectRequests(port)
    expect(continued).toEqual(['/echo'])
    expect(hits).toEqual(['/echo', '/echo'])
  })

  it('is answered once by two Shutdowns on one server, with or without it', async () => {
    const { port, server, hits, continued } = await startContinueApp('after attach()', true)
    createShutdown({ signals: false, logger: false }).attach(server)
    await twoExpectRequests(port)
    expect(continued).toEqual(['/echo'])
    expect(hits).toEqual(['/echo', '/echo'])
    expect(server.listenerCount('checkContinue')).toBe(1)
  })
})
