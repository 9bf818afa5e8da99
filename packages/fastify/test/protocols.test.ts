import http2 from 'node:http2'
import https from 'node:https'
import tls from 'node:tls'
import {
  deferred,
  nextEvent,
  rawConnect,
  rawRequest,
  tlsCredentials,
  until,
  websocketHandshake,
  within,
} from '@lameduck/test-utils'
import type { FastifyServerOptions } from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
import { startFastify, stopFastifyApps } from './helpers/fastify.js'

afterEach(stopFastifyApps)

const { key, cert } = tlsCredentials()

function parkingRoutes() {
  const parked = deferred<void>()
  const gate = deferred<void>()
  return {
    parked: parked.promise,
    gate,
    setup(app: import('fastify').FastifyInstance) {
      app.get('/fast', async () => 'fast')
      app.get('/slow', async () => {
        parked.resolve()
        await gate.promise
        return 'slow'
      })
    },
  }
}

describe('other servers Fastify can run', () => {
  it('http2 (h2c): the in-flight stream completes, the session gets GOAWAY, app.close() finishes', async () => {
    const routes = parkingRoutes()
    const { app, port } = await startFastify(routes.setup, {}, { http2: true } as FastifyServerOptions)
    const session = http2.connect(`http://127.0.0.1:${port}`)
    const goaway = new Promise<void>((resolve) => session.once('goaway', () => resolve()))
    const sessionClosed = new Promise<void>((resolve) => session.once('close', () => resolve()))
    session.on('error', () => {})
    const stream = session.request({ ':path': '/slow' })
    let body = ''
    stream.setEncoding('utf8')
    stream.on('data', (chunk: string) => {
      body += chunk
    })
    const status = new Promise<number>((resolve) =>
      stream.once('response', (headers) => resolve(Number(headers[':status']))),
    )
    const ended = new Promise<void>((resolve) => stream.once('end', () => resolve()))
    await within(2_000, routes.parked, 'the h2 request to park')
    expect(app.shutdown.inFlight).toBe(1)

    const closed = app.close()
    await within(2_000, goaway, 'GOAWAY on the session')
    routes.gate.resolve()
    expect(await within(2_000, status, 'the h2 response headers')).toBe(200)
    await within(2_000, ended, 'the h2 response body')
    expect(body).toBe('slow')
    await within(2_000, sessionClosed, 'the session to close')
    await within(3_000, closed, 'app.close()')
    const report = await app.shutdown.close()
    expect(report).toMatchObject({
      graceful: true,
      requests: { completed: 1, forced: 0 },
      connectionsDestroyed: 0,
    })
    expect(app.shutdown.inFlight).toBe(0)
  })

  it('https: the in-flight request completes with Connection: close and an idle TLS connection is closed at once', async () => {
    const routes = parkingRoutes()
    const { app, port } = await startFastify(routes.setup, {}, {
      https: { key, cert },
    } as FastifyServerOptions)

    const idle = tls.connect({ host: '127.0.0.1', port, ca: cert, servername: 'localhost' })
    let idleData = ''
    idle.setEncoding('latin1')
    idle.on('data', (chunk: string) => {
      idleData += chunk
    })
    const idleClosed = new Promise<boolean>((resolve) => idle.once('close', (hadError) => resolve(hadError)))
    await new Promise<void>((resolve, reject) => idle.once('secureConnect', resolve).once('error', reject))
    idle.write('GET /fast HTTP/1.1\r\nhost: localhost\r\n\r\n')
    await until(() => idleData.endsWith('fast'), 2_000, 'the first https answer')

    const slow = new Promise<{ status: number; connection: string | undefined; body: string }>(
      (resolve, reject) => {
        https
          .get(
            { host: '127.0.0.1', port, path: '/slow', ca: cert, servername: 'localhost', agent: false },
            (res) => {
              let body = ''
              res.on('data', (chunk: Buffer) => {
                body += chunk.toString()
              })
              res.on('end', () =>
                resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body }),
              )
            },
          )
          .on('error', reject)
      },
    )
    await within(2_000, routes.parked, 'the https request to park')
    const closed = app.close()
    expect(await within(2_000, idleClosed, 'the idle TLS connection to close')).toBe(false)
    routes.gate.resolve()
    expect(await within(2_000, slow, 'the https response')).toEqual({
      status: 200,
      connection: 'close',
      body: 'slow',
    })
    await within(3_000, closed, 'app.close()')
    const report = await app.shutdown.close()
    expect(report).toMatchObject({ graceful: true, requests: { completed: 1 }, connectionsDestroyed: 0 })
  })
})

describe('@fastify/websocket, registered after graceful (the documented order)', () => {
  async function start() {
    const { default: websocket } = await import('@fastify/websocket')
    const messages: string[] = []
    const started = await startFastify((app) => {
      app.register(websocket)
      app.register(async (scoped) => {
        scoped.get('/ws', { websocket: true }, (socket) => {
          socket.on('message', (data) => {
            messages.push(String(data))
            socket.send(`echo ${data}`)
          })
        })
        scoped.get('/fast', async () => 'fast')
      })
      // As the README says: WebSockets are the app's to close, in a close hook (before app.close()).
      app.shutdown.onClose('websockets', () => {
        for (const client of app.websocketServer.clients) client.close(1001, 'server shutting down')
      })
    })
    return { ...started, messages }
  }

  function connect(port: number) {
    const client = new WebSocket(`ws://127.0.0.1:${port}/ws`)
    const closed = new Promise<number>((resolve) => client.once('close', (code) => resolve(code)))
    client.on('error', () => {})
    return { client, closed, opened: nextEvent(client, 'open') }
  }

  it('serves WebSocket routes, uncounted: the drain does not wait for them, the close hook ends them (1001)', async () => {
    const { app, port, messages } = await start()
    const { client, closed, opened } = connect(port)
    await within(2_000, opened, 'the WebSocket to open')
    const echoed = nextEvent(client, 'message')
    client.send('hi')
    expect(String((await within(2_000, echoed, 'the echo'))[0])).toBe('echo hi')
    expect(messages).toEqual(['hi'])
    expect(app.shutdown.inFlight).toBe(0)
    const startedAt = Date.now()
    const report = await within(3_000, app.shutdown.close('test'), 'the shutdown')
    expect(report.graceful).toBe(true)
    expect(Date.now() - startedAt).toBeLessThan(2_000)
    expect(await within(2_000, closed, 'the WebSocket to close')).toBe(1001)
  })

  it('refuses a WebSocket handshake on a kept-alive connection once stopping', async () => {
    const { app, port } = await start()
    const raw = await rawConnect(port)
    raw.write(rawRequest('GET', '/fast'))
    await raw.waitFor('\r\n\r\nfast')
    // Held open by a task, so the handshake arrives while stopping.
    const held = deferred<void>()
    void app.shutdown.track('held', held.promise)
    const report = app.shutdown.close('test')
    await until(() => app.shutdown.state === 'stopping', 2_000, 'stopping')
    raw.write(websocketHandshake('/ws'))
    const { data } = await within(2_000, raw.closed, 'the refused connection to close')
    expect(data).not.toContain('101 Switching Protocols')
    expect(data.slice(data.lastIndexOf('HTTP/1.1 '))).toMatch(/^HTTP\/1\.1 503 /)
    held.resolve()
    expect((await within(3_000, report, 'the shutdown')).requests.refused).toBe(1)
  })
})
