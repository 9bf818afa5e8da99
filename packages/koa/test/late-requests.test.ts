import http from 'node:http'
import { buildRefusal, writeRefusal } from '@lameduck/core'
import {
  closeServer,
  expectRefusalBytes,
  listen,
  parseResponses,
  type RawConnection,
  rawConnect,
  rawRequest,
  request,
  until,
  within,
} from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createAppWith, type KoaTestApp, koaVersions } from './app.js'
import { withoutDate } from './helpers.js'

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

async function connect(port: number): Promise<RawConnection> {
  const raw = await rawConnect(port)
  raws.push(raw)
  return raw
}

/** What the core's `writeRefusal` sends on a bare node:http server: the bytes every adapter must send. */
async function bareRefusal(retryAfterSeconds: number, requestText: string): Promise<string> {
  const server = http.createServer((req, res) =>
    writeRefusal(req, res, buildRefusal(retryAfterSeconds, req.httpVersionMajor)),
  )
  const port = await listen(server)
  try {
    const raw = await connect(port)
    raw.write(requestText)
    return (await within(2_000, raw.closed, 'the bare refusal')).data
  } finally {
    await closeServer(server)
  }
}

/**
 * Opens a connection, serves one request on it, then parks `/slow` on another connection (so the
 * drain cannot finish) and starts the shutdown. Resolves once stopping: the open connection's next
 * request is its last.
 */
async function stoppingWithOpenConnection(app: KoaTestApp) {
  const raw = await connect(app.port)
  raw.write(rawRequest('GET', '/fast'))
  await raw.waitFor('\r\n\r\nfast')
  const busy = request(app.port, { agent: false, path: '/slow' })
  const gate = await within(2_000, app.nextParked(), '/slow to park')
  const report = app.shutdown.close('test')
  await until(() => app.shutdown.state === 'stopping', 2_000, 'stopping')
  return { raw, busy, gate, report }
}

describe.each(koaVersions)('%s: the last request on an open connection', (_name, Koa) => {
  // idleGraceMs keeps the open connection from being reaped before its last request arrives.
  const start = async (options: object = {}) => {
    app = await createAppWith(Koa)({
      signals: false,
      logger: false,
      timeoutMs: 5_000,
      idleGraceMs: 2_000,
      ...options,
    })
    return app
  }

  it("lateRequests 'refuse': the core's refusal, byte for byte, on the socket of an earlier 200; no downstream middleware runs", async () => {
    const started = await start({ lateRequests: 'refuse', retryAfterSeconds: 7 })
    const { raw, busy, gate, report } = await stoppingWithOpenConnection(started)
    const late = rawRequest('GET', '/fast')
    raw.write(late)
    const { data, error } = await within(3_000, raw.closed, 'the refused connection to close')
    expect(error).toBeUndefined()
    const [served, refused] = parseResponses(data)
    expect(served).toMatchObject({ status: 200, body: 'fast' })
    expect(refused).toMatchObject({ status: 503, body: buildRefusal(7).body })
    const refusalBytes = data.slice(data.indexOf('HTTP/1.1 503'))
    expect(refusalBytes).toMatch(/\r\nDate: /)
    expect(withoutDate(refusalBytes)).toBe(withoutDate(await bareRefusal(7, late)))
    expectRefusalBytes(refusalBytes, 7)
    expect(started.reached).toEqual(['/fast', '/slow'])
    gate.resolve()
    await within(2_000, busy, 'the parked /slow')
    expect((await within(2_000, report, 'the report')).requests.refused).toBe(1)
  })

  it("lateRequests 'refuse': a late request with an unread body gets the same bytes and a clean close, not a reset", async () => {
    const started = await start({ lateRequests: 'refuse', retryAfterSeconds: 7 })
    const { raw, busy, gate, report } = await stoppingWithOpenConnection(started)
    const late = rawRequest('POST', '/echo', {}, 'x'.repeat(64 * 1024))
    raw.write(late)
    const { data, error } = await within(3_000, raw.closed, 'the refused connection to close')
    expect(error).toBeUndefined()
    expect(withoutDate(data.slice(data.indexOf('HTTP/1.1 503')))).toBe(
      withoutDate(await bareRefusal(7, late)),
    )
    expect(started.reached).toEqual(['/fast', '/slow'])
    gate.resolve()
    await within(2_000, busy, 'the parked /slow')
    expect((await within(2_000, report, 'the report')).graceful).toBe(true)
  })

  it("default ('serve'): served with Connection: close; a request pipelined behind it never reaches a middleware", async () => {
    const started = await start()
    const { raw, busy, gate, report } = await stoppingWithOpenConnection(started)
    raw.write(rawRequest('GET', '/fast') + rawRequest('POST', '/echo', {}, 'pipelined behind the last'))
    const { data, error } = await within(3_000, raw.closed, 'the connection to close after its last response')
    expect(error).toBeUndefined()
    expect(parseResponses(data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
      [200, 'fast', 'keep-alive'],
      [200, 'fast', 'close'],
    ])
    expect(started.reached).toEqual(['/fast', '/slow', '/fast'])
    gate.resolve()
    const slow = await within(2_000, busy, 'the parked /slow')
    expect(slow.headers.connection).toBe('close')
    const done = await within(2_000, report, 'the report')
    expect(done.requests).toMatchObject({ refused: 1, completed: 2 })
    expect(done.graceful).toBe(true)
  })
})
