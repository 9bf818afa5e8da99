import http from 'node:http'
import http2 from 'node:http2'
import type { AddressInfo } from 'node:net'
import {
  closeServer,
  type Deferred,
  deferred,
  listen,
  nextEvent,
  rawConnect,
  rawRequest,
  until,
  within,
} from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createShutdown, type Release, type Shutdown, whenSettled, writeRefusal } from '../src/index.js'

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

interface Admitted {
  req: http.IncomingMessage
  res: http.ServerResponse
}

/** A server whose handler admits every request and hands it to the test instead of answering. */
async function start(options: Parameters<typeof createShutdown>[0] = {}) {
  const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000, ...options })
  const arrivals: Deferred<Admitted>[] = [deferred()]
  let refused = 0
  const server = http.createServer((req, res) => {
    if (req.url === '/probe') {
      shutdown.observe(req, res)
      arrivals.at(-1)?.resolve({ req, res })
      arrivals.push(deferred())
      return
    }
    if (!shutdown.admit(req, res)) {
      refused++
      writeRefusal(req, res, shutdown.refusal(req))
      return
    }
    arrivals.at(-1)?.resolve({ req, res })
    arrivals.push(deferred())
  })
  shutdown.attach(server)
  const port = await listen(server)
  cleanups.push(() => closeServer(server))
  let taken = 0
  return {
    shutdown,
    port,
    refused: () => refused,
    /** The next request to reach the handler, in arrival order. */
    next: () => within(2_000, (arrivals[taken++] as Deferred<Admitted>).promise, 'a request to arrive'),
  }
}

const answer = (res: http.ServerResponse, body = 'ok') =>
  res.writeHead(200, { 'content-length': String(body.length) }).end(body)

describe('admit(): the adapters’ gate', () => {
  it('counts a request until its response has closed, with nothing for the caller to release', async () => {
    const { shutdown, port, next } = await start()
    const raw = await rawConnect(port)
    cleanups.push(() => void raw.socket.destroy())
    raw.write(rawRequest('GET', '/a'))
    const { res } = await next()
    expect(shutdown.inFlight).toBe(1)
    const closed = nextEvent(res, 'close')
    answer(res)
    await within(2_000, closed, 'the response to close')
    expect(shutdown.inFlight).toBe(0)
    // The same keep-alive connection serves the next one, counted again.
    raw.write(rawRequest('GET', '/b'))
    const second = await next()
    expect(shutdown.inFlight).toBe(1)
    answer(second.res)
    await until(() => shutdown.inFlight === 0, 2_000, 'the second request to be released')
    expect((await raw.waitFor(/ok[\s\S]*ok$/)).match(/HTTP\/1\.1 200/g)).toHaveLength(2)
  })

  it('counts a request admitted twice (two adapters on one Shutdown) once, and releases it', async () => {
    const { shutdown, port, next } = await start({ drainDelayMs: 0 })
    const raw = await rawConnect(port)
    cleanups.push(() => void raw.socket.destroy())
    raw.write(rawRequest('GET', '/mounted'))
    const { req, res } = await next()
    // A second graceful() on the way, e.g. an app mounted inside another that has its own.
    expect(shutdown.admit(req, res)).toBe(true)
    expect(shutdown.inFlight).toBe(1)
    const closed = nextEvent(res, 'close')
    answer(res)
    await within(2_000, closed, 'the response to close')
    expect(shutdown.inFlight).toBe(0)
    const report = await within(2_000, shutdown.close('test'), 'the drain')
    expect(report.graceful).toBe(true)
    expect(report.requests.forced).toBe(0)
  })

  it('releases a request whose client aborted, and the drain then completes gracefully', async () => {
    const { shutdown, port, next } = await start()
    const raw = await rawConnect(port)
    raw.write(rawRequest('GET', '/abandoned'))
    const { res } = await next()
    expect(shutdown.inFlight).toBe(1)
    const closed = nextEvent(res, 'close')
    raw.socket.destroy()
    await within(2_000, closed, 'the aborted response to close')
    expect(shutdown.inFlight).toBe(0)
    const report = await within(2_000, shutdown.close('test'), 'the drain')
    expect(report.graceful).toBe(true)
  })

  it('counts a request cut at the deadline as forced only, not also as completed', async () => {
    const { shutdown, port, next } = await start({ timeoutMs: 200, drainDelayMs: 0 })
    const raw = await rawConnect(port)
    raw.write(rawRequest('GET', '/stuck'))
    const { res } = await next()
    // Its response closes once the deadline destroyed the socket; the report waits for that here.
    const cut = nextEvent(res, 'close')
    shutdown.onClose('after the cut', () => cut)
    const report = await within(2_000, shutdown.close('test'), 'the forced drain')
    expect(report.graceful).toBe(false)
    expect(report.requests).toEqual({ completed: 0, refused: 0, forced: 1 })
    expect(shutdown.inFlight).toBe(0)
  })

  it.each([
    ['attached from the start', true],
    ['first seen through that request', false],
  ])(
    'admits a request entered only after its connection closed without keeping the drain open (server %s)',
    async (_, attached) => {
      const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000 })
      const arrived = deferred<void>()
      const entered = deferred<boolean>()
      const server = http.createServer((req, res) => {
        arrived.resolve()
        // Entered late, as an adapter behind asynchronous work would: once the connection is gone.
        req.socket.once('close', () => entered.resolve(shutdown.admit(req, res)))
      })
      if (attached) shutdown.attach(server)
      const port = await listen(server)
      cleanups.push(() => closeServer(server))
      const raw = await rawConnect(port)
      raw.write(rawRequest('GET', '/late'))
      await within(2_000, arrived.promise, 'the request to arrive')
      raw.socket.destroy()
      expect(await within(2_000, entered.promise, 'the late admit')).toBe(true)
      expect(shutdown.inFlight).toBe(0)
      // Well before the 5 s deadline: the closed connection is not waited for.
      const report = await within(1_000, shutdown.close('test'), 'the drain, before its deadline')
      expect(report.graceful).toBe(true)
      expect(report.connectionsDestroyed).toBe(0)
    },
  )

  it('refuses what enter() refuses: a late request under lateRequests refuse, counted as refused', async () => {
    const { shutdown, port, next, refused } = await start({ lateRequests: 'refuse' })
    const raw = await rawConnect(port)
    raw.write(rawRequest('GET', '/held'))
    const held = await next()
    const report = shutdown.close('test')
    await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
    const late = await rawConnect(port).catch((error: NodeJS.ErrnoException) => error)
    // The listener is closed: a new connection is refused by the kernel, not by the gate.
    expect((late as NodeJS.ErrnoException).code).toBe('ECONNREFUSED')
    answer(held.res)
    const done = await within(2_000, report, 'the drain')
    expect(done.requests).toEqual({ completed: 1, refused: 0, forced: 0 })
    expect(refused()).toBe(0)
    void raw.socket.destroy()
  })

  it('drops and releases requests pipelined behind the last response, each counted once', async () => {
    const { shutdown, port, next, refused } = await start()
    const raw = await rawConnect(port)
    raw.write(rawRequest('GET', '/first'))
    const first = await next()
    const report = shutdown.close('test')
    await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
    // Arrives behind a response already marked as this connection's last: refused, never admitted.
    raw.write(rawRequest('GET', '/behind'))
    await until(() => refused() === 1, 2_000, 'the pipelined request to be refused')
    expect(shutdown.inFlight).toBe(1)
    answer(first.res)
    const { data } = await within(2_000, raw.closed, 'the connection to close after its last response')
    expect(data).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
    expect(data).toMatch(/connection: close/i)
    const done = await within(2_000, report, 'the drain')
    expect(done.graceful).toBe(true)
    expect(done.requests.completed).toBe(1)
  })
})

describe('hold(): counted past the response', () => {
  it('keeps an admitted request counted until both its response closed and the hold was released', async () => {
    const { shutdown, port, next } = await start()
    const raw = await rawConnect(port)
    cleanups.push(() => void raw.socket.destroy())
    raw.write(rawRequest('GET', '/work'))
    const { req, res } = await next()
    const release = shutdown.hold(req, res)
    const report = shutdown.close('test')
    answer(res)
    await within(2_000, nextEvent(res, 'close'), 'the response to close')
    // The handler's work outlives its response: the drain waits for it.
    expect(shutdown.inFlight).toBe(1)
    expect(shutdown.state).toBe('stopping')
    release()
    release() // idempotent
    expect(shutdown.inFlight).toBe(0)
    const done = await within(2_000, report, 'the drain')
    expect(done.requests).toEqual({ completed: 1, refused: 0, forced: 0 })
  })

  it('holds across a client abort until released (a handler still running)', async () => {
    const { shutdown, port, next } = await start()
    const raw = await rawConnect(port)
    raw.write(rawRequest('GET', '/abort-me'))
    const { req, res } = await next()
    const holds: Release[] = [shutdown.hold(req, res), shutdown.hold(req, res)]
    const closed = nextEvent(res, 'close')
    raw.socket.destroy()
    await within(2_000, closed, 'the aborted response to close')
    expect(shutdown.inFlight).toBe(1)
    holds[0]?.()
    expect(shutdown.inFlight).toBe(1)
    holds[1]?.()
    expect(shutdown.inFlight).toBe(0)
  })

  it('holds again a request still held after its response closed (a nested adapter), and is a no-op once released', async () => {
    const { shutdown, port, next } = await start()
    const raw = await rawConnect(port)
    cleanups.push(() => void raw.socket.destroy())
    raw.write(rawRequest('GET', '/nested'))
    const { req, res } = await next()
    const outer = shutdown.hold(req, res)
    answer(res)
    await within(2_000, nextEvent(res, 'close'), 'the response to close')
    expect(shutdown.inFlight).toBe(1)
    // Still counted: a second holder keeps it counted past the first one's release.
    const inner = shutdown.hold(req, res)
    outer()
    expect(shutdown.inFlight).toBe(1)
    inner()
    expect(shutdown.inFlight).toBe(0)
    // Released: nothing is counted again, and a second admit() does not count it either.
    shutdown.hold(req, res)
    expect(shutdown.admit(req, res)).toBe(true)
    expect(shutdown.inFlight).toBe(0)
  })

  it('tells whenResponseCloses once the response has closed, while still held, before the count can drop', async () => {
    const { shutdown, port, next } = await start()
    const raw = await rawConnect(port)
    raw.write(rawRequest('GET', '/told'))
    const { req, res } = await next()
    const told: number[] = []
    const release = shutdown.hold(req, res, () => told.push(shutdown.inFlight))
    const second = shutdown.hold(req, res, () => told.push(-1))
    second()
    expect(told).toEqual([])
    const closed = nextEvent(res, 'close')
    raw.socket.destroy()
    await within(2_000, closed, 'the aborted response to close')
    // Both callbacks once, in the order given (the released hold's too: the request is still counted).
    expect(told).toEqual([1, -1])
    expect(shutdown.inFlight).toBe(1)
    release()
    expect(shutdown.inFlight).toBe(0)
  })

  it.each([
    ['as the response closes', false],
    ['given after the response closed', true],
  ])(
    'logs a whenResponseCloses callback that throws (%s), never throwing into Node, and still releases',
    async (_, late) => {
      const errors: string[] = []
      const logger = {
        info() {},
        warn() {},
        error: (_fields: object, message: string) => errors.push(message),
      }
      const { shutdown, port, next } = await start({ logger })
      const raw = await rawConnect(port)
      raw.write(rawRequest('GET', '/told'))
      const { req, res } = await next()
      const fail = () => {
        throw new Error('callback failed')
      }
      // Held either way, so the request is still counted when the late callback is given.
      const release = late ? shutdown.hold(req, res) : shutdown.hold(req, res, fail)
      const closed = nextEvent(res, 'close')
      raw.socket.destroy()
      await within(2_000, closed, 'the aborted response to close')
      const lateRelease = late ? shutdown.hold(req, res, fail) : undefined
      await until(() => errors.length > 0, 2_000, 'the error to be logged')
      expect(errors).toEqual(['a hold() whenResponseCloses callback threw'])
      expect(shutdown.inFlight).toBe(1)
      release()
      lateRelease?.()
      expect(shutdown.inFlight).toBe(0)
    },
  )

  it('is a no-op for a request that was never admitted or is already released', async () => {
    const { shutdown, port, next } = await start()
    const raw = await rawConnect(port)
    cleanups.push(() => void raw.socket.destroy())
    raw.write(rawRequest('GET', '/probe'))
    const probe = await next()
    shutdown.hold(probe.req, probe.res)()
    expect(shutdown.inFlight).toBe(0)
    answer(probe.res)
    raw.write(rawRequest('GET', '/done'))
    const done = await next()
    answer(done.res)
    await within(2_000, nextEvent(done.res, 'close'), 'the response to close')
    expect(shutdown.inFlight).toBe(0)
    const late = shutdown.hold(done.req, done.res)
    expect(shutdown.inFlight).toBe(0)
    late()
    expect(shutdown.inFlight).toBe(0)
  })

  it('works on HTTP/2 streams, which the connection bookkeeping does not watch', async () => {
    const shutdown: Shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000 })
    const arrived = deferred<{ req: http2.Http2ServerRequest; res: http2.Http2ServerResponse }>()
    const server = http2.createServer((req, res) => {
      if (!shutdown.admit(req, res)) return writeRefusal(req, res, shutdown.refusal(req))
      arrived.resolve({ req, res })
    })
    shutdown.attach(server)
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
    cleanups.push(() => void client.destroy())
    const stream = client.request({ ':path': '/h2' })
    stream.resume()
    const ended = nextEvent(stream, 'end')
    const { req, res } = await within(2_000, arrived.promise, 'the stream to arrive')
    const release = shutdown.hold(req, res)
    // Admitted again (a second adapter on the same Shutdown): still counted once.
    expect(shutdown.admit(req, res)).toBe(true)
    expect(shutdown.inFlight).toBe(1)
    const closed = nextEvent(res, 'close')
    res.writeHead(200).end('ok')
    await within(2_000, ended, 'the stream to end')
    await within(2_000, closed, 'the response to close')
    expect(shutdown.inFlight).toBe(1)
    release()
    expect(shutdown.inFlight).toBe(0)
    const report = await within(2_000, shutdown.close('test'), 'the drain')
    expect(report.graceful).toBe(true)
  })
})

describe('whenSettled(): the adapters’ “until the handler chain has settled”', () => {
  it('calls back at once for a value or a throw (undefined), and only once a promise settles either way', async () => {
    const calls: string[] = []
    whenSettled('a value', () => calls.push('value'))
    whenSettled(undefined, () => calls.push('thrown'))
    expect(calls).toEqual(['value', 'thrown'])
    const fulfil = deferred<string>()
    const reject = deferred<string>()
    whenSettled(fulfil.promise, () => calls.push('fulfilled'))
    whenSettled(reject.promise, () => calls.push('rejected'))
    expect(calls).toEqual(['value', 'thrown'])
    fulfil.resolve('ok')
    await fulfil.promise
    expect(calls).toEqual(['value', 'thrown', 'fulfilled'])
    reject.reject(new Error('handler failed'))
    // The rejection stays the caller's to handle; whenSettled's own reaction does not rethrow it.
    await expect(reject.promise).rejects.toThrow('handler failed')
    expect(calls).toEqual(['value', 'thrown', 'fulfilled', 'rejected'])
  })
})
