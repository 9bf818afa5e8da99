import http2 from 'node:http2'
import https from 'node:https'
import { fileURLToPath } from 'node:url'
import {
  connectOutcome,
  type Deferred,
  deferred,
  nextEvent,
  startFixture,
  stopFixtures,
  tlsCredentials,
  until,
  within,
} from '@lameduck/test-utils'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import type { GracefulOptions } from '../src/index.js'
import { parkingHook, startFastify, stopFastifyApps } from './helpers/fastify.js'

const sessions: http2.ClientHttp2Session[] = []
afterEach(async () => {
  for (const session of sessions.splice(0)) session.destroy()
  await Promise.all([stopFastifyApps(), stopFixtures()])
})

const { key, cert } = tlsCredentials()

/** What became of one stream: its status and body, the error that ended it, its RST_STREAM code. */
interface StreamOutcome {
  status: number
  body: string
  error: string | undefined
  /** 0 (NO_ERROR) once it completed; REFUSED_STREAM (7) or CANCEL (8) when it was cut. */
  rstCode: number | undefined
}

/** One GET on `session`, settled when the stream closes, whichever way. */
function get(session: http2.ClientHttp2Session, path: string): Promise<StreamOutcome> {
  const stream = session.request({ ':path': path })
  const outcome: StreamOutcome = { status: 0, body: '', error: undefined, rstCode: undefined }
  stream.setEncoding('utf8')
  stream.on('response', (headers) => {
    outcome.status = Number(headers[':status'])
  })
  stream.on('data', (chunk: string) => {
    outcome.body += chunk
  })
  stream.on('error', (error: NodeJS.ErrnoException) => {
    outcome.error = `${error.code}: ${error.message}`
  })
  return new Promise((resolve) =>
    stream.once('close', () => {
      outcome.rstCode = stream.rstCode
      resolve(outcome)
    }),
  )
}

/** An HTTP/2 client session over TLS (ALPN h2) trusting the test certificate. */
async function connect(port: number): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(`https://127.0.0.1:${port}`, { ca: cert, servername: 'localhost' })
  sessions.push(session)
  session.on('error', () => {}) // what the session ends with is asserted on its streams
  await within(2_000, nextEvent(session, 'connect'), 'the TLS session to connect')
  expect(session.alpnProtocol).toBe('h2')
  return session
}

/** `/fast` (counted in `hits`) and `/slow`, which resolves `parked` and waits for `gate`. */
function routes() {
  const parked = deferred<void>()
  const gate = deferred<void>()
  const hits: string[] = []
  return {
    parked: parked.promise,
    gate,
    hits,
    setup(app: FastifyInstance) {
      app.get('/fast', async (request) => {
        hits.push(`${request.url} HTTP/${request.raw.httpVersion}`)
        return 'fast'
      })
      app.get('/slow', async (request) => {
        hits.push(`${request.url} HTTP/${request.raw.httpVersion}`)
        parked.resolve()
        await gate.promise
        return 'slow'
      })
    },
  }
}

/** Fastify on `http2.createSecureServer`: HTTP/2 over TLS, HTTP/1.1 too with `allowHTTP1`. */
function secureHttp2(allowHTTP1: boolean): FastifyServerOptions {
  return { http2: true, https: { key, cert, allowHTTP1 } } as FastifyServerOptions
}

// Default idleGraceMs (50 ms): the idle reaper must leave HTTP/2 sessions and their streams alone
// (it used to cut them; see the regression test at the end of this file).
const DEFAULTS: GracefulOptions = { timeoutMs: 5_000 }

describe('Fastify on HTTP/2 over TLS (http2: true, https)', () => {
  it('shutdown.close(): the in-flight stream completes, the session gets GOAWAY, a stream sent after it is refused and new connections too', async () => {
    const r = routes()
    const { app, port } = await startFastify(r.setup, DEFAULTS, secureHttp2(false))
    const session = await connect(port)
    expect(await get(session, '/fast')).toEqual({ status: 200, body: 'fast', error: undefined, rstCode: 0 })
    const slow = get(session, '/slow')
    await within(2_000, r.parked, 'the h2 request to reach its handler')
    expect(app.shutdown.inFlight).toBe(1)

    const goaway = nextEvent<[code: number, lastStreamID: number, opaqueData?: Buffer]>(session, 'goaway')
    const sessionClosed = nextEvent(session, 'close')
    const report = app.shutdown.close('test')
    // No drain delay: stopping began inside close(), so the GOAWAY is on its way before the client
    // sends the next stream, which the server then never processes.
    expect(app.shutdown.state).toBe('stopping')
    const late = get(session, '/fast')
    // NO_ERROR; streams 1 (/fast) and 3 (/slow) are the last the server processes.
    const [code, lastStreamID] = await within(2_000, goaway, 'GOAWAY on the session')
    expect([code, lastStreamID]).toEqual([http2.constants.NGHTTP2_NO_ERROR, 3])
    expect(await within(2_000, late, 'the stream sent after the GOAWAY')).toEqual({
      status: 0,
      body: '',
      error: 'ERR_HTTP2_STREAM_ERROR: Stream closed with error code NGHTTP2_REFUSED_STREAM',
      rstCode: http2.constants.NGHTTP2_REFUSED_STREAM,
    })
    expect(() => session.request({ ':path': '/fast' })).toThrow(
      expect.objectContaining({ code: 'ERR_HTTP2_GOAWAY_SESSION' }),
    )
    expect(await connectOutcome(port)).toBe('ECONNREFUSED')

    r.gate.resolve()
    expect(await within(2_000, slow, 'the in-flight stream')).toEqual({
      status: 200,
      body: 'slow',
      error: undefined,
      rstCode: 0,
    })
    await within(2_000, sessionClosed, 'the session to close after its last stream')
    expect(await within(3_000, report, 'the report')).toMatchObject({
      graceful: true,
      requests: { completed: 1, refused: 0, forced: 0 },
      connectionsDestroyed: 0,
      hooks: [{ label: 'fastify.close()', ok: true }],
    })
    expect(r.hits).toEqual(['/fast HTTP/2.0', '/slow HTTP/2.0'])
    expect(app.server.listening).toBe(false)
  })

  it('app.close(): drains the same way, and resolves once the stream has completed', async () => {
    const r = routes()
    const { app, port } = await startFastify(r.setup, DEFAULTS, secureHttp2(false))
    const session = await connect(port)
    const slow = get(session, '/slow')
    await within(2_000, r.parked, 'the h2 request to reach its handler')
    const goaway = nextEvent(session, 'goaway')
    const sessionClosed = nextEvent(session, 'close')
    let appClosed = false
    const closed = app.close().then(() => {
      appClosed = true
    })
    await within(2_000, goaway, 'GOAWAY on the session')
    expect(await connectOutcome(port)).toBe('ECONNREFUSED')
    expect(appClosed).toBe(false)

    r.gate.resolve()
    expect(await within(2_000, slow, 'the in-flight stream')).toEqual({
      status: 200,
      body: 'slow',
      error: undefined,
      rstCode: 0,
    })
    await within(2_000, sessionClosed, 'the session to close')
    await within(3_000, closed, 'app.close()')
    expect(await app.shutdown.close()).toMatchObject({
      reason: 'app.close()',
      graceful: true,
      requests: { completed: 1, forced: 0 },
      connectionsDestroyed: 0,
    })
  })

  it('allowHTTP1: an HTTP/2 stream and an HTTP/1.1 request in flight on one port both complete; the HTTP/1.1 one with Connection: close', async () => {
    const r = routes()
    const both = deferred<void>()
    let arrivals = 0
    const { app, port } = await startFastify(
      (app) => {
        r.setup(app)
        app.get('/slow-too', async () => {
          if (++arrivals === 2) both.resolve()
          await r.gate.promise
          return 'slow too'
        })
      },
      DEFAULTS,
      secureHttp2(true),
    )
    const session = await connect(port)
    const h2 = get(session, '/slow-too')
    const h1 = httpsGet(port, '/slow-too')
    await within(2_000, both.promise, 'both requests to reach their handler')
    expect(app.shutdown.inFlight).toBe(2)

    const goaway = nextEvent(session, 'goaway')
    const report = app.shutdown.close('test')
    await within(2_000, goaway, 'GOAWAY on the HTTP/2 session')
    expect(await connectOutcome(port)).toBe('ECONNREFUSED')
    r.gate.resolve()
    expect(await within(2_000, h2, 'the HTTP/2 stream')).toEqual({
      status: 200,
      body: 'slow too',
      error: undefined,
      rstCode: 0,
    })
    expect(await within(2_000, h1, 'the HTTP/1.1 response')).toEqual({
      status: 200,
      httpVersion: '1.1',
      connection: 'close',
      body: 'slow too',
    })
    expect(await within(3_000, report, 'the report')).toMatchObject({
      graceful: true,
      requests: { completed: 2, forced: 0 },
      connectionsDestroyed: 0,
    })
  })
})

/** One HTTPS request with HTTP/1.1 (no ALPN h2), on its own connection. */
function httpsGet(
  port: number,
  path: string,
): Promise<{ status: number; httpVersion: string; connection: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    https
      .get({ host: '127.0.0.1', port, path, ca: cert, servername: 'localhost', agent: false }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          body += chunk
        })
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            httpVersion: res.httpVersion,
            connection: res.headers.connection,
            body,
          }),
        )
      })
      .on('error', reject)
  })
}

describe('a real SIGTERM to a Fastify process on HTTP/2 over TLS (built dist/)', () => {
  it('finishes the in-flight stream after GOAWAY, refuses new connections, runs the hooks after it and exits 0', async () => {
    const fixture = await startFixture(
      fileURLToPath(new URL('./fixtures/http2-server.mjs', import.meta.url)),
      [],
      // The idle grace outlasts the test: see the known bug below.
      { TLS_KEY: key.toString(), TLS_CERT: cert.toString() },
    )
    const session = await connect(fixture.port)
    const slow = get(session, '/slow')
    await fixture.waitForLine('slow handler started (HTTP/2.0)')
    const goaway = nextEvent(session, 'goaway')
    const sessionClosed = nextEvent(session, 'close')

    const signalledAt = fixture.kill('SIGTERM')
    await fixture.waitForLine('shutdown started (SIGTERM)')
    await within(2_000, goaway, 'GOAWAY on the session')
    expect(await connectOutcome(fixture.port)).toBe('ECONNREFUSED')
    fixture.child.send('release')
    expect(await within(3_000, slow, 'the in-flight stream')).toEqual({
      status: 200,
      body: 'slow',
      error: undefined,
      rstCode: 0,
    })
    await within(2_000, sessionClosed, 'the session to close')

    const exit = await within(4_000, fixture.exited, 'the process to exit')
    expect(exit).toMatchObject({ code: 0, signal: null })
    expect(exit.at - signalledAt).toBeLessThan(4_000)
    const output = fixture.output()
    const at = (text: string) => {
      const index = output.indexOf(text)
      expect(index, `${text} in the output:\n${output}`).toBeGreaterThan(-1)
      return index
    }
    expect(at('slow handler done')).toBeLessThan(at('core onClose: flushed'))
    expect(at('core onClose: flushed')).toBeLessThan(at('fastify onClose: pool closed'))
    expect(at('fastify onClose: pool closed')).toBeLessThan(at('closed (SIGTERM) gracefully'))
  })
})

/** A logger resolving `after` on the `count`-th progress line ("awaiting 1 request, …"). */
function progressLogger(count: number, after: Deferred<void>): NonNullable<GracefulOptions['logger']> {
  let seen = 0
  const info = (_fields: Record<string, unknown>, message: string) => {
    if (message.startsWith('awaiting ') && ++seen === count) after.resolve()
  }
  return { info, warn: () => {}, error: () => {} }
}

describe('the idle reaper leaves HTTP/2 streams in flight alone', () => {
  // Sockets of an http2 server used to be reaped as idle once the server had been quiet for
  // idleGraceMs after stopping began, cutting the streams of their session while the report said
  // graceful. The core-only regression tests (h2c, TLS, HTTP/1.1 with allowHTTP1) are in
  // packages/core/test/http2-idle-reap.test.ts.
  it('a stream in flight for longer than idleGraceMs (default 50 ms) into stopping completes', async () => {
    const r = routes()
    const twoProgressLines = deferred<void>()
    const { app, port } = await startFastify(
      r.setup,
      { timeoutMs: 5_000, progressIntervalMs: 100, logger: progressLogger(2, twoProgressLines) },
      secureHttp2(false),
    )
    const session = await connect(port)
    const slow = get(session, '/slow')
    await within(2_000, r.parked, 'the h2 request to reach its handler')
    const report = app.shutdown.close('test')
    // Two progress lines 100 ms apart: the reaper, due 50 ms after the last request, has had its
    // turn (the second line comes in a later turn of the event loop than the first).
    await within(
      2_000,
      Promise.race([twoProgressLines.promise, report.then(() => {})]),
      'two progress lines while stopping, or the end of the shutdown',
    )
    r.gate.resolve()
    const outcome = await within(2_000, slow, 'the in-flight stream to close')
    await within(3_000, report, 'the report')
    // Today: { status: 0, body: '', error: undefined, rstCode: 8 (CANCEL) }, and the report says
    // graceful, 1 completed, 0 connections destroyed.
    expect(outcome).toEqual({ status: 200, body: 'slow', error: undefined, rstCode: 0 })
  })
})

describe('a stream cancelled before its handler started, on HTTP/2', () => {
  it.each([
    ['throws', 'throw'],
    ['lets the handler run', 'pass'],
  ])(
    'is held while its preHandler runs and released once the chain ends, when the preHandler %s',
    async (_, how) => {
      const guard = parkingHook(() => {
        if (how === 'throw') throw Object.assign(new Error('no'), { statusCode: 401 })
      })
      const handlerRan: string[] = []
      const { app, port } = await startFastify(
        (app) => {
          app.get('/guarded', { preHandler: guard.hook }, async () => {
            handlerRan.push(`handler, inFlight ${app.shutdown.inFlight}`)
            return 'ok'
          })
        },
        DEFAULTS,
        secureHttp2(false),
      )
      const session = await connect(port)
      const stream = session.request({ ':path': '/guarded' })
      stream.on('error', () => {})
      await within(2_000, guard.running, 'the preHandler to run')
      stream.close(http2.constants.NGHTTP2_CANCEL)
      await within(2_000, guard.responseClosed, 'the server to see the stream cancelled')
      expect(app.shutdown.inFlight).toBe(1)
      guard.gate.resolve()
      await until(() => app.shutdown.inFlight === 0, 2_000, 'inFlight back to 0')
      expect(handlerRan).toEqual(how === 'throw' ? [] : ['handler, inFlight 1'])
    },
  )
})
