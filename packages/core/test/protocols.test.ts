import { mkdtempSync, rmSync } from 'node:fs'
import http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import net, { type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import {
  closeServer,
  createFakeClock,
  deferred,
  nextEvent,
  parseResponses,
  rawConnect,
  rawRequest,
  tlsCredentials,
  until,
  within,
} from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createShutdown, type Shutdown, writeRefusal } from '../src/index.js'
import { type Gate, passGate } from './helpers/app.js'

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** A handler using the core as an adapter would; `/slow` waits for `gate`. */
function handler(shutdown: Shutdown, gate: Promise<void>, arrived: () => void, via: Gate = 'enter') {
  return (
    req: http.IncomingMessage | http2.Http2ServerRequest,
    res: http.ServerResponse | http2.Http2ServerResponse,
  ) => {
    if (!passGate(shutdown, via, req, res)) return
    const body = `ok ${req.url}`
    const answer = () =>
      (res as http.ServerResponse)
        .writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length })
        .end(body)
    if (req.url === '/slow') {
      arrived()
      void gate.then(answer)
    } else answer()
  }
}

function listenOn(server: http.Server | https.Server | http2.Http2Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)),
  )
}

describe('HTTPS', () => {
  it.each<Gate>(['enter', 'admit'])(
    'drains like HTTP: the in-flight response completes with Connection: close, idle TLS sockets close (%s)',
    async (via) => {
      const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000 })
      const gate = deferred()
      const arrived = deferred()
      const server = https.createServer(
        tlsCredentials(),
        handler(shutdown, gate.promise, () => arrived.resolve(), via),
      )
      shutdown.attach(server)
      const port = await listenOn(server)
      cleanups.push(() => closeServer(server))
      const { cert } = tlsCredentials()
      const idleAgent = new https.Agent({ keepAlive: true, ca: cert, maxSockets: 1 })
      const get = (path: string, agent: https.Agent) =>
        new Promise<{ status: number; connection: string | undefined; body: string }>((resolve, reject) => {
          https
            .get({ host: '127.0.0.1', port, path, agent, ca: cert }, (res) => {
              let body = ''
              res.on('data', (chunk) => (body += chunk))
              res.on('end', () =>
                resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body }),
              )
            })
            .on('error', reject)
        })
      await get('/warm', idleAgent)
      const idleSocketClosed = new Promise<void>((resolve) => {
        const [socket] = Object.values(idleAgent.freeSockets).flat()
        socket?.once('close', () => resolve())
      })
      const slow = get('/slow', new https.Agent({ keepAlive: true, ca: cert }))
      await within(2_000, arrived.promise, 'the slow request to arrive')
      const report = shutdown.close('test')
      await within(2_000, idleSocketClosed, 'the idle TLS socket to close')
      gate.resolve()
      expect(await within(2_000, slow, 'the slow response')).toEqual({
        status: 200,
        connection: 'close',
        body: 'ok /slow',
      })
      const done = await within(2_000, report, 'the drain')
      expect(done.graceful).toBe(true)
    },
  )

  it('closes a stalled handshake once quiet when another attached server got a connection from the same client port', async () => {
    const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000, idleGraceMs: 30 })
    const answer = handler(shutdown, Promise.resolve(), () => {})
    const a = shutdown.attach(https.createServer(tlsCredentials(), answer))
    const b = shutdown.attach(https.createServer(tlsCredentials(), answer))
    const [portA, portB] = [await listenOn(a), await listenOn(b)]
    cleanups.push(
      () => closeServer(a),
      () => closeServer(b),
    )
    // Connects to B and never sends its ClientHello.
    const accepted = nextEvent<[net.Socket]>(b, 'connection')
    const stalled = net.connect({ host: '127.0.0.1', port: portB, localAddress: '127.0.0.1' })
    stalled.on('error', () => {})
    cleanups.push(() => void stalled.destroy())
    await within(2_000, nextEvent(stalled, 'connect'), 'the stalled client to connect')
    const [onB] = await within(2_000, accepted, 'B to accept it')
    const stalledClosed = nextEvent(stalled, 'close')
    // From the same client address and port, to A (one proxy or sidecar in front of both servers):
    // the same peer as B's connection, another local port.
    const secured = nextEvent(a, 'secureConnection')
    const sameSource = net.connect({
      host: '127.0.0.1',
      port: portA,
      localAddress: '127.0.0.1',
      localPort: stalled.localPort as number,
    })
    const client = tls.connect({ socket: sameSource, ca: tlsCredentials().cert })
    client.on('error', () => {})
    cleanups.push(() => void client.destroy())
    await within(2_000, secured, 'the handshake with A')
    let stalledOpenAtClosing: boolean | undefined
    shutdown.on('statechange', (state) => {
      if (state === 'closing') stalledOpenAtClosing = !onB.destroyed
    })
    const done = await within(2_000, shutdown.close('test'), 'the drain')
    expect(done.graceful).toBe(true)
    expect(stalledOpenAtClosing).toBe(false)
    await within(2_000, stalledClosed, 'the stalled client to see its connection closed')
  })

  it('on a unix socket, does not take a TLS connection for another, stalled handshake (no addresses to tell them apart)', async () => {
    const clock = createFakeClock()
    const shutdown = createShutdown({
      signals: false,
      logger: false,
      clock,
      timeoutMs: 5_000,
      idleGraceMs: 30,
    })
    const gate = deferred()
    const arrived = deferred()
    const server = https.createServer(
      tlsCredentials(),
      handler(shutdown, gate.promise, () => arrived.resolve(), 'admit'),
    )
    shutdown.attach(server)
    const dir = mkdtempSync(join(tmpdir(), 'lameduck-pipe-'))
    const path = join(dir, 'https.sock')
    await new Promise<void>((resolve) => server.listen(path, resolve))
    cleanups.push(
      () => rmSync(dir, { recursive: true, force: true }),
      () => closeServer(server),
    )
    // Connects and never sends its ClientHello.
    const accepted = nextEvent(server, 'connection')
    const stalled = net.connect(path)
    stalled.on('error', () => {})
    cleanups.push(() => void stalled.destroy())
    await within(2_000, accepted, 'the stalled connection to be accepted')
    const secured = nextEvent<[tls.TLSSocket]>(server, 'secureConnection')
    const client = tls.connect({ path, ca: tlsCredentials().cert, servername: 'localhost' })
    client.on('error', () => {})
    cleanups.push(() => void client.destroy())
    const [onServer] = await within(2_000, secured, 'the handshake')
    let data = ''
    client.setEncoding('utf8')
    client.on('data', (chunk: string) => (data += chunk))
    const clientClosed = nextEvent(client, 'close')
    client.write(rawRequest('GET', '/slow'))
    await within(2_000, arrived.promise, 'the request to reach the handler')
    const report = shutdown.close('test')
    // Quiet for idleGraceMs: stalled handshakes are closed now, and this connection is not one.
    const turn = () => new Promise<void>((resolve) => setImmediate(resolve))
    for (const ms of [0, 30]) {
      await clock.advance(ms)
      await turn()
    }
    await turn()
    expect(onServer.destroyed).toBe(false)
    gate.resolve()
    await within(2_000, clientClosed, 'the connection to close after its response')
    expect(parseResponses(data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
      [200, 'ok /slow', 'close'],
    ])
    expect((await within(2_000, report, 'the drain')).graceful).toBe(true)
  })
})

describe('HTTP/2', () => {
  it.each<Gate>(['enter', 'admit'])(
    'sends GOAWAY at stopping, lets open streams finish, and ends every session (%s)',
    async (via) => {
      const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000 })
      const gate = deferred()
      const arrived = deferred()
      const server = http2.createServer(handler(shutdown, gate.promise, () => arrived.resolve(), via))
      shutdown.attach(server)
      const port = await listenOn(server)
      cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
      const client = http2.connect(`http://127.0.0.1:${port}`)
      cleanups.push(() => void client.destroy())
      const goaway = new Promise<void>((resolve) => client.once('goaway', () => resolve()))
      const clientClosed = new Promise<void>((resolve) => client.once('close', () => resolve()))
      const stream = client.request({ ':path': '/slow' })
      let body = ''
      stream.setEncoding('utf8')
      stream.on('data', (chunk: string) => (body += chunk))
      const streamEnded = new Promise<number>((resolve) => {
        let status = 0
        stream.on('response', (headers) => (status = Number(headers[':status'])))
        stream.on('end', () => resolve(status))
      })
      await within(2_000, arrived.promise, 'the stream to reach the handler')
      const report = shutdown.close('test')
      await within(2_000, goaway, 'GOAWAY')
      gate.resolve()
      expect(await within(2_000, streamEnded, 'the stream to finish')).toBe(200)
      expect(body).toBe('ok /slow')
      const done = await within(2_000, report, 'the drain')
      expect(done.graceful).toBe(true)
      await within(2_000, clientClosed, 'the client session to close')
    },
  )

  it.each<Gate>(['enter', 'admit'])(
    'sends GOAWAY to a session opened before its server was discovered, and waits for it to close (%s)',
    async (via) => {
      const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000 })
      const gate = deferred()
      const arrived = deferred()
      // Not attached: the shutdown discovers the server from the first request, on an open session.
      const server = http2.createServer(handler(shutdown, gate.promise, () => arrived.resolve(), via))
      const port = await listenOn(server)
      cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
      const client = http2.connect(`http://127.0.0.1:${port}`)
      cleanups.push(() => void client.destroy())
      const goaway = nextEvent(client, 'goaway')
      const clientClosed = nextEvent(client, 'close')
      const stream = client.request({ ':path': '/slow' })
      let body = ''
      stream.setEncoding('utf8')
      stream.on('data', (chunk: string) => (body += chunk))
      const streamEnded = nextEvent(stream, 'end')
      await within(2_000, arrived.promise, 'the stream to reach the handler')
      const report = shutdown.close('test')
      await within(2_000, goaway, 'GOAWAY')
      gate.resolve()
      await within(2_000, streamEnded, 'the stream to finish')
      expect(body).toBe('ok /slow')
      await within(2_000, clientClosed, 'the client session to close')
      const done = await within(2_000, report, 'the drain')
      expect(done.graceful).toBe(true)
      expect(done.connectionsDestroyed).toBe(0)
    },
  )

  it('omits Connection from the HTTP/2 refusal (illegal there)', () => {
    const shutdown = createShutdown({ signals: false, logger: false })
    expect(shutdown.refusal({ httpVersionMajor: 2 }).headers).not.toHaveProperty('connection')
    expect(shutdown.refusal({ httpVersionMajor: 1 }).headers.connection).toBe('close')
  })
})

describe('upgrades (WebSocket)', () => {
  function upgradeServer(shutdown: Shutdown) {
    const upgraded: string[] = []
    const server = http.createServer(handler(shutdown, Promise.resolve(), () => {}))
    shutdown.attach(server)
    // Added after attach, as a WebSocket library would.
    server.on('upgrade', (req, socket) => {
      upgraded.push(req.url ?? '')
      socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: test\r\nconnection: upgrade\r\n\r\n')
    })
    return { server, upgraded }
  }
  const upgradeRequest = (path: string) =>
    rawRequest('GET', path, { upgrade: 'websocket', connection: 'upgrade' })

  /** Upgrades from the request handler, as koa-easy-ws and @fastify/websocket's routing do. */
  function requestUpgradeServer(shutdown: Shutdown) {
    const upgraded: string[] = []
    const server = http.createServer((req, res) => {
      if (!shutdown.admit(req, res)) return writeRefusal(req, res, shutdown.refusal(req))
      if (req.headers.upgrade === undefined) return res.end(`ok ${req.url}`)
      upgraded.push(req.url ?? '')
      // The library writes the 101 on the socket itself; the response object never ends.
      req.socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: test\r\nconnection: upgrade\r\n\r\n')
    })
    shutdown.attach(server)
    return { server, upgraded }
  }
  const upgradeServers = [
    ["from the server's 'upgrade' event", upgradeServer],
    // No 'upgrade' listener: Node emits the handshake as a 'request' (koa-easy-ws).
    ["taken over from a 'request' listener", requestUpgradeServer],
  ] as const

  it.each(upgradeServers)(
    'does not count or hold the drain for a socket upgraded %s, and ends it after the close hooks',
    async (_, makeServer) => {
      const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000 })
      const { server, upgraded } = makeServer(shutdown)
      const port = await listenOn(server)
      cleanups.push(() => closeServer(server))
      const raw = await rawConnect(port)
      raw.write(upgradeRequest('/ws'))
      await raw.waitFor('101 Switching Protocols')
      expect(upgraded).toEqual(['/ws'])
      expect(shutdown.inFlight).toBe(0)
      let openDuringHook = false
      shutdown.onClose('websockets', () => {
        openDuringHook = !raw.socket.destroyed
      })
      const done = await within(2_000, shutdown.close('test'), 'the drain')
      expect(done.graceful).toBe(true)
      expect(openDuringHook).toBe(true)
      const { error } = await within(2_000, raw.closed, 'the upgraded socket to be closed')
      expect(error).toBeUndefined()
    },
  )

  it.each(upgradeServers)(
    'refuses an upgrade request (%s) while stopping, without running the app',
    async (_, makeServer) => {
      const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000, idleGraceMs: 2_000 })
      const { server, upgraded } = makeServer(shutdown)
      const port = await listenOn(server)
      cleanups.push(() => closeServer(server))
      const raw = await rawConnect(port)
      raw.write(rawRequest('GET', '/first'))
      await raw.waitFor('ok /first')
      const report = shutdown.close('test')
      await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
      raw.write(upgradeRequest('/ws'))
      const { data } = await within(2_000, raw.closed, 'the refused connection to close')
      const [, refusal] = parseResponses(data)
      expect(refusal?.status).toBe(503)
      expect(refusal?.headers.connection).toBe('close')
      expect(upgraded).toEqual([])
      expect((await within(2_000, report, 'the drain')).requests.refused).toBe(1)
    },
  )

  it('counts an upgrade Node serves as plain HTTP (h2c, as curl --http2 asks) like any request', async () => {
    const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000 })
    const answer = deferred()
    const server = http.createServer(async (req, res) => {
      if (!shutdown.admit(req, res)) return writeRefusal(req, res, shutdown.refusal(req))
      await answer.promise
      res.end('plain')
    })
    shutdown.attach(server)
    const port = await listenOn(server)
    cleanups.push(() => closeServer(server))
    const raw = await rawConnect(port)
    raw.write(
      rawRequest('GET', '/slow', {
        upgrade: 'h2c',
        connection: 'Upgrade, HTTP2-Settings',
        'http2-settings': '',
      }),
    )
    await until(() => shutdown.inFlight === 1, 2_000, 'the request to be counted')
    const report = shutdown.close('test')
    await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
    answer.resolve()
    const { data, error } = await within(2_000, raw.closed, 'the answered connection to close')
    expect(error).toBeUndefined()
    expect(parseResponses(data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
      [200, 'plain', 'close'],
    ])
    const done = await within(2_000, report, 'the drain')
    expect([done.graceful, done.requests.completed, done.connectionsDestroyed]).toEqual([true, 1, 0])
  })

  it('treats a connection whose WebSocket handshake was answered as plain HTTP as HTTP again', async () => {
    const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000, idleGraceMs: 2_000 })
    const server = http.createServer((req, res) => {
      if (!shutdown.admit(req, res)) return writeRefusal(req, res, shutdown.refusal(req))
      // No WebSocket here: the handshake gets a 404, and the connection stays open for more.
      if (req.headers.upgrade !== undefined) {
        res.statusCode = 404
        return res.end('no websocket here')
      }
      res.end(`ok ${req.url}`)
    })
    shutdown.attach(server)
    const port = await listenOn(server)
    cleanups.push(() => closeServer(server))
    const raw = await rawConnect(port)
    raw.write(rawRequest('GET', '/ws', { upgrade: 'websocket', connection: 'keep-alive, Upgrade' }))
    await raw.waitFor('no websocket here')
    raw.write(rawRequest('GET', '/next'))
    await raw.waitFor('ok /next')
    const report = shutdown.close('test')
    await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
    raw.write(rawRequest('GET', '/last'))
    const { data } = await within(2_000, raw.closed, 'the connection to close after its last request')
    expect(parseResponses(data).map((r) => [r.status, r.headers.connection])).toEqual([
      [404, 'keep-alive'],
      [200, 'keep-alive'],
      [200, 'close'],
    ])
    expect((await within(3_000, report, 'the drain')).connectionsDestroyed).toBe(0)
  })

  it('runs a once() upgrade listener added after attach once, and leaves no wrapper behind', async () => {
    const shutdown = createShutdown({ signals: false, logger: false })
    const { server, upgraded } = upgradeServer(shutdown)
    const ran: string[] = []
    server.once('upgrade', (req) => ran.push(req.url ?? ''))
    const port = await listenOn(server)
    cleanups.push(() => closeServer(server))
    for (const path of ['/one', '/two']) {
      const raw = await rawConnect(port)
      raw.write(upgradeRequest(path))
      await raw.waitFor('101 Switching Protocols')
      raw.socket.destroy()
    }
    expect(ran).toEqual(['/one'])
    expect(upgraded).toEqual(['/one', '/two'])
    // Ours and the guarded listener of upgradeServer(): the once() listener's guard removed itself.
    expect(server.listenerCount('upgrade')).toBe(2)
    await within(2_000, shutdown.close('test'), 'the upgraded sockets to be ended')
  })
})

describe('attach', () => {
  it('rejects what is not a server, and a new server once closing', async () => {
    const shutdown = createShutdown({ signals: false, logger: false })
    expect(() => shutdown.attach({} as http.Server)).toThrow(
      expect.objectContaining({
        code: 'ERR_LAMEDUCK_INVALID_ARGUMENT',
        message:
          '@lameduck/core: attach() argument "server" must be an http, https or http2 server (what listen() returns); received an object.',
      }),
    )
    await shutdown.close()
    expect(() => shutdown.attach(http.createServer())).toThrow(
      expect.objectContaining({ code: 'ERR_LAMEDUCK_CLOSED' }),
    )
  })

  it("closes a connection opened before attach and never used, through Node's own reaping or the deadline", async () => {
    const lines: string[] = []
    const logger = { info: (_: unknown, m: string) => lines.push(m), warn: () => {}, error: () => {} }
    const shutdown = createShutdown({ signals: false, logger, timeoutMs: 1_000 })
    const server = http.createServer(handler(shutdown, Promise.resolve(), () => {}))
    const port = await listenOn(server)
    cleanups.push(() => closeServer(server))
    const accepted = nextEvent(server, 'connection')
    const early = await rawConnect(port)
    await within(2_000, accepted, 'the early connection to be accepted')
    shutdown.attach(server)
    await until(
      () => lines.some((line) => line.includes('opened before attach()')),
      2_000,
      'the early connection to be logged',
    )
    await within(3_000, shutdown.close('test'), 'the shutdown')
    const { error } = await within(2_000, early.closed, 'the early connection to close')
    expect(error).toBeUndefined()
  })
})
