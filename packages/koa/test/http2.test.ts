import http2 from 'node:http2'
import { deferred, listen, tlsCredentials, until, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { graceful } from '../src/index.js'
import { koaVersions } from './app.js'

const cleanups: Array<() => void> = []
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup()
})

/** One GET on an HTTP/2 session: status and body. */
function get(session: http2.ClientHttp2Session, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':path': path })
    let status = 0
    let body = ''
    stream.setEncoding('utf8')
    stream.on('response', (headers) => {
      status = Number(headers[':status'])
    })
    stream.on('data', (chunk: string) => {
      body += chunk
    })
    stream.on('end', () => resolve({ status, body }))
    stream.on('error', reject)
  })
}

describe.each(koaVersions)('%s over HTTP/2 (Koa on http2.createSecureServer)', (_name, Koa) => {
  it('counts a stream until its response closed, answers probes, and drains the session with GOAWAY', async () => {
    const mw = graceful({ signals: false, logger: false, timeoutMs: 5_000, health: true })
    const gate = deferred<void>()
    const parked = deferred<void>()
    const app = new Koa()
    app.use(mw)
    app.use(async (ctx) => {
      parked.resolve()
      await gate.promise
      ctx.body = `h2 ${ctx.req.httpVersionMajor}`
    })
    const { key, cert } = tlsCredentials()
    const server = mw.shutdown.attach(http2.createSecureServer({ key, cert }, app.callback()))
    const port = await listen(server)
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca: cert, servername: 'localhost' })
    cleanups.push(() => {
      session.destroy()
      void mw.shutdown.force('afterEach')
      server.close()
    })

    expect(await get(session, '/readyz')).toEqual({ status: 200, body: '{"status":"serving"}' })
    const slow = get(session, '/slow')
    await within(2_000, parked.promise, 'the stream to reach the middleware')
    expect(mw.shutdown.inFlight).toBe(1)
    const report = mw.shutdown.close('test')
    await until(() => mw.shutdown.state === 'stopping', 2_000, 'stopping')
    const goaway = new Promise<void>((resolve) => session.once('goaway', () => resolve()))
    await within(2_000, goaway, 'GOAWAY on the session')
    gate.resolve()
    expect(await within(2_000, slow, 'the in-flight stream')).toEqual({ status: 200, body: 'h2 2' })
    expect(await within(2_000, report, 'the report')).toMatchObject({
      graceful: true,
      requests: { completed: 1 },
    })
  })
})
