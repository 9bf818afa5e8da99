import http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { deferred, nextEvent, tlsCredentials, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createShutdown, type Logger, onResponseClosed, type Shutdown, writeRefusal } from '../src/index.js'

// Regression: sockets accepted by an http2 server belong to their session (or, with allowHTTP1, are
// tracked at their first HTTP/1 request). They used to be taken for idle HTTP/1 sockets (h2c) or
// stalled TLS handshakes (secure), and reap() closed them once the server had been quiet for
// idleGraceMs after stopping began — cutting every stream still in flight (RST_STREAM CANCEL) while
// the report said graceful. test/protocols.test.ts answers at once, so it never saw it.

const { key, cert } = tlsCredentials()
const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

type AnyServer = http2.Http2Server | http2.Http2SecureServer

/** A server using the core as adapters do: every request waits for `gate`, then answers "ok". */
async function start(
  create: (listener: (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void) => AnyServer,
  logger: Logger,
) {
  const shutdown = createShutdown({ signals: false, logger, timeoutMs: 5_000, progressIntervalMs: 100 })
  const gate = deferred<void>()
  const arrived = deferred<void>()
  const server = create((req, res) => {
    const release = shutdown.enter(req, res)
    if (release === undefined) return writeRefusal(req, res, shutdown.refusal(req))
    onResponseClosed(res, release)
    arrived.resolve()
    void gate.promise.then(() => res.writeHead(200, { 'content-length': '2' }).end('ok'))
  })
  shutdown.attach(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  cleanups.push(async () => {
    await shutdown.force('cleanup')
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { shutdown, gate, arrived: arrived.promise, port: (server.address() as AddressInfo).port }
}

/** One GET on an HTTP/2 session: what became of it once its stream closed. */
function h2Get(session: http2.ClientHttp2Session) {
  const stream = session.request({ ':path': '/slow' })
  const outcome = { status: 0, body: '', rstCode: undefined as number | undefined }
  stream.setEncoding('utf8')
  stream.on('response', (headers) => {
    outcome.status = Number(headers[':status'])
  })
  stream.on('data', (chunk: string) => {
    outcome.body += chunk
  })
  stream.on('error', () => {}) // the outcome says how it ended
  return new Promise<typeof outcome>((resolve) =>
    stream.once('close', () => resolve({ ...outcome, rstCode: stream.rstCode })),
  )
}

/** One HTTPS GET with HTTP/1.1: status and body, or the error that ended it. */
function h1Get(port: number) {
  return new Promise<{ status: number; body: string; error?: string }>((resolve) => {
    https
      .get(
        { host: '127.0.0.1', port, path: '/slow', ca: cert, servername: 'localhost', agent: false },
        (res) => {
          let body = ''
          res.setEncoding('utf8')
          res.on('data', (chunk: string) => {
            body += chunk
          })
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
          res.on('error', (error: NodeJS.ErrnoException) =>
            resolve({ status: 0, body, error: error.code ?? 'error' }),
          )
        },
      )
      .on('error', (error: NodeJS.ErrnoException) =>
        resolve({ status: 0, body: '', error: error.code ?? 'error' }),
      )
  })
}

/** A logger resolving `after` on the second progress line while stopping. */
function progressLogger(after: { resolve(): void }): Logger {
  let seen = 0
  return {
    info: (_fields, message) => {
      if (message.startsWith('awaiting ') && ++seen === 2) after.resolve()
    },
    warn: () => {},
    error: () => {},
  }
}

/**
 * Starts the shutdown with the request parked, waits for two progress lines 100 ms apart (by then
 * the reaper, due idleGraceMs = 50 ms after the last request, has had its turn: the second line
 * comes in a later turn of the event loop) — or for the end of the shutdown, which comes first when
 * the connection was cut and released the request — then lets the handler answer.
 */
async function stopWithRequestInFlight(
  app: Awaited<ReturnType<typeof start>>,
  progressed: Promise<void>,
): Promise<Shutdown> {
  await within(2_000, app.arrived, 'the request to reach the handler')
  const report = app.shutdown.close('test')
  await within(
    2_000,
    Promise.race([progressed, report.then(() => {})]),
    'two progress lines while stopping, or the end of the shutdown',
  )
  app.gate.resolve()
  return app.shutdown
}

describe('the idle reaper leaves HTTP/2 connections with requests in flight alone', () => {
  for (const [name, secure] of [
    ['h2c (http2.createServer)', false],
    ['HTTP/2 over TLS (http2.createSecureServer)', true],
  ] as const) {
    it(`${name}: a stream in flight for longer than idleGraceMs into stopping completes`, async () => {
      const progressed = deferred<void>()
      const app = await start(
        (listener) =>
          secure ? http2.createSecureServer({ key, cert }, listener) : http2.createServer(listener),
        progressLogger(progressed),
      )
      const session = http2.connect(`${secure ? 'https' : 'http'}://127.0.0.1:${app.port}`, {
        ca: cert,
        servername: 'localhost',
      })
      session.on('error', () => {})
      cleanups.push(() => void session.destroy())
      await within(2_000, nextEvent(session, 'connect'), 'the session to connect')
      const outcome = h2Get(session)
      const shutdown = await stopWithRequestInFlight(app, progressed.promise)
      // Today: { status: 0, body: '', rstCode: 8 } (CANCEL).
      expect(await within(2_000, outcome, 'the stream to close')).toEqual({
        status: 200,
        body: 'ok',
        rstCode: 0,
      })
      expect(await within(2_000, shutdown.close(), 'the report')).toMatchObject({ graceful: true })
    })
  }

  it('HTTP/1.1 on a secure HTTP/2 server with allowHTTP1: a request in flight for longer than idleGraceMs completes', async () => {
    const progressed = deferred<void>()
    const app = await start(
      (listener) => http2.createSecureServer({ key, cert, allowHTTP1: true }, listener),
      progressLogger(progressed),
    )
    const outcome = h1Get(app.port)
    const shutdown = await stopWithRequestInFlight(app, progressed.promise)
    // Today: { status: 0, body: '', error: 'ECONNRESET' } (socket hang up).
    expect(await within(2_000, outcome, 'the response')).toEqual({ status: 200, body: 'ok' })
    expect(await within(2_000, shutdown.close(), 'the report')).toMatchObject({ graceful: true })
  })

  it('plain HTTP/1.1 (http.createServer), the same steps: the request completes (the control)', async () => {
    const progressed = deferred<void>()
    const app = await start(
      (listener) => http.createServer(listener as never) as unknown as AnyServer,
      progressLogger(progressed),
    )
    const outcome = new Promise<{ status: number; body: string }>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: app.port, path: '/slow', agent: false }, (res) => {
          let body = ''
          res.setEncoding('utf8')
          res.on('data', (chunk: string) => {
            body += chunk
          })
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
        })
        .on('error', reject)
    })
    const shutdown = await stopWithRequestInFlight(app, progressed.promise)
    expect(await within(2_000, outcome, 'the response')).toEqual({ status: 200, body: 'ok' })
    expect(await within(2_000, shutdown.close(), 'the report')).toMatchObject({
      graceful: true,
      requests: { completed: 1 },
    })
  })
})
