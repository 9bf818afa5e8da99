import http from 'node:http'
import net from 'node:net'
import { Writable } from 'node:stream'
import {
  closeServer,
  type Deferred,
  deferred,
  listen,
  nextEvent,
  parseResponses,
  rawConnect,
  rawRequest,
  within,
} from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createShutdown } from '../src/index.js'

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

type RequestListener = (req: http.IncomingMessage, res: http.ServerResponse) => void

const answer = (res: http.ServerResponse, body = 'ok') =>
  res.writeHead(200, { 'content-length': String(body.length) }).end(body)

/** A server with `listeners` as its 'request' listeners, attached to a new Shutdown and listening. */
async function start(...listeners: RequestListener[]) {
  const server = http.createServer()
  for (const listener of listeners) server.on('request', listener)
  const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000, drainDelayMs: 0 })
  shutdown.attach(server)
  const port = await listen(server)
  cleanups.push(() => closeServer(server))
  return { server, shutdown, port }
}

/** A listener that hands each response to the test, unanswered. */
function holding(): { listener: RequestListener; next: () => Promise<http.ServerResponse> } {
  const arrivals: Deferred<http.ServerResponse>[] = [deferred()]
  let taken = 0
  return {
    listener: (_req, res) => {
      arrivals.at(-1)?.resolve(res)
      arrivals.push(deferred())
    },
    next: () => within(2_000, (arrivals[taken++] as Deferred<http.ServerResponse>).promise, 'a request'),
  }
}

describe("the server's 'request' listeners", () => {
  it("wraps the app's one listener in place: listeners() still lists it, and the close puts it back before later ones", async () => {
    const app: RequestListener = (_req, res) => answer(res)
    const { server, shutdown, port } = await start(app)
    expect(server.listeners('request')).toEqual([app])
    expect(server.rawListeners('request')).toHaveLength(1)
    expect(server.rawListeners('request')[0]).not.toBe(app)
    const later: RequestListener = () => {}
    server.on('request', later)
    const raw = await rawConnect(port)
    cleanups.push(() => void raw.socket.destroy())
    raw.write(rawRequest('GET', '/'))
    await raw.waitFor('ok')
    const report = await within(3_000, shutdown.close('test'), 'the close')
    expect(report.graceful).toBe(true)
    expect(report.requests.completed).toBe(0) // answered before the close began
    expect(server.rawListeners('request')).toEqual([app, later])
  })

  it('still sees requests after the app removed its listener: one in flight at the signal is its connection’s last, answered in full', async () => {
    const first: RequestListener = (_req, res) => answer(res)
    const { server, shutdown, port } = await start(first)
    server.removeListener('request', first)
    expect(server.listeners('request')).not.toContain(first)
    const replacement = holding()
    server.on('request', replacement.listener)
    const raw = await rawConnect(port)
    cleanups.push(() => void raw.socket.destroy())
    raw.write(rawRequest('GET', '/slow'))
    const res = await replacement.next()
    const closing = shutdown.close('test')
    // Seen (not counted: nothing admitted it), so its connection is busy, not idle, and its
    // response is the connection's last: `Connection: close`, then the server closes the socket.
    answer(res, 'slow body')
    const { data, error } = await within(3_000, raw.closed, 'the server to close the connection')
    expect(error).toBeUndefined()
    const [response] = parseResponses(data)
    expect(response?.status).toBe(200)
    expect(response?.body).toBe('slow body')
    expect(response?.headers.connection).toBe('close')
    expect((await within(3_000, closing, 'the close')).graceful).toBe(true)
    expect(server.rawListeners('request')).toEqual([replacement.listener])
  })

  it('prepends a listener of its own to a server with two, and removes it at the close', async () => {
    const seen: string[] = []
    const a: RequestListener = (req) => seen.push(`a ${req.url}`)
    const b: RequestListener = (req, res) => {
      seen.push(`b ${req.url}`)
      answer(res)
    }
    const { server, shutdown, port } = await start(a, b)
    const raw = await rawConnect(port)
    cleanups.push(() => void raw.socket.destroy())
    expect(server.rawListeners('request')).toHaveLength(3)
    expect(server.rawListeners('request').slice(1)).toEqual([a, b])
    raw.write(rawRequest('GET', '/x'))
    await raw.waitFor('ok')
    expect(seen).toEqual(['a /x', 'b /x'])
    await within(3_000, shutdown.close('test'), 'the close')
    expect(server.rawListeners('request')).toEqual([a, b])
  })

  it('puts nothing back that still observes when the app rebuilt its listener list: a reused server keeps its connections alive', async () => {
    const app: RequestListener = (_req, res) => answer(res)
    const { server, shutdown } = await start(app)
    // Code that reorders a server's listeners: every raw listener (ours included) out, then back in.
    const rebuilt = server.rawListeners('request') as RequestListener[]
    server.removeAllListeners('request')
    for (const listener of rebuilt) server.on('request', listener)
    await within(3_000, shutdown.close('test'), 'the close')
    // The same server listening again after the shutdown (a test suite, a reload with a new one).
    const port = await listen(server)
    const raw = await rawConnect(port)
    cleanups.push(() => void raw.socket.destroy())
    raw.write(rawRequest('GET', '/again'))
    const [response] = parseResponses(await raw.waitFor('ok'))
    expect(response?.status).toBe(200)
    expect(response?.headers.connection).toBe('keep-alive')
  })

  it('releases a request the app emits itself with a hand-built response that has no `req`', async () => {
    const { server, shutdown } = await start((req, res) => {
      if (shutdown.admit(req, res)) res.end('ok')
    })
    const socket = new net.Socket() // never connected: the hand-built request's socket
    const req = { httpVersionMajor: 1, method: 'GET', url: '/', headers: {}, socket }
    const res = new Writable({
      write(_chunk, _encoding, callback) {
        callback()
      },
    })
    Object.assign(res, { headersSent: false })
    const closed = nextEvent(res, 'close')
    server.emit('request', req, res)
    await within(2_000, closed, 'the hand-built response to close')
    expect(shutdown.inFlight).toBe(0)
    const report = await within(3_000, shutdown.close('test'), 'the close')
    expect(report.graceful).toBe(true)
    expect(report.requests.forced).toBe(0)
  })
})
