import {
  deferred,
  expectRefusalBytes,
  parseResponses,
  rawConnect,
  rawRequest,
  reached,
  request,
  until,
  within,
} from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createFastifyApp, type FastifyAdapterApp } from './app.js'
import { startFastify, stopFastifyApps } from './helpers/fastify.js'

let current: FastifyAdapterApp | undefined
afterEach(async () => {
  await current?.close()
  current = undefined
  await stopFastifyApps()
})

async function start(options: Parameters<typeof createFastifyApp>[0]) {
  current = await createFastifyApp(options)
  return current
}

// Keeps the drain open (and the server busy) while the test talks to another connection.
async function parkOne(app: FastifyAdapterApp) {
  const response = request(app.port, { path: '/slow' })
  const gate = await within(2_000, app.nextParked(), 'the slow request to park')
  return { response, gate }
}

describe('the last request on an open connection once stopping', () => {
  it("lateRequests: 'serve' serves it with Connection: close on the same socket, then closes it", async () => {
    const app = await start({
      signals: false,
      logger: false,
      timeoutMs: 5_000,
      idleGraceMs: 2_000,
    })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/fast'))
    await raw.waitFor('fast')
    const busy = await parkOne(app)
    const report = app.shutdown.close('test')
    await reached(app.shutdown, 'stopping')
    raw.write(rawRequest('GET', '/fast?late'))
    const { data, error } = await within(3_000, raw.closed, 'the connection to close after its last request')
    expect(error).toBeUndefined()
    expect(parseResponses(data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
      [200, 'fast', 'keep-alive'],
      [200, 'fast', 'close'],
    ])
    expect(app.hits.filter((path) => path === '/fast')).toHaveLength(2)
    busy.gate.resolve()
    expect((await within(2_000, busy.response, 'the slow response')).headers.connection).toBe('close')
    const done = await within(3_000, report, 'the report')
    expect(done.requests).toMatchObject({ completed: 2, refused: 0, forced: 0 })
    expect(app.shutdown.inFlight).toBe(0)
  })

  it("lateRequests: 'refuse' answers the core's refusal raw, byte for byte, on the socket of an earlier 200, without running the handler", async () => {
    const app = await start({
      signals: false,
      logger: false,
      timeoutMs: 5_000,
      idleGraceMs: 2_000,
      lateRequests: 'refuse',
      retryAfterSeconds: 7,
    })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/fast'))
    await raw.waitFor('fast')
    const busy = await parkOne(app)
    const report = app.shutdown.close('test')
    await reached(app.shutdown, 'stopping')
    raw.write(rawRequest('GET', '/echo-never'))
    raw.write(rawRequest('POST', '/echo', { 'content-type': 'text/plain' }, 'late body'))
    const { data, error } = await within(3_000, raw.closed, 'the refused connection to close')
    expect(error).toBeUndefined()
    const { status, headers, body } = app.shutdown.refusal({ httpVersionMajor: 1 })
    const head = Object.entries(headers)
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('')
    const refusal = data.slice(data.indexOf('HTTP/1.1 503'))
    // Node adds only Date; nothing of Fastify's (no x-powered-by, no content-type rewrite).
    expect(refusal.replace(/\r\nDate: [^\r]+/, '')).toBe(
      `HTTP/1.1 ${status} Service Unavailable\r\n${head}\r\n${body}`,
    )
    expectRefusalBytes(refusal, 7)
    expect(headers['retry-after']).toBe('7')
    expect(body).toBe('{"error":"Service Unavailable","message":"Service Unavailable","statusCode":503}')
    // The first answer came on this very socket; the refusal is its last answer.
    expect(parseResponses(data).map((r) => r.status)).toEqual([200, 503])
    expect(app.hits).not.toContain('/echo')
    busy.gate.resolve()
    await within(2_000, busy.response, 'the slow response')
    expect((await within(3_000, report, 'the report')).requests.refused).toBeGreaterThanOrEqual(1)
    expect(app.shutdown.inFlight).toBe(0)
  })

  it('never runs a handler for a request pipelined behind a connection’s last response', async () => {
    const app = await start({
      signals: false,
      logger: false,
      timeoutMs: 5_000,
      idleGraceMs: 2_000,
    })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/fast'))
    await raw.waitFor('fast')
    const busy = await parkOne(app)
    const report = app.shutdown.close('test')
    await reached(app.shutdown, 'stopping')
    // Both in one write: the first becomes this connection's last request, the second is behind it.
    raw.write(
      rawRequest('GET', '/fast?last') +
        rawRequest('POST', '/echo', { 'content-type': 'text/plain' }, 'behind'),
    )
    const { data, error } = await within(3_000, raw.closed, 'the connection to close after its last request')
    expect(error).toBeUndefined()
    expect(parseResponses(data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
      [200, 'fast', 'keep-alive'],
      [200, 'fast', 'close'],
    ])
    expect(app.hits).toEqual(['/fast', '/slow', '/fast'])
    busy.gate.resolve()
    await within(2_000, busy.response, 'the slow response')
    const done = await within(3_000, report, 'the report')
    expect(done.graceful).toBe(true)
    expect(done.requests.refused).toBe(1)
    expect(app.shutdown.inFlight).toBe(0)
  })

  it('serves requests pipelined before the shutdown, the newest one last with Connection: close', async () => {
    const app = await start({
      signals: false,
      logger: false,
      timeoutMs: 5_000,
      idleGraceMs: 2_000,
    })
    const raw = await rawConnect(app.port)
    raw.write(
      rawRequest('GET', '/slow') + rawRequest('POST', '/echo', { 'content-type': 'text/plain' }, 'behind'),
    )
    const gate = await within(2_000, app.nextParked(), 'the slow request to park')
    await until(() => app.shutdown.inFlight === 2, 2_000, 'both pipelined requests to be counted')
    const report = app.shutdown.close('test')
    await reached(app.shutdown, 'stopping')
    gate.resolve()
    const { data, error } = await within(3_000, raw.closed, 'the connection to close after /echo')
    expect(error).toBeUndefined()
    expect(parseResponses(data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
      [200, 'slow 0', 'keep-alive'],
      [200, 'behind', 'close'],
    ])
    expect((await within(3_000, report, 'the report')).requests).toMatchObject({ completed: 2, refused: 0 })
  })

  it('a refused request skips every later hook and the handler but still reaches onResponse, with its 503', async () => {
    const seen: string[] = []
    const parked = deferred()
    const arrived = deferred()
    const { app, port } = await startFastify(
      (fastify) => {
        fastify.addHook('onRequest', async (req) => void seen.push(`onRequest ${req.url}`))
        fastify.addHook('preHandler', async (req) => void seen.push(`preHandler ${req.url}`))
        fastify.addHook(
          'onResponse',
          async (req, reply) => void seen.push(`onResponse ${req.url} ${reply.statusCode}`),
        )
        fastify.get('/fast', async () => 'fast')
        fastify.get('/slow', async () => {
          arrived.resolve()
          await parked.promise
          return 'slow'
        })
      },
      { timeoutMs: 5_000, idleGraceMs: 2_000, lateRequests: 'refuse' },
    )
    const raw = await rawConnect(port)
    raw.write(rawRequest('GET', '/fast'))
    await raw.waitFor('fast')
    // Keeps the drain open while the late request comes in.
    const busy = request(port, { path: '/slow' })
    await within(2_000, arrived.promise, 'the slow request to reach its handler')
    const report = app.shutdown.close('test')
    await reached(app.shutdown, 'stopping')
    raw.write(rawRequest('GET', '/late'))
    const { data } = await within(3_000, raw.closed, 'the refused connection to close')
    expect(parseResponses(data).map((r) => r.status)).toEqual([200, 503])
    await until(() => seen.includes('onResponse /late 503'), 2_000, 'onResponse for the refusal')
    expect(seen.filter((entry) => entry.includes('/late'))).toEqual(['onResponse /late 503'])
    parked.resolve()
    await within(2_000, busy, 'the slow response')
    await within(3_000, report, 'the report')
  })
})
