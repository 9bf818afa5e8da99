import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
// Relative imports: a package dependency on core would make a cycle (core's tests use these helpers).
import type { AdapterOptions, Shutdown, ShutdownState } from '../../core/src/index.js'
import { buildRefusal } from '../../core/src/refusal.js'
import type { AdapterApp, CreateAdapterApp } from './adapter-contract.js'
import { keepAliveAgent, type RawConnection, rawConnect, rawRequest, request } from './http.js'
import { type Deferred, nextEvent, until, within } from './wait.js'

/** The scenarios of {@link describeAdapter}, by short name. */
export type ScenarioId =
  | 'in-flight'
  | 'last-request-serve'
  | 'last-request-refuse'
  | 'pipelined-extras'
  | 'pipelined-across-gate'
  | 'pipelined-written'
  | 'new-connections'
  | 'draining-keep-alive'
  | 'chunked-upload'
  | 'refused-upload'
  | 'expect-continue-stopping'
  | 'expect-continue-serving'
  | 'upgrade-stopping'
  | 'upgraded-socket'
  | 'unused-connection'
  | 'idle-keep-alive'
  | 'slow-reader'
  | 'abort-mid-request'
  | 'abort-mid-response'
  | 'handler-error'
  | 'streaming'
  | 'sse'
  | 'hung-handler'
  | 'hooks'
  | 'tasks'
  | 'force'
  | 'health'
  | 'discovery'
  | 'last-request-slow'
  | 'health-stopping'
  | 'pipelined-upload'
  | 'half-sent-head'
  | 'client-half-close'
  | 'many-idle'
  | 'head-refused'
  | 'chunked-refused'

/** What a framework lets an adapter see; the suite asserts the stronger rule wherever it is possible. */
export interface AdapterCapabilities {
  /**
   * The adapter learns when the handler chain has settled, so a handler still running after its
   * client aborted stays counted (issue 3, item 9). Express cannot tell a middleware that; default true.
   */
  countsHandlerAfterAbort?: boolean
  /**
   * Scenarios that fail because of a known bug, each with its one-line cause: they are listed as
   * `todo` ("<title> — blocked: <cause>") with their assertions kept, so removing the entry once the
   * bug is fixed turns them back on.
   */
  blocked?: Partial<Record<ScenarioId, string>>
}

/** The options every scenario starts from: no signal listeners, no log lines, short timeouts. */
export const SUITE_OPTIONS = {
  signals: false,
  logger: false,
  timeoutMs: 4_000,
} as const satisfies AdapterOptions

/**
 * `idleGraceMs` of the scenarios that send a last request on a connection left idle before
 * stopping: long enough that the socket is still open when the request goes out, even on a stalled
 * machine (the socket closes right after its last response, so the grace never adds to a test).
 */
const LATE_GRACE_MS = 3_000

const ORDER: readonly ShutdownState[] = ['serving', 'draining', 'stopping', 'closing', 'closed']

/** Resolves once `shutdown` is in `state` or past it; fails after `ms`. */
export function reached(shutdown: Shutdown, state: ShutdownState, ms = 3_000): Promise<void> {
  const done = () => ORDER.indexOf(shutdown.state) >= ORDER.indexOf(state)
  return within(
    ms,
    new Promise<void>((resolve) => {
      if (done()) return resolve()
      const off = shutdown.on('statechange', () => {
        if (!done()) return
        off()
        resolve()
      })
    }),
    `the shutdown to reach "${state}" (it is "${shutdown.state}")`,
  )
}

/** The outcome of a new TCP connection: `'connected'` or the error code (`'ECONNREFUSED'`). */
export function connectOutcome(port: number): Promise<string> {
  return within(
    3_000,
    new Promise<string>((resolve) => {
      const socket = net.connect(port, '127.0.0.1')
      socket.once('connect', () => {
        socket.destroy()
        resolve('connected')
      })
      socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'))
    }),
    `a connection attempt to port ${port}`,
  )
}

/** One HTTP/1.1 response off the wire: status, lower-case headers, decoded body, and its raw bytes. */
export interface WireResponse {
  status: number
  headers: Record<string, string>
  body: string
  raw: string
}

/**
 * Splits what a raw connection received into responses: `Content-Length` and chunked bodies, and a
 * body delimited by the connection closing. `1xx` interim responses are kept as responses too.
 */
export function parseWire(data: string): WireResponse[] {
  const responses: WireResponse[] = []
  let rest = data
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n')
    if (end === -1) break
    const [statusLine = '', ...lines] = rest.slice(0, end).split('\r\n')
    const headers: Record<string, string> = {}
    for (const line of lines) {
      const colon = line.indexOf(':')
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
    }
    const status = Number(statusLine.split(' ')[1])
    let offset = end + 4
    let body = ''
    if (status >= 200 && headers['transfer-encoding'] === 'chunked') {
      for (;;) {
        const lineEnd = rest.indexOf('\r\n', offset)
        if (lineEnd === -1) break
        const size = Number.parseInt(rest.slice(offset, lineEnd), 16)
        offset = lineEnd + 2
        if (!(size > 0)) {
          offset += 2
          break
        }
        body += rest.slice(offset, offset + size)
        offset += size + 2
      }
    } else if (status >= 200 && headers['content-length'] !== undefined) {
      const length = Number(headers['content-length'])
      body = rest.slice(offset, offset + length)
      offset += length
    } else if (status >= 200) {
      body = rest.slice(offset)
      offset = rest.length
    }
    responses.push({ status, headers, body, raw: rest.slice(0, Math.min(offset, rest.length)) })
    rest = rest.slice(offset)
  }
  return responses
}

/**
 * Asserts that `wire` is exactly the core's refusal (`buildRefusal`) as HTTP/1.1 bytes: status
 * line, the headers in their order, the body — a `Date` header Node adds is the only line allowed
 * besides, wherever Node puts it.
 */
export function expectRefusalBytes(wire: string, retryAfterSeconds = 5): void {
  const { status, headers, body } = buildRefusal(retryAfterSeconds, 1)
  const expected = `HTTP/1.1 ${status} Service Unavailable\r\n${Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('')}\r\n${body}`
  const headEnd = wire.indexOf('\r\n\r\n')
  const head = wire.slice(0, headEnd + 2).split('\r\n')
  const dates = head.filter((line) => /^date:/i.test(line))
  expect(dates.length, 'at most one Date header').toBeLessThanOrEqual(1)
  const withoutDate = head.filter((line) => !/^date:/i.test(line)).join('\r\n') + wire.slice(headEnd + 2)
  expect(withoutDate).toBe(expected)
}

/** The server side of the next connection `server` accepts. */
function nextServerSocket(app: AdapterApp): Promise<net.Socket> {
  return nextEvent<[net.Socket]>(app.server, 'connection').then(([socket]) => socket)
}

/**
 * Runs the conformance suite against one adapter. `createApp` builds the contract app
 * (`adapter-contract.ts`); every scenario uses real sockets on 127.0.0.1 and waits on events only.
 */
export function describeAdapter(
  name: string,
  createApp: CreateAdapterApp,
  capabilities: AdapterCapabilities = {},
): void {
  const countsHandlerAfterAbort = capabilities.countsHandlerAfterAbort ?? true
  const scenario = (id: ScenarioId, title: string, test: () => Promise<void>) => {
    const cause = capabilities.blocked?.[id]
    if (cause === undefined) it(title, test)
    else it.todo(`${title} — blocked: ${cause}`, test)
  }

  describe(`${name}: conformance`, () => {
    const apps: AdapterApp[] = []
    const connections: RawConnection[] = []
    const agents: Array<{ destroy(): void }> = []

    afterEach(async () => {
      for (const connection of connections.splice(0)) connection.socket.destroy()
      for (const agent of agents.splice(0)) agent.destroy()
      for (const app of apps.splice(0)) {
        await within(5_000, app.close(), `${name}: app.close() after the test`)
        if (app.shutdown.state !== 'closed')
          await within(5_000, app.shutdown.force('cleanup'), `${name}: force() after the test`)
      }
    })

    async function start(options: AdapterOptions = {}, settings?: { attach?: boolean }): Promise<AdapterApp> {
      const app = await createApp({ ...SUITE_OPTIONS, ...options }, settings)
      apps.push(app)
      return app
    }

    async function connect(app: AdapterApp): Promise<RawConnection> {
      const connection = await rawConnect(app.port)
      connections.push(connection)
      return connection
    }

    function agent() {
      const created = keepAliveAgent()
      agents.push(created)
      return created
    }

    /** An open keep-alive connection that has served one `/fast` and sits idle. */
    async function idleConnection(app: AdapterApp): Promise<RawConnection> {
      const raw = await connect(app)
      raw.write(rawRequest('GET', '/fast'))
      await raw.waitFor(/\r\n\r\nfast$/)
      return raw
    }

    /** Parks one `/slow` on its own connection: keeps the drain open and the server "busy". */
    async function parkOne(
      app: AdapterApp,
    ): Promise<{ gate: Deferred<void>; response: ReturnType<typeof request> }> {
      const parked = app.nextParked()
      const response = request(app.port, { path: '/slow', agent: agent() })
      // Handled now as well: a test that fails (or forces) before awaiting it must not leave an unhandled rejection.
      response.catch(() => {})
      const gate = await within(3_000, parked, '/slow to park')
      return { gate, response }
    }

    /** inFlight equals the handlers parked, and while one is parked the drain has not completed. */
    function expectCounted(app: AdapterApp): void {
      expect(app.shutdown.inFlight, 'inFlight equals the parked handlers').toBe(app.parkedCount)
      if (app.parkedCount > 0)
        expect(app.shutdown.state === 'closing' || app.shutdown.state === 'closed').toBe(false)
    }

    /** After the first response on `raw`, everything else it received. */
    function after(raw: string, firstBody: string): string {
      return raw.slice(raw.indexOf(firstBody) + firstBody.length)
    }

    scenario(
      'in-flight',
      'finishes an in-flight request in full, with Connection: close, and does not drain while it is parked',
      async () => {
        const app = await start()
        const { gate, response } = await parkOne(app)
        expectCounted(app)
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        // An I/O round trip: the drain had every chance to (wrongly) complete.
        expect(await connectOutcome(app.port)).toBe('ECONNREFUSED')
        expect(app.shutdown.state).toBe('stopping')
        expectCounted(app)
        expect(app.shutdown.inFlight).toBe(1)
        gate.resolve()
        const answered = await within(3_000, response, 'the parked response')
        expect([answered.status, answered.body, answered.headers.connection]).toEqual([
          200,
          'slow 0',
          'close',
        ])
        const done = await within(3_000, report, 'the report')
        expect(done).toMatchObject({
          graceful: true,
          exitCode: 0,
          requests: { forced: 0 },
          connectionsDestroyed: 0,
        })
        expect(done.requests.completed).toBe(1)
        expect(app.shutdown.inFlight).toBe(0)
      },
    )

    scenario(
      'last-request-serve',
      'serves the last request on an open connection with Connection: close (lateRequests: serve), then closes it with a FIN',
      async () => {
        const app = await start({ idleGraceMs: LATE_GRACE_MS })
        const raw = await idleConnection(app)
        const busy = await parkOne(app)
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        raw.write(rawRequest('GET', '/fast'))
        const closed = await within(3_000, raw.closed, 'the connection to close after its last request')
        expect(closed.error).toBeUndefined()
        expect(parseWire(closed.data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
          [200, 'fast', 'keep-alive'],
          [200, 'fast', 'close'],
        ])
        expect(app.hits.filter((path) => path === '/fast')).toHaveLength(2)
        busy.gate.resolve()
        await within(3_000, busy.response, 'the parked response')
        expect(await within(3_000, report, 'the report')).toMatchObject({ graceful: true, exitCode: 0 })
      },
    )

    scenario(
      'last-request-refuse',
      'refuses the last request under lateRequests: refuse with the core refusal, byte for byte, without running its handler',
      async () => {
        const app = await start({ idleGraceMs: LATE_GRACE_MS, lateRequests: 'refuse', retryAfterSeconds: 7 })
        const raw = await idleConnection(app)
        const busy = await parkOne(app)
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        raw.write(rawRequest('GET', '/fast'))
        const closed = await within(3_000, raw.closed, 'the refused connection to close')
        expect(closed.error).toBeUndefined()
        expectRefusalBytes(after(closed.data, '\r\n\r\nfast'), 7)
        expect(app.hits.filter((path) => path === '/fast')).toHaveLength(1)
        expectCounted(app)
        busy.gate.resolve()
        await within(3_000, busy.response, 'the parked response')
        const done = await within(3_000, report, 'the report')
        expect(done.requests.refused).toBe(1)
        expect(done.graceful).toBe(true)
      },
    )

    for (const lateRequests of ['serve', 'refuse'] as const) {
      scenario(
        'pipelined-extras',
        `never runs a handler for requests pipelined behind a connection's last one (lateRequests: ${lateRequests})`,
        async () => {
          const app = await start({ idleGraceMs: LATE_GRACE_MS, lateRequests })
          const raw = await idleConnection(app)
          const busy = await parkOne(app)
          const report = app.shutdown.close('test')
          await reached(app.shutdown, 'stopping')
          const hitsBefore = app.hits.length
          raw.write(
            rawRequest('GET', '/fast') + rawRequest('GET', '/fast') + rawRequest('POST', '/echo', {}, 'body'),
          )
          const closed = await within(3_000, raw.closed, 'the connection to close after its last request')
          expect(closed.error).toBeUndefined()
          const late = parseWire(after(closed.data, '\r\n\r\nfast'))
          expect(late).toHaveLength(1)
          if (lateRequests === 'serve') {
            expect([late[0]?.status, late[0]?.body, late[0]?.headers.connection]).toEqual([
              200,
              'fast',
              'close',
            ])
            expect(app.hits.slice(hitsBefore)).toEqual(['/fast'])
          } else {
            expectRefusalBytes(late[0]?.raw ?? '')
            expect(app.hits.slice(hitsBefore)).toEqual([])
          }
          expectCounted(app)
          expect(app.shutdown.inFlight).toBe(1)
          busy.gate.resolve()
          await within(3_000, busy.response, 'the parked response')
          const done = await within(3_000, report, 'the report')
          expect(done.requests.refused).toBe(lateRequests === 'serve' ? 2 : 3)
          expect(done.graceful).toBe(true)
        },
      )
    }

    scenario(
      'pipelined-across-gate',
      'answers every request pipelined before stopping: the newest is the last, one more behind it never reaches a handler',
      async () => {
        const app = await start({ idleGraceMs: LATE_GRACE_MS })
        const raw = await connect(app)
        const first = app.nextParked()
        const second = app.nextParked()
        raw.write(rawRequest('GET', '/slow') + rawRequest('GET', '/slow'))
        const gates = [
          await within(3_000, first, 'the first /slow'),
          await within(3_000, second, 'the second /slow'),
        ]
        expectCounted(app)
        expect(app.shutdown.inFlight).toBe(2)
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        raw.write(rawRequest('GET', '/fast'))
        // The extra request reached the server (a round trip on another connection follows it).
        expect(await connectOutcome(app.port)).toBe('ECONNREFUSED')
        expectCounted(app)
        for (const gate of gates) gate.resolve()
        const closed = await within(3_000, raw.closed, 'the connection to close after its last response')
        expect(closed.error).toBeUndefined()
        expect(parseWire(closed.data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
          [200, 'slow 0', 'keep-alive'],
          [200, 'slow 0', 'close'],
        ])
        expect(app.hits).toEqual(['/slow', '/slow'])
        const done = await within(3_000, report, 'the report')
        expect(done).toMatchObject({ graceful: true, requests: { completed: 2, refused: 1, forced: 0 } })
      },
    )

    scenario(
      'pipelined-written',
      'answers a response already written behind a parked one, then reaps the idle socket',
      async () => {
        const app = await start({ idleGraceMs: 30 })
        const raw = await connect(app)
        const parked = app.nextParked()
        raw.write(rawRequest('GET', '/slow') + rawRequest('GET', '/fast'))
        const gate = await within(3_000, parked, '/slow to park')
        await until(() => app.hits.includes('/fast'), 3_000, 'the pipelined /fast handler to run')
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        // Exact: the parked handler, plus the /fast response queued behind it (not yet on the wire).
        expect(app.shutdown.inFlight).toBe(2)
        gate.resolve()
        const closed = await within(3_000, raw.closed, 'the socket to be reaped once idle')
        expect(closed.error).toBeUndefined()
        expect(parseWire(closed.data).map((r) => [r.status, r.body])).toEqual([
          [200, 'slow 0'],
          [200, 'fast'],
        ])
        expect(await within(3_000, report, 'the report')).toMatchObject({
          graceful: true,
          requests: { completed: 2, forced: 0 },
        })
      },
    )

    scenario(
      'new-connections',
      'refuses new connections once stopping (ECONNREFUSED), while the listener is open during the drain delay',
      async () => {
        // Long enough that a stalled CI machine still sends the next request inside the delay.
        const app = await start({ drainDelayMs: 1_000 })
        const busy = await parkOne(app)
        const report = app.shutdown.close('test')
        expect(app.shutdown.state).toBe('draining')
        const during = await request(app.port, { path: '/fast', agent: false })
        expect([during.status, during.body]).toEqual([200, 'fast'])
        await reached(app.shutdown, 'stopping')
        expect(app.server.listening).toBe(false)
        expect(await connectOutcome(app.port)).toBe('ECONNREFUSED')
        busy.gate.resolve()
        await within(3_000, busy.response, 'the parked response')
        expect(await within(3_000, report, 'the report')).toMatchObject({ graceful: true })
      },
    )

    scenario(
      'draining-keep-alive',
      'leaves keep-alive untouched while draining: a reused socket is served with keep-alive',
      async () => {
        const app = await start({ drainDelayMs: 3_000 })
        const client = agent()
        await request(app.port, { path: '/fast', agent: client })
        const report = app.shutdown.close('test')
        expect(app.shutdown.state).toBe('draining')
        const during = await request(app.port, { path: '/fast', agent: client })
        expect([during.status, during.reused, during.headers.connection]).toEqual([200, true, 'keep-alive'])
        expect(app.shutdown.isReady).toBe(false)
        await within(3_000, app.shutdown.force('test'), 'force() to end the drain delay')
        expect((await report).reason).toBe('test')
      },
    )

    for (const lateRequests of ['serve', 'refuse'] as const) {
      scenario(
        'chunked-upload',
        `completes a chunked upload still arriving when stopping begins (lateRequests: ${lateRequests})`,
        async () => {
          const app = await start({ lateRequests })
          const parked = app.nextParked()
          const raw = await connect(app)
          raw.write(
            'POST /slow HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n',
          )
          await until(() => app.shutdown.inFlight === 1, 3_000, 'the upload to be counted')
          const report = app.shutdown.close('test')
          await reached(app.shutdown, 'stopping')
          expect(app.shutdown.inFlight).toBe(1)
          raw.write('6\r\n world\r\n0\r\n\r\n')
          const gate = await within(3_000, parked, 'the upload to finish and park')
          expectCounted(app)
          gate.resolve()
          const closed = await within(3_000, raw.closed, 'the response and close')
          expect(closed.error).toBeUndefined()
          expect(parseWire(closed.data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
            [200, 'slow 11', 'close'],
          ])
          expect(await within(3_000, report, 'the report')).toMatchObject({
            graceful: true,
            requests: { completed: 1, refused: 0 },
          })
        },
      )
    }

    scenario(
      'last-request-slow',
      'counts a last request that parks while stopping (lateRequests: serve) and closes its connection after it',
      async () => {
        const app = await start({ idleGraceMs: LATE_GRACE_MS })
        const raw = await idleConnection(app)
        const busy = await parkOne(app)
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        const late = app.nextParked()
        raw.write(rawRequest('POST', '/slow', {}, 'late body'))
        const gate = await within(3_000, late, 'the late request to park')
        expectCounted(app)
        expect(app.shutdown.inFlight).toBe(2)
        busy.gate.resolve()
        await within(3_000, busy.response, 'the first parked response')
        expect(await connectOutcome(app.port)).toBe('ECONNREFUSED')
        expect(app.shutdown.state).toBe('stopping')
        expectCounted(app)
        gate.resolve()
        const closed = await within(3_000, raw.closed, 'the late response and the close')
        expect(closed.error).toBeUndefined()
        expect(
          parseWire(after(closed.data, '\r\n\r\nfast')).map((r) => [r.status, r.body, r.headers.connection]),
        ).toEqual([[200, 'slow 9', 'close']])
        expect(await within(3_000, report, 'the report')).toMatchObject({
          graceful: true,
          requests: { completed: 2, refused: 0, forced: 0 },
        })
      },
    )

    for (const delivery of ['in one write', 'in two parts, the rest after the 503'] as const) {
      scenario(
        'refused-upload',
        `delivers a refused upload's 503 intact, no reset (body ${delivery})`,
        async () => {
          const app = await start({ idleGraceMs: LATE_GRACE_MS, lateRequests: 'refuse' })
          const raw = await idleConnection(app)
          const busy = await parkOne(app)
          const report = app.shutdown.close('test')
          await reached(app.shutdown, 'stopping')
          const body = Buffer.alloc(256 * 1024, 'u').toString()
          const head = `POST /echo HTTP/1.1\r\nhost: localhost\r\ncontent-length: ${body.length}\r\n\r\n`
          if (delivery === 'in one write') {
            raw.write(head + body)
          } else {
            raw.write(head + body.slice(0, 16 * 1024))
            await raw.waitFor('"statusCode":503}')
            raw.write(body.slice(16 * 1024))
          }
          const closed = await within(3_000, raw.closed, 'the refused upload connection to close')
          expect(closed.error).toBeUndefined()
          expectRefusalBytes(after(closed.data, '\r\n\r\nfast'))
          expect(app.hits).not.toContain('/echo')
          busy.gate.resolve()
          await within(3_000, busy.response, 'the parked response')
          expect(await within(3_000, report, 'the report')).toMatchObject({
            graceful: true,
            requests: { refused: 1 },
          })
        },
      )
    }

    scenario(
      'expect-continue-stopping',
      'answers Expect: 100-continue with the refusal and no 100 Continue once stopping',
      async () => {
        const app = await start({ idleGraceMs: LATE_GRACE_MS })
        const raw = await idleConnection(app)
        const busy = await parkOne(app)
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        raw.write(
          'POST /echo HTTP/1.1\r\nhost: localhost\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n',
        )
        const closed = await within(3_000, raw.closed, 'the refused connection to close')
        expect(closed.error).toBeUndefined()
        const late = after(closed.data, '\r\n\r\nfast')
        expect(late).not.toContain('100 Continue')
        expectRefusalBytes(late)
        expect(app.hits).not.toContain('/echo')
        busy.gate.resolve()
        await within(3_000, busy.response, 'the parked response')
        expect(await within(3_000, report, 'the report')).toMatchObject({ graceful: true })
      },
    )

    scenario(
      'expect-continue-serving',
      'still answers Expect: 100-continue with 100 Continue while serving',
      async () => {
        const app = await start()
        const raw = await connect(app)
        raw.write(
          'POST /echo HTTP/1.1\r\nhost: localhost\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n',
        )
        await raw.waitFor('HTTP/1.1 100 Continue\r\n\r\n')
        raw.write('hello')
        await raw.waitFor(/\r\n\r\nhello$/)
        expect(parseWire(raw.received()).map((r) => [r.status, r.body])).toEqual([
          [100, ''],
          [200, 'hello'],
        ])
      },
    )

    scenario(
      'upgrade-stopping',
      'refuses an upgrade request while stopping and closes its socket; the app never sees it, no 101 goes out',
      async () => {
        const app = await start({ idleGraceMs: LATE_GRACE_MS })
        const upgrades: string[] = []
        // What a WebSocket server (ws) does: answer 101 when it can still write, else destroy.
        app.server.on('upgrade', (req, socket: net.Socket) => {
          upgrades.push(req.url ?? '')
          if (!socket.writable) return socket.destroy()
          socket.end('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n')
        })
        const raw = await idleConnection(app)
        const busy = await parkOne(app)
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        raw.write(rawRequest('GET', '/fast', { connection: 'Upgrade', upgrade: 'websocket' }))
        const closed = await within(3_000, raw.closed, 'the upgrade connection to close')
        expect(closed.error).toBeUndefined()
        const late = after(closed.data, '\r\n\r\nfast')
        expect(late).not.toContain('101')
        expectRefusalBytes(late)
        // The app's upgrade listener never sees a refused upgrade.
        expect(upgrades).toEqual([])
        busy.gate.resolve()
        await within(3_000, busy.response, 'the parked response')
        expect(await within(3_000, report, 'the report')).toMatchObject({
          graceful: true,
          requests: { refused: 1 },
        })
      },
    )

    scenario(
      'upgraded-socket',
      'lets an upgraded socket outlive the drain; the app closes it in a close hook',
      async () => {
        const app = await start()
        const upgraded: net.Socket[] = []
        app.server.on('upgrade', (_req, socket: net.Socket) => {
          upgraded.push(socket)
          socket.write(
            'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n',
          )
        })
        const raw = await connect(app)
        raw.write(rawRequest('GET', '/ws', { connection: 'Upgrade', upgrade: 'websocket' }))
        await raw.waitFor('101 Switching Protocols')
        let openInHook: boolean | undefined
        // Where an app closes its WebSocket server (1001 Going Away): the socket is still open here.
        app.shutdown.onClose('websockets', () => {
          openInHook =
            upgraded.length === 1 && !raw.socket.destroyed && upgraded.every((socket) => !socket.destroyed)
          for (const socket of upgraded) socket.end('going away')
        })
        const done = await within(
          3_000,
          app.shutdown.close('test'),
          'the drain, which upgraded sockets do not hold',
        )
        expect(done.graceful).toBe(true)
        expect(openInHook).toBe(true)
        const closed = await within(3_000, raw.closed, 'the upgraded socket to close')
        expect(closed.error).toBeUndefined()
        expect(closed.data.endsWith('going away')).toBe(true)
      },
    )

    scenario(
      'unused-connection',
      'closes a connection that was opened but never used, with a FIN',
      async () => {
        const app = await start({ idleGraceMs: 30 })
        const accepted = nextServerSocket(app)
        const raw = await connect(app)
        await within(3_000, accepted, 'the server to accept the connection')
        const done = await within(3_000, app.shutdown.close('test'), 'the drain')
        const closed = await within(3_000, raw.closed, 'the unused connection to close')
        expect(closed.error).toBeUndefined()
        expect(closed.data).toBe('')
        expect(done).toMatchObject({ graceful: true, connectionsDestroyed: 0 })
      },
    )

    scenario(
      'idle-keep-alive',
      'closes an idle keep-alive socket with a FIN once the server is quiet',
      async () => {
        const app = await start({ idleGraceMs: 30 })
        const raw = await idleConnection(app)
        const done = await within(3_000, app.shutdown.close('test'), 'the drain')
        const closed = await within(3_000, raw.closed, 'the idle socket to close')
        expect(closed.error).toBeUndefined()
        expect(done).toMatchObject({ graceful: true, connectionsDestroyed: 0 })
        expect(await connectOutcome(app.port)).toBe('ECONNREFUSED')
      },
    )

    scenario('slow-reader', 'delivers a large response in full to a slow reader, then closes', async () => {
      const app = await start({ idleGraceMs: 30 })
      const raw = await connect(app)
      raw.socket.pause()
      raw.write(rawRequest('GET', '/big'))
      await until(() => app.hits.includes('/big'), 3_000, 'the /big handler to run')
      const report = app.shutdown.close('test')
      await reached(app.shutdown, 'stopping')
      raw.socket.resume()
      const closed = await within(4_000, raw.closed, 'the whole body and the close')
      expect(closed.error).toBeUndefined()
      const [big, ...rest] = parseWire(closed.data)
      expect(rest).toEqual([])
      expect(big?.status).toBe(200)
      expect(big?.body.length).toBe(1024 * 1024)
      expect(/^x+$/.test(big?.body ?? '')).toBe(true)
      expect(await within(3_000, report, 'the report')).toMatchObject({
        graceful: true,
        connectionsDestroyed: 0,
      })
    })

    scenario(
      'abort-mid-request',
      'frees the slot of a request whose client aborts mid-upload, and the drain completes',
      async () => {
        const app = await start()
        const raw = await connect(app)
        raw.write(
          `POST /echo HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100000\r\n\r\n${'a'.repeat(1000)}`,
        )
        await until(() => app.shutdown.inFlight === 1, 3_000, 'the upload to be counted')
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        expect(await connectOutcome(app.port)).toBe('ECONNREFUSED')
        expect(app.shutdown.state).toBe('stopping')
        raw.socket.destroy()
        const done = await within(3_000, report, 'the drain after the abort')
        expect(done).toMatchObject({ graceful: true, requests: { forced: 0 } })
        expect(app.shutdown.inFlight).toBe(0)
      },
    )

    scenario(
      'abort-mid-response',
      'frees the slot of a streamed response whose client aborts mid-response, no earlier than its handler allows',
      async () => {
        const app = await start()
        const parked = app.nextParked()
        const accepted = nextServerSocket(app)
        const raw = await connect(app)
        const serverSocket = await within(3_000, accepted, 'the server to accept')
        raw.write(rawRequest('GET', '/stream'))
        const gate = await within(3_000, parked, '/stream to park')
        await raw.waitFor('chunk 0')
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        expectCounted(app)
        expect(app.shutdown.inFlight).toBe(1)
        const gone = nextEvent(serverSocket, 'close')
        raw.socket.destroy()
        await within(3_000, gone, 'the server to see the abort')
        if (countsHandlerAfterAbort) {
          expectCounted(app)
        } else {
          await until(() => app.shutdown.inFlight === 0, 3_000, 'the aborted response to be released')
        }
        gate.resolve()
        const done = await within(3_000, report, 'the drain after the abort')
        expect(done).toMatchObject({ graceful: true, requests: { forced: 0 } })
        expect(app.shutdown.inFlight).toBe(0)
      },
    )

    for (const path of ['/throw', '/reject'] as const) {
      scenario(
        'handler-error',
        `answers 500 when the handler ${path === '/throw' ? 'throws' : 'rejects'}, releases it, and serves it as a last request while stopping`,
        async () => {
          const app = await start({ idleGraceMs: LATE_GRACE_MS })
          const served = await request(app.port, { path, agent: false })
          expect(served.status).toBe(500)
          await until(() => app.shutdown.inFlight === 0, 3_000, 'the failed request to be released')
          const raw = await idleConnection(app)
          const busy = await parkOne(app)
          const report = app.shutdown.close('test')
          await reached(app.shutdown, 'stopping')
          raw.write(rawRequest('GET', path))
          const closed = await within(3_000, raw.closed, 'the connection to close after its last request')
          expect(closed.error).toBeUndefined()
          const late = parseWire(after(closed.data, '\r\n\r\nfast'))
          expect(late.map((r) => [r.status, r.headers.connection])).toEqual([[500, 'close']])
          await until(() => app.shutdown.inFlight === 1, 3_000, 'the failed late request to be released')
          expectCounted(app)
          busy.gate.resolve()
          await within(3_000, busy.response, 'the parked response')
          expect(await within(3_000, report, 'the report')).toMatchObject({
            graceful: true,
            requests: { forced: 0 },
          })
        },
      )
    }

    scenario(
      'streaming',
      'counts a streamed response until its end and closes its socket after it',
      async () => {
        const app = await start({ idleGraceMs: 30 })
        const parked = app.nextParked()
        const raw = await connect(app)
        raw.write(rawRequest('GET', '/stream'))
        const gate = await within(3_000, parked, '/stream to park')
        await raw.waitFor('chunk 0')
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        expect(await connectOutcome(app.port)).toBe('ECONNREFUSED')
        expect(app.shutdown.state).toBe('stopping')
        expectCounted(app)
        expect(app.shutdown.inFlight).toBe(1)
        gate.resolve()
        const closed = await within(3_000, raw.closed, 'the stream to end and its socket to close')
        expect(closed.error).toBeUndefined()
        expect(parseWire(closed.data).map((r) => [r.status, r.body])).toEqual([[200, 'chunk 0\nchunk 1\n']])
        expect(await within(3_000, report, 'the report')).toMatchObject({
          graceful: true,
          requests: { completed: 1 },
        })
      },
    )

    scenario(
      'sse',
      'ends an SSE stream promptly on shutdown.signal, cleanly, long before the deadline',
      async () => {
        const app = await start({ timeoutMs: 4_000, idleGraceMs: 30 })
        const raw = await connect(app)
        raw.write(rawRequest('GET', '/sse', { accept: 'text/event-stream' }))
        await raw.waitFor('data: hello')
        expect(app.shutdown.inFlight).toBe(1)
        const done = await within(
          3_000,
          app.shutdown.close('test'),
          'the SSE stream to end on shutdown.signal',
        )
        expect(done).toMatchObject({ graceful: true, requests: { completed: 1, forced: 0 } })
        expect(done.durationMs).toBeLessThan(2_000)
        const closed = await within(3_000, raw.closed, 'the SSE socket to close')
        expect(closed.error).toBeUndefined()
        const [sse] = parseWire(closed.data)
        expect(sse?.headers['content-type']).toMatch(/^text\/event-stream/)
        expect(sse?.body).toBe('data: hello\n\n')
        expect(closed.data.endsWith('0\r\n\r\n')).toBe(true)
      },
    )

    scenario(
      'hung-handler',
      'forces a hung handler at the deadline, still runs the close hooks, reports forced with exit code 1',
      async () => {
        const timeoutMs = 300
        const app = await start({ timeoutMs })
        const ran: Array<{ state: ShutdownState }> = []
        app.shutdown.onClose('db', () => {
          ran.push({ state: app.shutdown.state })
        })
        const parked = app.nextParked()
        const hung = request(app.port, { path: '/slow', agent: agent() }).then(
          () => 'answered',
          (error: NodeJS.ErrnoException) => error.code ?? error.message,
        )
        await within(3_000, parked, '/slow to park')
        const startedAt = Date.now()
        const done = await within(3_000, app.shutdown.close('test'), 'the forced drain')
        expect(Date.now() - startedAt).toBeGreaterThanOrEqual(timeoutMs - 5)
        expect(done).toMatchObject({ graceful: false, exitCode: 1, requests: { forced: 1 } })
        expect(done.connectionsDestroyed).toBeGreaterThanOrEqual(1)
        expect(ran).toEqual([{ state: 'closing' }])
        expect(done.hooks.find((hook) => hook.label === 'db')).toMatchObject({ phase: 'close', ok: true })
        expect(await within(3_000, hung, 'the client to see the cut')).toMatch(/ECONNRESET|socket hang up/)
      },
    )

    scenario(
      'hooks',
      'runs close hooks after the drain, newest first: one throws, one overruns its timeout, the rest still run',
      async () => {
        const app = await start()
        const order: string[] = []
        let overrunSignal: AbortSignal | undefined
        const seen: Array<[string, number, ShutdownState]> = []
        const note = (label: string) => {
          order.push(label)
          seen.push([label, app.shutdown.inFlight, app.shutdown.state])
        }
        app.shutdown.onDrain('deregister', () => {
          order.push('deregister')
          throw new Error('drain hook failed')
        })
        app.shutdown.onClose('first', () => note('first'))
        app.shutdown.onClose('throws', () => {
          note('throws')
          throw new Error('hook failed')
        })
        app.shutdown.onClose(
          'overruns',
          (signal) => {
            note('overruns')
            overrunSignal = signal
            return new Promise(() => {})
          },
          { timeoutMs: 100 },
        )
        app.shutdown.onClose('last', async () => note('last'))
        const busy = await parkOne(app)
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        expect(order).toEqual(['deregister'])
        busy.gate.resolve()
        const done = await within(3_000, report, 'the hooks to finish')
        expect(order).toEqual(['deregister', 'last', 'overruns', 'throws', 'first'])
        expect(seen.every(([, inFlight, state]) => inFlight === 0 && state === 'closing')).toBe(true)
        const ours = done.hooks.filter((hook) =>
          ['deregister', 'first', 'throws', 'overruns', 'last'].includes(hook.label),
        )
        expect(ours.map((hook) => [hook.label, hook.phase, hook.ok, hook.timedOut])).toEqual([
          ['deregister', 'drain', false, false],
          ['last', 'close', true, false],
          ['overruns', 'close', false, true],
          ['throws', 'close', false, false],
          ['first', 'close', true, false],
        ])
        expect(ours[3]?.error).toMatchObject({ message: 'hook failed' })
        expect(overrunSignal?.aborted).toBe(true)
        expect(done).toMatchObject({ graceful: true, exitCode: 1 })
      },
    )

    scenario(
      'tasks',
      'reports a rejecting task as failed and aborts a task that ignores its signal at the deadline',
      async () => {
        const app = await start({ timeoutMs: 300 })
        let ignoredSignal: AbortSignal | undefined
        const failing = app.shutdown.track('fails', Promise.reject(new Error('task failed')))
        void app.shutdown.track('ignores', (signal) => {
          ignoredSignal = signal
          return new Promise(() => {})
        })
        const finishing = app.shutdown.track(
          'finishes',
          new Promise<string>((resolve) =>
            app.shutdown.signal.addEventListener('abort', () => resolve('wrapped up')),
          ),
        )
        await expect(failing).rejects.toThrow('task failed')
        const done = await within(3_000, app.shutdown.close('test'), 'the forced drain')
        expect(await finishing).toBe('wrapped up')
        expect(done).toMatchObject({
          graceful: false,
          exitCode: 1,
          tasks: { completed: 1, failed: 1, aborted: 1 },
        })
        expect(ignoredSignal?.aborted).toBe(true)
      },
    )

    scenario(
      'force',
      'force() during the drain delay makes the deadline now and caps the close hooks',
      async () => {
        const app = await start({ drainDelayMs: 2_000, timeoutMs: 4_000, forcedHookTimeoutMs: 100 })
        app.shutdown.onClose('slow-db', () => new Promise(() => {}), { timeoutMs: 3_000 })
        const busy = await parkOne(app)
        const report = app.shutdown.close('test')
        expect(app.shutdown.state).toBe('draining')
        const startedAt = Date.now()
        const forced = app.shutdown.force('second signal')
        expect(forced).toBe(report)
        const done = await within(3_000, forced, 'the forced shutdown')
        expect(Date.now() - startedAt).toBeLessThan(1_500)
        expect(done).toMatchObject({ reason: 'test', graceful: false, exitCode: 1, requests: { forced: 1 } })
        expect(done.hooks.find((hook) => hook.label === 'slow-db')).toMatchObject({
          ok: false,
          timedOut: true,
        })
        expect(
          await within(
            3_000,
            busy.response.then(
              () => 'answered',
              () => 'cut',
            ),
            'the cut',
          ),
        ).toBe('cut')
      },
    )

    scenario(
      'health',
      'answers readiness 503 from the signal on and liveness 200 throughout, without counting probes',
      async () => {
        const app = await start({ health: true, drainDelayMs: 2_000 })
        const probe = (path: string) =>
          request(app.port, { path, agent: false }).then((r) => [r.status, r.body])
        expect(await probe('/readyz')).toEqual([200, '{"status":"serving"}'])
        expect(await probe('/livez')).toEqual([200, '{"status":"alive"}'])
        // With a query, and in absolute form (what a forward proxy sends, and servers must accept).
        expect(await probe('/readyz?verbose=1')).toEqual([200, '{"status":"serving"}'])
        expect(await probe(`http://127.0.0.1:${app.port}/livez`)).toEqual([200, '{"status":"alive"}'])
        void app.shutdown.close('test')
        expect(await probe('/readyz')).toEqual([503, '{"status":"draining"}'])
        expect(await probe('/livez')).toEqual([200, '{"status":"alive"}'])
        expect(app.shutdown.inFlight).toBe(0)
        expect(app.hits).toEqual([])
        await within(3_000, app.shutdown.force('test'), 'force()')
      },
    )

    scenario(
      'health-stopping',
      'answers a readiness probe on a kept-alive connection while stopping with 503, Connection: close, uncounted',
      async () => {
        const app = await start({ health: true, idleGraceMs: LATE_GRACE_MS })
        const raw = await idleConnection(app)
        const busy = await parkOne(app)
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        raw.write(rawRequest('GET', '/readyz'))
        const closed = await within(3_000, raw.closed, 'the probe connection to close')
        expect(closed.error).toBeUndefined()
        const [probe, ...rest] = parseWire(after(closed.data, '\r\n\r\nfast'))
        expect(rest).toEqual([])
        expect([probe?.status, probe?.body, probe?.headers.connection]).toEqual([
          503,
          '{"status":"stopping"}',
          'close',
        ])
        expectCounted(app)
        expect(app.shutdown.inFlight).toBe(1)
        busy.gate.resolve()
        await within(3_000, busy.response, 'the parked response')
        expect(await within(3_000, report, 'the report')).toMatchObject({
          graceful: true,
          requests: { refused: 0 },
        })
      },
    )

    scenario(
      'discovery',
      'discovers the server from the first request when attach() was not called',
      async () => {
        const app = await start({ idleGraceMs: 30 }, { attach: false })
        const served = await request(app.port, { path: '/fast', agent: false })
        expect(served.status).toBe(200)
        const raw = await idleConnection(app)
        const done = await within(3_000, app.shutdown.close('test'), 'the drain')
        expect(done.graceful).toBe(true)
        expect(await connectOutcome(app.port)).toBe('ECONNREFUSED')
        expect((await within(3_000, raw.closed, 'the idle socket to close')).error).toBeUndefined()
      },
    )

    for (const lateRequests of ['serve', 'refuse'] as const) {
      scenario(
        'pipelined-upload',
        `delivers a connection's last answer intact when a large upload is pipelined behind it (lateRequests: ${lateRequests})`,
        async () => {
          const app = await start({ idleGraceMs: LATE_GRACE_MS, lateRequests })
          const raw = await idleConnection(app)
          const busy = await parkOne(app)
          const report = app.shutdown.close('test')
          await reached(app.shutdown, 'stopping')
          const upload = Buffer.alloc(512 * 1024, 'p').toString()
          raw.write(rawRequest('GET', '/fast') + rawRequest('POST', '/echo', {}, upload))
          const closed = await within(3_000, raw.closed, 'the connection to close after its last answer')
          expect(closed.error).toBeUndefined()
          const late = parseWire(after(closed.data, '\r\n\r\nfast'))
          expect(late).toHaveLength(1)
          if (lateRequests === 'serve') expect([late[0]?.status, late[0]?.body]).toEqual([200, 'fast'])
          else expectRefusalBytes(late[0]?.raw ?? '')
          expect(app.hits).not.toContain('/echo')
          busy.gate.resolve()
          await within(3_000, busy.response, 'the parked response')
          expect(await within(3_000, report, 'the report')).toMatchObject({ graceful: true })
        },
      )
    }

    scenario(
      'half-sent-head',
      'closes a connection whose request head stopped arriving, once quiet, without running a handler',
      async () => {
        const app = await start({ idleGraceMs: 30 })
        const raw = await connect(app)
        raw.write('GET /fast HTTP/1.1\r\nhost: localhost\r\n')
        // The head reached the server: a full request on another connection is answered after it.
        expect((await request(app.port, { path: '/fast', agent: false })).status).toBe(200)
        const done = await within(3_000, app.shutdown.close('test'), 'the drain')
        expect(done).toMatchObject({ graceful: true, requests: { forced: 0 } })
        await within(3_000, raw.closed, 'the half-sent connection to close')
        expect(app.hits).toEqual(['/fast'])
      },
    )

    scenario(
      'client-half-close',
      'answers a last request whose client half-closed right after sending it',
      async () => {
        const app = await start({ idleGraceMs: LATE_GRACE_MS })
        const raw = await idleConnection(app)
        const busy = await parkOne(app)
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        raw.socket.end(rawRequest('POST', '/echo', {}, 'half-closed'))
        const closed = await within(3_000, raw.closed, 'the answer and the close')
        expect(closed.error).toBeUndefined()
        expect(parseWire(after(closed.data, '\r\n\r\nfast')).map((r) => [r.status, r.body])).toEqual([
          [200, 'half-closed'],
        ])
        busy.gate.resolve()
        await within(3_000, busy.response, 'the parked response')
        expect(await within(3_000, report, 'the report')).toMatchObject({ graceful: true })
      },
    )

    scenario(
      'many-idle',
      'closes twenty idle keep-alive connections with a FIN each, none destroyed',
      async () => {
        const app = await start({ idleGraceMs: 30 })
        const idle = await Promise.all(Array.from({ length: 20 }, () => idleConnection(app)))
        const done = await within(3_000, app.shutdown.close('test'), 'the drain')
        expect(done).toMatchObject({ graceful: true, connectionsDestroyed: 0 })
        const closed = await within(
          3_000,
          Promise.all(idle.map((raw) => raw.closed)),
          'every idle socket to close',
        )
        expect(closed.map((c) => c.error?.code ?? 'fin')).toEqual(idle.map(() => 'fin'))
      },
    )

    scenario(
      'head-refused',
      'refuses a late HEAD request with the refusal head and no body (lateRequests: refuse)',
      async () => {
        const app = await start({ idleGraceMs: LATE_GRACE_MS, lateRequests: 'refuse' })
        const raw = await idleConnection(app)
        const busy = await parkOne(app)
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        raw.write(rawRequest('HEAD', '/fast'))
        const closed = await within(3_000, raw.closed, 'the refused HEAD to close')
        expect(closed.error).toBeUndefined()
        const late = after(closed.data, '\r\n\r\nfast')
        // The refusal's head, byte for byte; a HEAD answer carries no body.
        expectRefusalBytes(`${late}${buildRefusal(5, 1).body}`)
        expect(late.endsWith('\r\n\r\n')).toBe(true)
        expect(app.hits.filter((path) => path === '/fast')).toHaveLength(1)
        busy.gate.resolve()
        await within(3_000, busy.response, 'the parked response')
        expect(await within(3_000, report, 'the report')).toMatchObject({
          graceful: true,
          requests: { refused: 1 },
        })
      },
    )

    scenario(
      'chunked-refused',
      'delivers the refusal of a chunked upload intact while its chunks keep coming, no reset (lateRequests: refuse)',
      async () => {
        const app = await start({ idleGraceMs: LATE_GRACE_MS, lateRequests: 'refuse' })
        const raw = await idleConnection(app)
        const busy = await parkOne(app)
        const report = app.shutdown.close('test')
        await reached(app.shutdown, 'stopping')
        const chunk = `4000\r\n${'c'.repeat(0x4000)}\r\n`
        raw.write(`POST /echo HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n${chunk}`)
        await raw.waitFor('"statusCode":503}')
        raw.write(chunk.repeat(8))
        raw.write('0\r\n\r\n')
        const closed = await within(3_000, raw.closed, 'the refused upload connection to close')
        expect(closed.error).toBeUndefined()
        expectRefusalBytes(after(closed.data, '\r\n\r\nfast'))
        expect(app.hits).not.toContain('/echo')
        busy.gate.resolve()
        await within(3_000, busy.response, 'the parked response')
        expect(await within(3_000, report, 'the report')).toMatchObject({
          graceful: true,
          requests: { refused: 1 },
        })
      },
    )
  })
}
