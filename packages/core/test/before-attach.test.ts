import http from 'node:http'
import net from 'node:net'
import {
  closeServer,
  createFakeClock,
  deferred,
  type FakeClock,
  listen,
  nextEvent,
  parseResponses,
  type RawConnection,
  rawConnect,
  rawRequest,
  until,
  within,
} from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createShutdown, type Logger } from '../src/index.js'

// Connections a server accepted before shutdown.attach(server) are never seen open: only Node's
// closeIdleConnections() reaches them, and it takes every idle socket of its server at once. The
// clock is fake (time moves when a test says so), the sockets are real.

const servers: http.Server[] = []
afterEach(async () => {
  for (const server of servers.splice(0)) await closeServer(server)
})

/** A plain node:http server with no gate (a gate would attach it on its first request). */
async function start(onRequest?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean) {
  const server = http.createServer((req, res) => {
    if (onRequest?.(req, res)) return
    const body = `ok ${req.url}`
    res.writeHead(200, { 'content-length': Buffer.byteLength(body) }).end(body)
  })
  servers.push(server)
  return { server, port: await listen(server) }
}

/** A keep-alive connection that has carried one request and is idle now. */
async function idleConnection(port: number, path = '/first'): Promise<RawConnection> {
  const raw = await rawConnect(port)
  raw.write(rawRequest('GET', path))
  await raw.waitFor(`ok ${path}`)
  return raw
}

/** Moves the fake clock, then lets the idle check it fired run (it waits for the poll phase). */
async function advance(clock: FakeClock, ms: number): Promise<void> {
  await clock.advance(ms)
  await new Promise<void>((resolve) => setImmediate(resolve))
}

function capture() {
  const lines: Array<{ fields: Record<string, unknown>; message: string }> = []
  const logger: Logger = {
    info: (fields, message) => lines.push({ fields, message }),
    warn() {},
    error() {},
  }
  const counted = () => lines.filter((line) => line.message.includes('opened before attach()'))
  return { logger, counted }
}

function shutdownWith(clock: FakeClock, logger: Logger | false = false) {
  return createShutdown({
    signals: false,
    logger,
    clock,
    idleGraceMs: 100,
    timeoutMs: 10_000,
    progressIntervalMs: 0,
  })
}

const summary = (data: string) => parseResponses(data).map((r) => [r.status, r.body, r.headers.connection])

describe('connections opened before attach()', () => {
  it("counts each server's own, and closes them once the server is quiet, before the drain ends", async () => {
    const clock = createFakeClock()
    const { logger, counted } = capture()
    const shutdown = shutdownWith(clock, logger)
    const a = await start()
    shutdown.attach(a.server)
    // Seen open: tracked. They made the count of the other server's early connections come out short.
    const tracked = [await idleConnection(a.port), await idleConnection(a.port), await idleConnection(a.port)]
    const b = await start()
    const onB: net.Socket[] = []
    b.server.on('connection', (socket: net.Socket) => onB.push(socket))
    const early = [await idleConnection(b.port), await idleConnection(b.port)]
    shutdown.attach(b.server)
    await until(() => counted().length > 0, 2_000, "the count of B's early connections")
    expect(counted().map((line) => line.fields)).toEqual([{ connections: 2, server: `127.0.0.1:${b.port}` }])
    let openOnBAtClosing = -1
    shutdown.on('statechange', (state) => {
      if (state === 'closing') openOnBAtClosing = onB.filter((socket) => !socket.destroyed).length
    })
    const report = shutdown.close('test')
    await advance(clock, 0)
    await advance(clock, 100)
    const done = await within(2_000, report, 'the drain')
    expect(openOnBAtClosing).toBe(0)
    for (const raw of [...early, ...tracked]) {
      expect((await within(2_000, raw.closed, 'each connection to be closed')).error).toBeUndefined()
    }
    expect(done.graceful).toBe(true)
    expect(done.connectionsDestroyed).toBe(0)
  })

  it('names the server by its address when attached after stopping began (closed before its count comes back)', async () => {
    const clock = createFakeClock()
    const { logger, counted } = capture()
    const shutdown = shutdownWith(clock, logger)
    const held = deferred<void>()
    void shutdown.track('held', held.promise)
    const b = await start()
    const early = await idleConnection(b.port)
    const report = shutdown.close('test')
    await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
    shutdown.attach(b.server)
    await until(() => counted().length > 0, 2_000, "the count of B's early connection")
    expect(b.server.listening).toBe(false)
    expect(counted().map((line) => line.fields)).toEqual([{ connections: 1, server: `127.0.0.1:${b.port}` }])
    expect(counted()[0]?.message).toContain(`opened before attach() on 127.0.0.1:${b.port};`)
    held.resolve()
    await advance(clock, 0)
    await advance(clock, 100)
    expect((await within(2_000, report, 'the drain')).graceful).toBe(true)
    expect((await within(2_000, early.closed, 'the early connection to be closed')).error).toBeUndefined()
  })

  it.each(['the same server', 'another attached server'])(
    'leaves a tracked socket idle for less than idleGraceMs open when one opened before attach() is on %s',
    async (where) => {
      const clock = createFakeClock()
      const shutdown = shutdownWith(clock)
      const streamed = deferred<http.ServerResponse>()
      const a = await start((req, res) => {
        if (req.url !== '/stream') return false
        res.writeHead(200, { 'content-length': '2' }).write('o')
        streamed.resolve(res)
        return true
      })
      const b = await start()
      const early = await idleConnection(where === 'the same server' ? a.port : b.port)
      shutdown.attach(a.server)
      shutdown.attach(b.server)
      const raw = await idleConnection(a.port)
      raw.write(rawRequest('GET', '/stream'))
      const res = await within(2_000, streamed.promise, 'the stream to start')
      // Its head went out with keep-alive while serving: the socket is reaped once idle, not ended.
      const report = shutdown.close('test')
      await advance(clock, 0)
      await advance(clock, 50)
      const responseClosed = nextEvent(res, 'close')
      res.end('k')
      await within(2_000, responseClosed, 'the streamed response to close')
      // The server has been quiet for idleGraceMs, this socket idle for only half of it.
      await advance(clock, 50)
      raw.write(rawRequest('GET', '/again'))
      const { data, error } = await within(
        2_000,
        raw.closed,
        'the connection to close after its last request',
      )
      expect(error).toBeUndefined()
      expect(summary(data)).toEqual([
        [200, 'ok /first', 'keep-alive'],
        [200, 'ok', 'keep-alive'],
        [200, 'ok /again', 'close'],
      ])
      await advance(clock, 100)
      expect((await within(2_000, early.closed, 'the early connection to close')).error).toBeUndefined()
      expect((await within(2_000, report, 'the drain')).graceful).toBe(true)
    },
  )

  it('lets a response that has ended but is still being written to a slow client finish first', async () => {
    const clock = createFakeClock()
    const shutdown = shutdownWith(clock)
    const size = 16 * 1024 * 1024
    const big = deferred<http.ServerResponse>()
    const { server, port } = await start((req, res) => {
      if (req.url !== '/big') return false
      res.writeHead(200, { 'content-length': size }).end(Buffer.alloc(size, 'x'))
      big.resolve(res)
      return true
    })
    const early = await idleConnection(port)
    shutdown.attach(server)
    // No 'data' listener yet: the client reads nothing, and the response sits in the server's buffers.
    const slow = net.connect(port, '127.0.0.1')
    await within(2_000, nextEvent(slow, 'connect'), 'the slow client to connect')
    slow.write(rawRequest('GET', '/big'))
    const res = await within(2_000, big.promise, 'the big response to be ended')
    const responseClosed = nextEvent(res, 'close')
    const report = shutdown.close('test')
    await advance(clock, 0)
    await advance(clock, 100)
    const chunks: Buffer[] = []
    slow.on('data', (chunk: Buffer) => chunks.push(chunk))
    const slowClosed = nextEvent(slow, 'close')
    await within(3_000, responseClosed, 'the big response to be written out')
    await advance(clock, 100)
    await within(2_000, slowClosed, 'the slow connection to be closed, idle')
    const data = Buffer.concat(chunks)
    expect(data.length - (data.indexOf('\r\n\r\n') + 4)).toBe(size)
    expect((await within(2_000, early.closed, 'the early connection to close')).error).toBeUndefined()
    expect((await within(2_000, report, 'the drain')).graceful).toBe(true)
  })

  it('does not end the drain before the quiet check: a request on one right at stopping is served', async () => {
    const clock = createFakeClock()
    const shutdown = shutdownWith(clock)
    const { server, port } = await start()
    const early = await idleConnection(port)
    // close() in the same turn as attach(): before the server's count has come back, too.
    shutdown.attach(server)
    const report = shutdown.close('test')
    await advance(clock, 0)
    expect(shutdown.state).toBe('stopping')
    early.write(rawRequest('GET', '/late'))
    const { data, error } = await within(
      2_000,
      early.closed,
      'the connection to close after its last request',
    )
    expect(error).toBeUndefined()
    expect(summary(data)).toEqual([
      [200, 'ok /first', 'keep-alive'],
      [200, 'ok /late', 'close'],
    ])
    expect(shutdown.state).toBe('stopping')
    await advance(clock, 100)
    const done = await within(2_000, report, 'the drain')
    expect(done.graceful).toBe(true)
    expect(done.connectionsDestroyed).toBe(0)
  })

  it('closes a tracked socket idleGraceMs after it goes idle, not at the next, slower recheck of one never used', async () => {
    const clock = createFakeClock()
    const shutdown = shutdownWith(clock)
    const streamed = deferred<http.ServerResponse>()
    const { server, port } = await start((req, res) => {
      if (req.url !== '/stream') return false
      res.writeHead(200, { 'content-length': '2' }).write('o')
      streamed.resolve(res)
      return true
    })
    // Never sends a request: Node's closeIdleConnections() does not reach it, so it is checked for
    // again, less and less often, until the close hooks have run.
    const neverUsed = await rawConnect(port)
    shutdown.attach(server)
    const raw = await idleConnection(port)
    raw.write(rawRequest('GET', '/stream'))
    const res = await within(2_000, streamed.promise, 'the stream to start')
    const report = shutdown.close('test')
    await advance(clock, 0)
    // Quiet at 100 ms: closeIdleConnections(), then rechecks 100, 200 and 400 ms apart.
    for (const ms of [100, 100, 200]) await advance(clock, ms)
    const responseClosed = nextEvent(res, 'close')
    res.end('k')
    await within(2_000, responseClosed, 'the streamed response to close')
    await advance(clock, 100)
    const { data, error } = await within(2_000, raw.closed, 'the connection to close, idle for idleGraceMs')
    expect(error).toBeUndefined()
    expect(summary(data)).toEqual([
      [200, 'ok /first', 'keep-alive'],
      [200, 'ok', 'keep-alive'],
    ])
    expect((await within(2_000, report, 'the drain')).graceful).toBe(true)
    await within(2_000, neverUsed.closed, 'the unused connection to be ended after the close hooks')
  })

  it('closes one that was busy at the quiet check once it goes idle, while the close hooks run', async () => {
    const clock = createFakeClock()
    const shutdown = shutdownWith(clock)
    const arrived = deferred()
    const gate = deferred()
    const { server, port } = await start((req, res) => {
      if (req.url !== '/slow') return false
      arrived.resolve()
      void gate.promise.then(() => res.writeHead(200, { 'content-length': '8' }).end('ok /slow'))
      return true
    })
    const accepted = nextEvent<[net.Socket]>(server, 'connection')
    const early = await rawConnect(port)
    early.write(rawRequest('GET', '/slow'))
    await within(2_000, arrived.promise, 'the slow request to arrive')
    const [onServer] = await accepted
    shutdown.attach(server)
    let closedIn = ''
    const closedOnServer = new Promise<void>((resolve) =>
      onServer.once('close', () => {
        closedIn = shutdown.state
        resolve()
      }),
    )
    const hookStarted = deferred()
    shutdown.onClose('waits for the early connection', () => {
      hookStarted.resolve()
      return closedOnServer
    })
    const report = shutdown.close('test')
    await advance(clock, 0)
    await advance(clock, 100)
    // Busy: Node's closeIdleConnections() left it, and nothing else holds the drain.
    await within(2_000, hookStarted.promise, 'the close hook to start')
    gate.resolve()
    await early.waitFor('ok /slow')
    await advance(clock, 100)
    await within(2_000, closedOnServer, 'the early connection to be closed, now idle')
    expect(closedIn).toBe('closing')
    expect((await within(2_000, early.closed, 'the client to see it closed')).error).toBeUndefined()
    const done = await within(2_000, report, 'the report')
    expect(done.hooks.map((hook) => hook.ok)).toEqual([true])
  })
})
