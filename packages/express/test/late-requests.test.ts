import { parseResponses, rawConnect, rawRequest, request, until, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import type { GracefulOptions } from '../src/index.ts'
import { type ExpressTestApp, startExpressApp } from './helpers/app.ts'
import { type ExpressFactory, expressVersions } from './helpers/express.ts'

let running: ExpressTestApp | undefined
afterEach(async () => {
  await running?.close()
  running = undefined
})

async function start(express: ExpressFactory, options: GracefulOptions): Promise<ExpressTestApp> {
  running = await startExpressApp(
    express,
    // idleGraceMs long enough that the raw connection is not reaped before its last request arrives
    { signals: false, logger: false, timeoutMs: 5_000, idleGraceMs: 1_000, ...options },
    (app, { route, park }) => {
      app.get(
        '/slow',
        route(async (_req, res) => {
          await park()
          res.send('slow')
        }),
      )
      // Each would answer (and so record a write) if it ever ran.
      app.get(
        '/first',
        route((_req, res) => res.send('first')),
      )
      app.get(
        '/late',
        route((_req, res) => res.send('late')),
      )
      app.post(
        '/upload',
        route((_req, res) => res.send('uploaded')),
      )
      app.get(
        '/behind',
        route((_req, res) => res.send('behind')),
      )
    },
  )
  return running
}

/** One request answered on a raw connection, then a slow request in flight and the shutdown at stopping. */
async function stoppingWithOpenConnection(app: ExpressTestApp) {
  const raw = await rawConnect(app.port)
  raw.write(rawRequest('GET', '/first'))
  await raw.waitFor(/\r\n\r\nfirst$/)
  const busy = request(app.port, { path: '/slow' })
  const gate = await within(2_000, app.nextParked(), 'the slow request to park')
  const report = app.shutdown.close('test')
  await until(() => app.shutdown.state === 'stopping', 2_000, 'stopping')
  return { raw, busy, gate, report }
}

describe.each(expressVersions)('late requests with $name', ({ express }) => {
  it("refuses a request on an open connection raw under lateRequests: 'refuse', and nothing after the middleware runs", async () => {
    const app = await start(express, { lateRequests: 'refuse', retryAfterSeconds: 7 })
    const { raw, busy, gate, report } = await stoppingWithOpenConnection(app)
    raw.write(rawRequest('GET', '/late'))
    const { data, error } = await within(3_000, raw.closed, 'the refused connection to close')
    expect(error).toBeUndefined()

    // Same socket: the 200 Express wrote (with its own headers), then the refusal.
    const [first, refusal, ...more] = parseResponses(data)
    expect([first?.status, first?.body, refusal?.status, more.length]).toEqual([200, 'first', 503, 0])
    expect(first?.headers['x-powered-by']).toBe('Express')
    expect(first?.headers.etag).toBeDefined()
    // Byte for byte the core's refusal: no X-Powered-By, no ETag, no charset, nothing Express adds.
    const refusalBytes = data.slice(data.indexOf('HTTP/1.1 503'))
    expect(refusalBytes).toMatch(
      /^HTTP\/1\.1 503 Service Unavailable\r\ncontent-type: application\/json\r\ncontent-length: 80\r\nretry-after: 7\r\nconnection: close\r\nDate: [^\r]+\r\n\r\n\{"error":"Service Unavailable","message":"Service Unavailable","statusCode":503\}$/,
    )
    const { headers, body } = app.shutdown.refusal()
    const expected = `HTTP/1.1 503 Service Unavailable\r\n${Object.entries(headers)
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('')}Date: DATE\r\n\r\n${body}`
    expect(refusalBytes.replace(/\r\nDate: [^\r]+\r\n/, '\r\nDate: DATE\r\n')).toBe(expected)

    expect(app.records).toEqual(['mw /first', '/first', 'mw /slow', '/slow'])
    gate.resolve()
    expect((await within(2_000, busy, 'the slow response')).body).toBe('slow')
    const done = await within(3_000, report, 'the report')
    expect(done.requests.refused).toBe(1)
    expect(done.graceful).toBe(true)
  })

  it("refuses a late upload under 'refuse' without a reset: its unread body is drained before the close", async () => {
    const app = await start(express, { lateRequests: 'refuse' })
    const { raw, busy, gate, report } = await stoppingWithOpenConnection(app)
    const body = 'z'.repeat(256 * 1024)
    raw.write(rawRequest('POST', '/upload', { 'content-type': 'text/plain' }, body))
    const { data, error } = await within(3_000, raw.closed, 'the refused upload connection to close')
    expect(error).toBeUndefined()
    const [, refusal, ...more] = parseResponses(data)
    expect([refusal?.status, refusal?.headers.connection, refusal?.body, more.length]).toEqual([
      503,
      'close',
      app.shutdown.refusal().body,
      0,
    ])
    expect(app.records).not.toContain('/upload')
    expect(app.records).not.toContain('mw /upload')
    gate.resolve()
    await within(2_000, busy, 'the slow response')
    await within(3_000, report, 'the report')
  })

  it('serves the last request on an open connection with Connection: close; one pipelined behind it never reaches a handler', async () => {
    const app = await start(express, {})
    const { raw, busy, gate, report } = await stoppingWithOpenConnection(app)
    raw.write(rawRequest('GET', '/late') + rawRequest('GET', '/behind'))
    const { data, error } = await within(3_000, raw.closed, 'the connection to close after its last request')
    expect(error).toBeUndefined()
    const responses = parseResponses(data)
    expect(responses.map((r) => [r.status, r.body, r.headers.connection])).toEqual([
      [200, 'first', 'keep-alive'],
      [200, 'late', 'close'],
    ])
    expect(app.records).toEqual(['mw /first', '/first', 'mw /slow', '/slow', 'mw /late', '/late'])
    gate.resolve()
    await within(2_000, busy, 'the slow response')
    const done = await within(3_000, report, 'the report')
    expect(done.graceful).toBe(true)
    expect(done.requests.completed).toBe(2)
  })
})
