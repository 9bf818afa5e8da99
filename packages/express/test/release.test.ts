import { readFileSync } from 'node:fs'
import http from 'node:http'
import { fileURLToPath } from 'node:url'
import { rawConnect, rawRequest, request, until, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { type ExpressTestApp, readBody, startExpressApp } from './helpers/app.ts'
import { expressVersions } from './helpers/express.ts'

const HELLO = fileURLToPath(new URL('./fixtures/hello.txt', import.meta.url))

let running: ExpressTestApp | undefined
afterEach(async () => {
  await running?.close()
  running = undefined
})

// Every case runs beside a parked "witness" request on its own connection: the count must go from
// 2 (witness + case) back to exactly 1 when the case's response closes, proving the case request was
// counted once and released once without touching anyone else's count; then to 0.
describe.each(expressVersions)('counting and release with $name', ({ express, major, version }) => {
  it('runs on the installed major', async () => {
    expect(version.startsWith(`${major}.`)).toBe(true)
  })

  async function start(): Promise<{ app: ExpressTestApp; seen: number[] }> {
    const seen: number[] = []
    const app = await startExpressApp(
      express,
      { signals: false, logger: false },
      (app, { route, record, park, shutdown }) => {
        app.get(
          '/witness',
          route(async (_req, res) => {
            await park()
            res.send('witness')
          }),
        )
        app.get(
          '/end',
          route((_req, res) => {
            seen.push(shutdown.inFlight)
            res.send('ended')
          }),
        )
        app.get(
          '/stream',
          route(async (_req, res) => {
            res.writeHead(200, { 'content-type': 'text/plain' })
            res.write('chunk 0\n')
            seen.push(shutdown.inFlight)
            await park()
            res.end('chunk 1\n')
          }),
        )
        app.get(
          '/file',
          route((_req, res) => {
            seen.push(shutdown.inFlight)
            res.sendFile(HELLO)
          }),
        )
        app.get(
          '/next-error',
          route((_req, _res, next) => {
            seen.push(shutdown.inFlight)
            next(new Error('passed to next'))
          }),
        )
        app.get(
          '/throw',
          route(() => {
            seen.push(shutdown.inFlight)
            throw new Error('thrown')
          }),
        )
        // Not wrapped: Express 5 itself must turn the rejection into a 500.
        app.get('/reject', async (req) => {
          record(req)
          seen.push(shutdown.inFlight)
          await Promise.resolve()
          throw new Error('rejected')
        })
        app.post(
          '/upload',
          route(async (req, res) => {
            seen.push(shutdown.inFlight)
            const body = await readBody(req).catch(() => undefined)
            if (body !== undefined) res.send(`got ${body.length}`)
          }),
        )
      },
    )
    running = app
    return { app, seen }
  }

  async function withWitness(app: ExpressTestApp, run: () => Promise<void>): Promise<void> {
    const witness = request(app.port, { path: '/witness', agent: false })
    const gate = await within(2_000, app.nextParked(), 'the witness to park')
    expect(app.shutdown.inFlight).toBe(1)
    await run()
    await until(() => app.shutdown.inFlight === 1, 2_000, 'the case request to be released (inFlight 1)')
    gate.resolve()
    expect((await within(2_000, witness, 'the witness response')).body).toBe('witness')
    await until(() => app.shutdown.inFlight === 0, 2_000, 'the witness to be released (inFlight 0)')
  }

  it('releases a response that ends normally', async () => {
    const { app, seen } = await start()
    await withWitness(app, async () => {
      const response = await within(2_000, request(app.port, { path: '/end' }), 'the response')
      expect([response.status, response.body]).toEqual([200, 'ended'])
    })
    expect(seen).toEqual([2])
  })

  it('releases a response streamed with res.write once it ends', async () => {
    const { app, seen } = await start()
    await withWitness(app, async () => {
      const response = request(app.port, { path: '/stream' })
      const gate = await within(2_000, app.nextParked(), 'the stream to park')
      expect(app.shutdown.inFlight).toBe(2)
      gate.resolve()
      const { status, body, headers } = await within(2_000, response, 'the streamed response')
      expect([status, body, headers['transfer-encoding']]).toEqual([200, 'chunk 0\nchunk 1\n', 'chunked'])
    })
    expect(seen).toEqual([2])
  })

  it('releases a res.sendFile response', async () => {
    const { app, seen } = await start()
    await withWitness(app, async () => {
      const response = await within(2_000, request(app.port, { path: '/file' }), 'the file')
      expect([response.status, response.body]).toEqual([200, readFileSync(HELLO, 'utf8')])
    })
    expect(seen).toEqual([2])
  })

  it('releases a request passed to next(err)', async () => {
    const { app, seen } = await start()
    await withWitness(app, async () => {
      const response = await within(2_000, request(app.port, { path: '/next-error' }), 'the 500')
      expect(response.status).toBe(500)
    })
    expect(seen).toEqual([2])
  })

  it('releases a request whose handler throws', async () => {
    const { app, seen } = await start()
    await withWitness(app, async () => {
      const response = await within(2_000, request(app.port, { path: '/throw' }), 'the 500')
      expect(response.status).toBe(500)
    })
    expect(seen).toEqual([2])
  })

  it.runIf(major >= 5)('releases a request whose async handler rejects', async () => {
    const { app, seen } = await start()
    await withWitness(app, async () => {
      const response = await within(2_000, request(app.port, { path: '/reject' }), 'the 500')
      expect(response.status).toBe(500)
    })
    expect(seen).toEqual([2])
  })

  it('releases a request whose client aborts mid-request (half the body sent)', async () => {
    const { app, seen } = await start()
    await withWitness(app, async () => {
      const raw = await rawConnect(app.port)
      raw.write(rawRequest('POST', '/upload', { 'content-length': '100' }).concat('x'.repeat(10)))
      await until(() => app.hits.includes('/upload'), 2_000, 'the upload handler to start')
      expect(app.shutdown.inFlight).toBe(2)
      raw.socket.destroy()
    })
    expect(seen).toEqual([2])
  })

  it('releases a request whose client aborts mid-response', async () => {
    const { app, seen } = await start()
    await withWitness(app, async () => {
      const received = new Promise<http.IncomingMessage>((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port: app.port, path: '/stream', agent: false }, (res) => {
          res.once('data', () => resolve(res))
        })
        req.on('error', () => {}) // the abort below
        req.once('error', reject)
      })
      const gate = await within(2_000, app.nextParked(), 'the stream to park')
      const res = await within(2_000, received, 'the first chunk')
      expect(app.shutdown.inFlight).toBe(2)
      res.destroy()
      await until(() => app.shutdown.inFlight === 1, 2_000, 'the aborted stream to be released')
      gate.resolve() // the handler writes its last chunk into a closed response: nothing is counted again
    })
    expect(seen).toEqual([2])
  })
})
