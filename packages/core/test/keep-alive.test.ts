import http from 'node:http'
import net from 'node:net'
import { Writable } from 'node:stream'
import {
  closeServer,
  createFakeClock,
  deferred,
  keepAliveAgent,
  listen,
  parseResponses,
  rawConnect,
  rawRequest,
  request,
  until,
  within,
} from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createShutdown, type Shutdown, writeRefusal } from '../src/index.js'
import { startApp, type TestApp } from './helpers/app.js'

let app: TestApp | undefined
const servers: http.Server[] = []
afterEach(async () => {
  if (app) await closeServer(app.server)
  app = undefined
  for (const server of servers.splice(0)) await closeServer(server)
})

/** A raw node:http server counting its requests with `admit()`; `answer` writes each response. */
async function startServer(
  shutdown: Shutdown,
  answer: (res: http.ServerResponse) => void | Promise<void>,
): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((req, res) => {
    if (!shutdown.admit(req, res)) return
    void answer(res)
  })
  shutdown.attach(server)
  servers.push(server)
  return { server, port: await listen(server) }
}

/** The ways an app can say `Connection: keep-alive` itself (SSE libraries and proxies do). */
const explicitKeepAlive: Array<[string, (res: http.ServerResponse) => void]> = [
  [
    'writeHead(status, headers)',
    (res) => res.writeHead(200, { 'content-length': '2', connection: 'keep-alive' }).end('ok'),
  ],
  [
    'writeHead(status, reason, [name, value, …])',
    (res) => res.writeHead(200, 'OK', ['Content-Length', '2', 'Connection', 'keep-alive']).end('ok'),
  ],
  [
    'setHeader() then end()',
    (res) => {
      res.setHeader('Connection', 'Keep-Alive')
      res.setHeader('content-length', '2')
      res.end('ok')
    },
  ],
  [
    'setHeader() then writeHead(status, headers)',
    (res) => {
      res.setHeader('x-app', '1')
      res.writeHead(200, { 'content-length': '2', Connection: 'keep-alive' }).end('ok')
    },
  ],
]

describe('keep-alive connections through a shutdown', () => {
  it('leaves keep-alive untouched while draining', async () => {
    app = await startApp({ drainDelayMs: 2_000, timeoutMs: 5_000 })
    const agent = keepAliveAgent()
    await request(app.port, { agent, path: '/a' })
    void app.shutdown.close('test')
    expect(app.shutdown.state).toBe('draining')
    const during = await request(app.port, { agent, path: '/b' })
    expect(during.status).toBe(200)
    expect(during.reused).toBe(true)
    expect(during.headers.connection).toBe('keep-alive')
    agent.destroy()
    await app.shutdown.force()
  })

  it('serves an in-flight request in full with Connection: close, then closes its socket', async () => {
    app = await startApp({ timeoutMs: 5_000 })
    const agent = keepAliveAgent()
    const pending = request(app.port, { agent, path: '/slow' })
    const gate = await within(2_000, app.nextParked(), 'the slow request to park')
    const report = app.shutdown.close('test')
    await until(() => app?.shutdown.state === 'stopping', 2_000, 'stopping')
    gate.resolve()
    const response = await within(2_000, pending, 'the slow response')
    expect(response.status).toBe(200)
    expect(response.body).toBe('ok /slow')
    expect(response.headers.connection).toBe('close')
    const done = await within(2_000, report, 'the report')
    expect(done.graceful).toBe(true)
    expect(done.requests.completed).toBe(1)
    expect(app.shutdown.inFlight).toBe(0)
  })

  it('closes an idle keep-alive socket with a FIN once the server is quiet, and refuses new connections', async () => {
    app = await startApp({ timeoutMs: 5_000, idleGraceMs: 30 })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/one'))
    await raw.waitFor('ok /one')
    const report = await within(2_000, app.shutdown.close('test'), 'the drain to finish')
    const closed = await within(2_000, raw.closed, 'the idle socket to close')
    expect(closed.error).toBeUndefined()
    expect(report.graceful).toBe(true)
    const { port } = app
    const refused = await new Promise<string>((resolve) => {
      const socket = net.connect(port, '127.0.0.1')
      socket.once('connect', () => resolve('connected'))
      socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'))
    })
    expect(refused).toBe('ECONNREFUSED')
  })

  it('leaves open a connection whose next request is still arriving when the server goes quiet, and answers that request', async () => {
    app = await startApp({ timeoutMs: 5_000, idleGraceMs: 30 })
    const accepted: net.Socket[] = []
    app.server.on('connection', (socket: net.Socket) => accepted.push(socket))
    const reused = await rawConnect(app.port)
    reused.write(rawRequest('GET', '/one'))
    await reused.waitFor('ok /one')
    const idle = await rawConnect(app.port)
    idle.write(rawRequest('GET', '/idle'))
    await idle.waitFor('ok /idle')
    const silent = await rawConnect(app.port)
    const opening = await rawConnect(app.port)
    // The request line only, on a reused connection and as a new connection's first bytes: Node's
    // parser holds them, and nothing else on the server shows a request has begun.
    const two = rawRequest('GET', '/two')
    const three = rawRequest('GET', '/three')
    const cut = (head: string) => head.indexOf('\r\n') + 2
    reused.write(two.slice(0, cut(two)))
    opening.write(three.slice(0, cut(three)))
    const sent = rawRequest('GET', '/one').length + rawRequest('GET', '/idle').length + cut(two) + cut(three)
    await until(
      () => accepted.reduce((sum, socket) => sum + socket.bytesRead, 0) === sent,
      2_000,
      'the server to read the request lines',
    )
    const report = app.shutdown.close('test')
    // Closed once the server has been quiet for idleGraceMs: the idle connection, and the one that
    // never sent a byte…
    const closed = await within(2_000, Promise.all([idle.closed, silent.closed]), 'the idle sockets to close')
    expect(closed.map(({ error }) => error)).toEqual([undefined, undefined])
    // …but not the two with a request begun: the rest of each head comes later, and is answered.
    reused.write(two.slice(cut(two)))
    opening.write(three.slice(cut(three)))
    const [first, second] = await within(
      3_000,
      Promise.all([reused.closed, opening.closed]),
      'the late requests to be answered',
    )
    expect(first.error).toBeUndefined()
    expect(second.error).toBeUndefined()
    expect(parseResponses(first.data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
      [200, 'ok /one', 'keep-alive'],
      [200, 'ok /two', 'close'],
    ])
    expect(parseResponses(second.data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
      [200, 'ok /three', 'close'],
    ])
    const done = await within(2_000, report, 'the drain')
    expect(done.graceful).toBe(true)
    expect(done.connectionsDestroyed).toBe(0)
  })

  describe('an upload answered early with keep-alive, its rest still coming when stopping begins', () => {
    const chunk = Buffer.alloc(64 * 1024, 'x')
    const head = (chunks: number) =>
      `POST /upload HTTP/1.1\r\nhost: localhost\r\ncontent-length: ${chunk.length * chunks}\r\n\r\n`

    /**
     * A fake clock (nothing timed happens unless a test moves it), a server answering `/upload` with
     * `upload(req, res)` and anything else with its path, and a connection that has sent the head of
     * a `chunks`-chunk upload and its first chunk, and has the answer. `serverRead()` is how many
     * bytes the server's socket has read.
     */
    async function answeredEarly(
      chunks: number,
      upload: (req: http.IncomingMessage, res: http.ServerResponse) => void,
    ) {
      const clock = createFakeClock()
      const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 10_000, clock })
      const sockets: net.Socket[] = []
      const server = http.createServer((req, res) => {
        if (!shutdown.admit(req, res)) return writeRefusal(req, res, shutdown.refusal(req))
        if (req.url === '/upload') upload(req, res)
        else res.end(`answered ${req.url}`)
      })
      server.on('connection', (socket: net.Socket) => sockets.push(socket))
      shutdown.attach(server)
      servers.push(server)
      const raw = await rawConnect(await listen(server))
      raw.socket.on('error', () => {})
      raw.write(head(chunks))
      raw.write(chunk)
      await raw.waitFor(/^HTTP\/1\.1 20[02] [\s\S]*\r\nConnection: keep-alive\r\n[\s\S]*\r\n\r\n$/)
      const report = shutdown.close('test')
      await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
      const serverRead = () => sockets[0]?.bytesRead ?? 0
      /** Moves the clock, then lets a check it fired run (the reaper waits for the poll phase). */
      const advance = async (ms: number) => {
        await clock.advance(ms)
        await new Promise<void>((resolve) => setImmediate(resolve))
      }
      return { shutdown, raw, report, serverRead, advance, serverSocket: () => sockets[0] }
    }

    it('closes a connection whose client is still sending 2 s after stopping began, not at the deadline', async () => {
      const { raw, report, serverRead, advance } = await answeredEarly(64, (_req, res) =>
        res.writeHead(200, { 'content-length': '0' }).end(),
      )
      // Each second the reaper would see the body's bytes as a request head still coming in.
      for (let second = 0; second < 2; second++) {
        const before = serverRead()
        raw.write(chunk)
        await until(() => serverRead() > before, 2_000, 'the server to read the chunk')
        await advance(1_000)
      }
      const { data } = await within(2_000, raw.closed, 'the connection to close')
      expect(parseResponses(data).map((r) => [r.status, r.headers.connection])).toEqual([[200, 'keep-alive']])
      const done = await within(2_000, report, 'the report')
      expect(done.graceful).toBe(true)
      expect(done.connectionsDestroyed).toBe(0)
    })

    it('serves a request that follows the rest of the body as the connection’s last', async () => {
      const { raw, report, advance } = await answeredEarly(2, (_req, res) =>
        res.writeHead(200, { 'content-length': '0' }).end(),
      )
      raw.write(Buffer.concat([chunk, Buffer.from(rawRequest('GET', '/next'))]))
      const { data } = await within(2_000, raw.closed, 'the connection to close')
      expect(parseResponses(data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
        [200, '', 'keep-alive'],
        [200, 'answered /next', 'close'],
      ])
      await advance(0)
      const done = await within(2_000, report, 'the report')
      expect(done.graceful).toBe(true)
      expect(done.requests).toMatchObject({ completed: 1, refused: 0 })
    })

    it('leaves an app that reads slowly after answering every byte, however long its reads pause', async () => {
      let received = 0
      const ended = deferred()
      const go = deferred()
      const { raw, report, advance, serverSocket } = await answeredEarly(8, (req, res) => {
        res.writeHead(202, { 'content-length': '0' }).end()
        // Backpressure: the app's destination takes nothing more until the test says so.
        const slow = new Writable({
          highWaterMark: 1,
          write(data: Buffer, _encoding, callback) {
            received += data.length
            if (received >= chunk.length) void go.promise.then(() => callback())
            else callback()
          },
        })
        req.pipe(slow)
        req.on('end', () => ended.resolve())
      })
      for (let i = 1; i < 8; i++) raw.write(chunk)
      await until(() => received >= chunk.length, 2_000, 'the app to block')
      // Its bytes have stopped coming for far longer than a stalled request head may take.
      for (let step = 0; step < 6; step++) await advance(500)
      expect(serverSocket()?.destroyed).toBe(false)
      go.resolve()
      await within(2_000, ended.promise, 'the app to read the whole body')
      expect(received).toBe(chunk.length * 8)
      await advance(1_000)
      expect((await within(2_000, raw.closed, 'the connection to close')).error).toBeUndefined()
      expect((await within(2_000, report, 'the report')).graceful).toBe(true)
    })

    it('leaves no timer behind when a connection seen first at its request is reset mid-upload', async () => {
      const clock = createFakeClock()
      const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 10_000, clock })
      const answered = deferred()
      const server = http.createServer((req, res) => {
        if (!shutdown.admit(req, res)) return writeRefusal(req, res, shutdown.refusal(req))
        req.resume() // the body flows (thrown away) while the answer waits
        answered.resolve()
      })
      const sockets: net.Socket[] = []
      server.on('connection', (socket: net.Socket) => sockets.push(socket))
      servers.push(server)
      const port = await listen(server)
      // Opened before attach(): its socket is tracked at its request, after Node's own listeners.
      const raw = await rawConnect(port)
      raw.socket.on('error', () => {})
      shutdown.attach(server)
      raw.write(head(64))
      raw.write(chunk)
      await within(2_000, answered.promise, 'the request to reach the app')
      const report = shutdown.close('test')
      await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
      raw.socket.resetAndDestroy()
      await until(() => sockets[0]?.closed === true, 2_000, 'the server to see the reset')
      await clock.advance(100)
      await new Promise<void>((resolve) => setImmediate(resolve))
      await within(2_000, report, 'the report')
      expect(clock.pending).toBe(0)
    })

    it('leaves an app that goes on reading after answering (res.end(), then the body) every byte', async () => {
      let received = 0
      const ended = deferred()
      const { raw, report, advance } = await answeredEarly(8, (req, res) => {
        res.writeHead(202, { 'content-length': '0' }).end()
        req.on('data', (data: Buffer) => {
          received += data.length
        })
        req.on('end', () => ended.resolve())
      })
      // A chunk at a time, each once the app has the one before: a client still uploading.
      for (let i = 1; i < 8; i++) {
        await until(() => received === chunk.length * i, 2_000, `the app to read chunk ${i}`)
        raw.write(chunk)
      }
      await within(2_000, ended.promise, 'the app to read the whole body')
      expect(received).toBe(chunk.length * 8)
      // Idle from then on: closed once the server has been quiet for idleGraceMs.
      await advance(1_000)
      expect((await within(2_000, raw.closed, 'the connection to close')).error).toBeUndefined()
      expect((await within(2_000, report, 'the report')).graceful).toBe(true)
    })
  })

  describe('a last response that answers an upload before reading it (a 401, a 413)', () => {
    /** A real clock that counts its pending timers, so a test can tell none is left behind. */
    function countingClock() {
      const live = new Set<NodeJS.Timeout>()
      return {
        now: () => Date.now(),
        setTimeout(callback: () => void, ms: number): unknown {
          const timer = setTimeout(() => {
            live.delete(timer)
            callback()
          }, ms)
          live.add(timer)
          return timer
        },
        clearTimeout(handle: unknown): void {
          live.delete(handle as NodeJS.Timeout)
          clearTimeout(handle as NodeJS.Timeout)
        },
        get pending() {
          return live.size
        },
      }
    }

    /**
     * A server answering `/upload` with `answer` (the body unread), a kept-alive connection to it, and
     * a shutdown stopping, held open by a task until `held` is resolved.
     */
    async function stoppingWithIdleConnection(
      answer: (req: http.IncomingMessage, res: http.ServerResponse) => void,
      options: { lateRequests?: 'serve' | 'refuse' } = {},
    ) {
      const clock = countingClock()
      const shutdown = createShutdown({
        signals: false,
        logger: false,
        timeoutMs: 5_000,
        idleGraceMs: 4_000,
        clock,
        ...options,
      })
      const accepted: net.Socket[] = []
      const server = http.createServer((req, res) => {
        if (!shutdown.admit(req, res)) return writeRefusal(req, res, shutdown.refusal(req))
        if (req.url === '/first') res.end('first')
        else answer(req, res)
      })
      server.on('connection', (socket: net.Socket) => accepted.push(socket))
      shutdown.attach(server)
      servers.push(server)
      const raw = await rawConnect(await listen(server))
      raw.write(rawRequest('GET', '/first'))
      await raw.waitFor('\r\n\r\nfirst')
      const held = deferred()
      void shutdown.track('held open until the upload is over', held.promise)
      const report = shutdown.close('test')
      await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
      return { clock, server, shutdown, raw, accepted, held, report }
    }

    const chunk = Buffer.alloc(64 * 1024, 'x')
    const uploadHead = (bytes: number) =>
      `POST /upload HTTP/1.1\r\nhost: localhost\r\ncontent-length: ${bytes}\r\n\r\n`

    it.each([
      ['at once', (_req: http.IncomingMessage, res: http.ServerResponse) => res.writeHead(401).end()],
      [
        'after pausing it (a body parser over its limit)',
        (req: http.IncomingMessage, res: http.ServerResponse) => {
          req.once('data', () => {
            req.pause()
            res.writeHead(413).end()
          })
        },
      ],
    ])(
      'reads and discards the rest before closing, so the answer is not lost to a reset: answered %s',
      async (_, answer) => {
        const { raw, held, report } = await stoppingWithIdleConnection(answer)
        const chunks = 16
        raw.write(uploadHead(chunk.length * chunks))
        raw.write(chunk)
        await raw.waitFor(/HTTP\/1\.1 200[\s\S]*HTTP\/1\.1 4\d\d /)
        // The answer is in; the client goes on sending the body it announced.
        for (let i = 1; i < chunks; i++) raw.write(chunk)
        const { data, error } = await within(3_000, raw.closed, 'the connection to close')
        expect(error).toBeUndefined()
        expect(data).toMatch(/^HTTP\/1\.1 200 [\s\S]*\r\nConnection: keep-alive\r\n/)
        expect(data.slice(data.lastIndexOf('HTTP/1.1 '))).toMatch(
          /^HTTP\/1\.1 4\d\d [\s\S]*\r\nConnection: close\r\n/,
        )
        held.resolve()
        expect((await within(2_000, report, 'the report')).graceful).toBe(true)
      },
    )

    it('also after a 100 Continue sent before stopping began', async () => {
      const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000, idleGraceMs: 4_000 })
      const answer = deferred()
      const { port } = await startServer(shutdown, async (res) => {
        await answer.promise
        res.writeHead(401).end()
      })
      const raw = await rawConnect(port)
      const chunks = 16
      raw.write(`${uploadHead(chunk.length * chunks).slice(0, -2)}expect: 100-continue\r\n\r\n`)
      await raw.waitFor('HTTP/1.1 100 Continue')
      raw.write(chunk)
      const report = shutdown.close('test')
      await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
      answer.resolve()
      await raw.waitFor(/HTTP\/1\.1 401 /)
      for (let i = 1; i < chunks; i++) raw.write(chunk)
      const { error } = await within(3_000, raw.closed, 'the connection to close')
      expect(error).toBeUndefined()
      expect((await within(2_000, report, 'the report')).graceful).toBe(true)
    })

    it('refuses an upgrade sent right after the upload without writing to the ended socket', async () => {
      const { server, raw, held, report } = await stoppingWithIdleConnection((_req, res) =>
        res.writeHead(401).end(),
      )
      const upgrades: string[] = []
      server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
        upgrades.push(req.url ?? '')
        socket.destroy()
      })
      raw.write(
        `${uploadHead(5)}hello${rawRequest('GET', '/ws', { connection: 'upgrade', upgrade: 'websocket' })}`,
      )
      const { data } = await within(3_000, raw.closed, 'the connection to close')
      expect(data.slice(data.lastIndexOf('HTTP/1.1 '))).toMatch(/^HTTP\/1\.1 401 /)
      expect(upgrades).toEqual([])
      held.resolve()
      expect((await within(2_000, report, 'the report')).graceful).toBe(true)
    })

    it('leaves no timer behind when the client resets instead of finishing the upload', async () => {
      const { clock, raw, held, report } = await stoppingWithIdleConnection((_req, res) =>
        res.writeHead(401).end(),
      )
      raw.write(uploadHead(chunk.length * 16))
      raw.write(chunk)
      await raw.waitFor(/HTTP\/1\.1 401 /)
      raw.socket.resetAndDestroy()
      await within(2_000, raw.closed, 'the reset')
      held.resolve()
      await within(2_000, report, 'the report')
      expect(clock.pending).toBe(0)
    })

    it("keeps the refusal's own limit on what it reads of an upload (lateRequests: refuse)", async () => {
      const { raw, accepted, held, report } = await stoppingWithIdleConnection(() => {}, {
        lateRequests: 'refuse',
      })
      const total = 32 * 1024 * 1024
      raw.write(uploadHead(total))
      raw.socket.on('error', () => {})
      raw.write(Buffer.alloc(total, 'x'))
      await within(3_000, raw.closed, 'the refused connection to close')
      // The refusal reads up to 1 MiB, then closes: far from all 32 MiB, whatever the kernel held.
      expect(accepted[0]?.bytesRead).toBeLessThan(total / 4)
      held.resolve()
      await within(2_000, report, 'the report')
    })

    it("closes a refused upload at once when the app's own checkContinue listener sent no 100 Continue", async () => {
      const shutdown = createShutdown({
        signals: false,
        logger: false,
        timeoutMs: 5_000,
        lateRequests: 'refuse',
      })
      const handle = (req: http.IncomingMessage, res: http.ServerResponse) => {
        if (!shutdown.admit(req, res)) return writeRefusal(req, res, shutdown.refusal(req))
        res.end('served')
      }
      // Never attached; the app answers `Expect: 100-continue` itself, and decides before any 100.
      const server = http.createServer(handle)
      server.on('checkContinue', handle)
      servers.push(server)
      const port = await listen(server)
      const held = deferred()
      void shutdown.track('held open for the test', held.promise)
      const report = shutdown.close('test')
      await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
      const raw = await rawConnect(port)
      const sentAt = Date.now()
      raw.write(`${uploadHead(chunk.length).slice(0, -2)}expect: 100-continue\r\n\r\n`)
      const { data } = await within(3_000, raw.closed, 'the refused connection to close')
      expect(data).not.toContain('100 Continue')
      expect(data).toMatch(/^HTTP\/1\.1 503 /)
      // Not after the refusal's 2 s wait for a body: the client was never told to send one.
      expect(Date.now() - sentAt).toBeLessThan(1_500)
      held.resolve()
      expect((await within(2_000, report, 'the report')).requests.refused).toBe(1)
    })

    it('reads the upload a refused request sends after the 100 Continue Node sent for it (server not attached)', async () => {
      const shutdown = createShutdown({
        signals: false,
        logger: false,
        timeoutMs: 5_000,
        idleGraceMs: 4_000,
        lateRequests: 'refuse',
      })
      // Never attached: Node answers `Expect: 100-continue` itself before the gate sees the request.
      const server = http.createServer((req, res) => {
        if (!shutdown.admit(req, res)) return writeRefusal(req, res, shutdown.refusal(req))
        res.end('served')
      })
      servers.push(server)
      const port = await listen(server)
      const held = deferred()
      void shutdown.track('held open until the upload is over', held.promise)
      const report = shutdown.close('test')
      await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
      const raw = await rawConnect(port)
      const chunks = 16
      raw.write(`${uploadHead(chunk.length * chunks).slice(0, -2)}expect: 100-continue\r\n\r\n`)
      await raw.waitFor('HTTP/1.1 100 Continue')
      raw.write(chunk)
      await raw.waitFor(/HTTP\/1\.1 503 /)
      // The refusal is in; the client goes on sending the body Node asked for.
      for (let i = 1; i < chunks; i++) raw.write(chunk)
      const { data, error } = await within(3_000, raw.closed, 'the refused connection to close')
      expect(error).toBeUndefined()
      expect(data.slice(data.lastIndexOf('HTTP/1.1 '))).toMatch(
        /^HTTP\/1\.1 503 [\s\S]*\r\nconnection: close\r\n/,
      )
      held.resolve()
      expect((await within(2_000, report, 'the report')).requests.refused).toBe(1)
    })
  })

  it('serves the last request on an open connection with Connection: close (lateRequests: serve)', async () => {
    app = await startApp({ timeoutMs: 5_000, idleGraceMs: 1_000 })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/first'))
    await raw.waitFor('ok /first')
    // Keep the server busy so the idle socket is not reaped before its last request arrives.
    const busy = request(app.port, { path: '/slow' })
    const gate = await within(2_000, app.nextParked(), 'the slow request')
    const report = app.shutdown.close('test')
    await until(() => app?.shutdown.state === 'stopping', 2_000, 'stopping')
    raw.write(rawRequest('GET', '/last'))
    const { data } = await within(3_000, raw.closed, 'the connection to close after its last request')
    const responses = parseResponses(data)
    expect(responses.map((r) => [r.status, r.body, r.headers.connection])).toEqual([
      [200, 'ok /first', 'keep-alive'],
      [200, 'ok /last', 'close'],
    ])
    gate.resolve()
    await busy
    expect((await report).graceful).toBe(true)
  })

  it('refuses the last request raw under lateRequests: refuse, on the same socket, without running the handler', async () => {
    app = await startApp({
      timeoutMs: 5_000,
      idleGraceMs: 1_000,
      lateRequests: 'refuse',
      retryAfterSeconds: 7,
    })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/first'))
    await raw.waitFor('ok /first')
    const busy = request(app.port, { path: '/slow' })
    const gate = await within(2_000, app.nextParked(), 'the slow request')
    const report = app.shutdown.close('test')
    await until(() => app?.shutdown.state === 'stopping', 2_000, 'stopping')
    raw.write(rawRequest('GET', '/late'))
    const { data } = await within(3_000, raw.closed, 'the refused connection to close')
    const [, refusal] = parseResponses(data)
    expect(data.slice(data.indexOf('HTTP/1.1 503'))).toMatch(
      /^HTTP\/1\.1 503 Service Unavailable\r\ncontent-type: application\/json\r\ncontent-length: 80\r\nretry-after: 7\r\nconnection: close\r\nDate: [^\r]+\r\n\r\n\{"error":"Service Unavailable","message":"Service Unavailable","statusCode":503\}$/,
    )
    expect(refusal?.status).toBe(503)
    expect(app.hits).not.toContain('/late')
    gate.resolve()
    await busy
    expect((await report).requests.refused).toBe(1)
  })

  it('answers a long-poll that ends on shutdown.signal with Connection: close', async () => {
    app = await startApp({ timeoutMs: 5_000 })
    const agent = keepAliveAgent()
    await request(app.port, { agent, path: '/warm' })
    const poll = request(app.port, { agent, path: '/poll' })
    await until(() => app?.hits.includes('/poll') === true, 2_000, 'the long-poll to arrive')
    const report = app.shutdown.close('test')
    const response = await within(2_000, poll, 'the long-poll answer')
    expect(response.body).toBe('ok /poll')
    expect(response.headers.connection).toBe('close')
    expect((await report).graceful).toBe(true)
  })

  it('keeps count of connections that close in any order, then closes each one left with a FIN', async () => {
    const stopping: Record<string, unknown>[] = []
    const logger = {
      info(fields: Record<string, unknown>, message: string) {
        if (message.startsWith('stopping')) stopping.push(fields)
      },
      warn() {},
      error() {},
    }
    app = await startApp({ timeoutMs: 5_000, idleGraceMs: 30, logger })
    const { port, server } = app
    // Added after the tracker's own listeners: a close counted here has been seen by the tracker.
    let closedOnServer = 0
    server.on('connection', (socket: net.Socket) => socket.on('close', () => closedOnServer++))
    const raws = []
    for (let i = 0; i < 12; i++) {
      const raw = await rawConnect(port)
      raw.write(rawRequest('GET', `/c${i}`))
      await raw.waitFor(`ok /c${i}`)
      raws.push(raw)
    }
    // Closed by the client out of opening order: first, last and middle entries leave the server's list.
    const gone = [3, 0, 11, 7, 5]
    for (const i of gone) raws[i]?.socket.end()
    await until(() => closedOnServer === gone.length, 2_000, 'the server to see 5 closes')
    const left = raws.filter((_, i) => !gone.includes(i))
    const busy = left[2] as (typeof left)[number]
    busy.write(rawRequest('GET', '/slow'))
    const gate = await within(2_000, app.nextParked(), 'the slow request')
    const report = app.shutdown.close('test')
    await until(() => stopping.length > 0, 2_000, 'the stopping line')
    expect(stopping[0]).toMatchObject({ connections: 7, idle: 6, inFlight: 1 })
    gate.resolve()
    const closes = await within(
      3_000,
      Promise.all(left.map((raw) => raw.closed)),
      'every connection left to be closed by the server',
    )
    for (const closed of closes) expect(closed.error).toBeUndefined()
    expect(parseResponses(closes[2]?.data ?? '').at(-1)?.headers.connection).toBe('close')
    const done = await within(2_000, report, 'the report')
    expect(done.graceful).toBe(true)
    expect(done.connectionsDestroyed).toBe(0)
  })

  it.each(explicitKeepAlive)(
    'serves a last response that sets Connection: keep-alive itself with Connection: close, then closes its socket (%s)',
    async (_, write) => {
      const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000 })
      const gate = deferred()
      const arrived = deferred()
      const { port } = await startServer(shutdown, async (res) => {
        arrived.resolve()
        await gate.promise
        write(res)
      })
      const raw = await rawConnect(port)
      raw.write(rawRequest('GET', '/last'))
      await within(2_000, arrived.promise, 'the request to reach the handler')
      const report = shutdown.close('test')
      await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
      gate.resolve()
      const { data, error } = await within(2_000, raw.closed, 'the server to close the connection')
      expect(error).toBeUndefined()
      const responses = parseResponses(data)
      expect(responses.map((r) => [r.status, r.body, r.headers.connection])).toEqual([[200, 'ok', 'close']])
      const done = await within(2_000, report, 'the report, well before timeoutMs')
      expect(done.graceful).toBe(true)
      expect(done.connectionsDestroyed).toBe(0)
    },
  )

  it('closes the socket after a last response whose headers went out with keep-alive before it was seen', async () => {
    const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000, idleGraceMs: 30 })
    // Not attached: the server is discovered on this request, after the app has written its head.
    const server = http.createServer((req, res) => {
      res.writeHead(200, { 'content-length': '2', connection: 'keep-alive' })
      if (!shutdown.admit(req, res)) return
      res.end('ok')
    })
    servers.push(server)
    const port = await listen(server)
    const raw = await rawConnect(port)
    const held = deferred()
    void shutdown.track('held open until the test ends', held.promise)
    const report = shutdown.close('test')
    await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
    raw.write(rawRequest('GET', '/late'))
    const { data, error } = await within(2_000, raw.closed, 'the server to close the connection')
    expect(error).toBeUndefined()
    expect(parseResponses(data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
      [200, 'ok', 'keep-alive'],
    ])
    held.resolve()
    const done = await within(2_000, report, 'the report')
    expect(done.graceful).toBe(true)
    expect(done.connectionsDestroyed).toBe(0)
  })
})
