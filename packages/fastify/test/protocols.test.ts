import http2 from 'node:http2'
import https from 'node:https'
import tls from 'node:tls'
import { deferred, tlsCredentials, until, within } from '@lameduck/test-utils'
import type { FastifyServerOptions } from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
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
