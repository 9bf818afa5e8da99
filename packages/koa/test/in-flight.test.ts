import http from 'node:http'
import { responseClosed } from '@lameduck/core'
import { type RawConnection, rawConnect, rawRequest, request, until, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createAppWith, type KoaTestApp, koaVersions } from './app.js'

let app: KoaTestApp | undefined
const raws: RawConnection[] = []
afterEach(async () => {
  for (const raw of raws.splice(0)) raw.socket.destroy()
  if (app) {
    await app.shutdown.force('afterEach')
    await app.close()
  }
  app = undefined
})

async function connect(port: number): Promise<RawConnection> {
  const raw = await rawConnect(port)
  raws.push(raw)
  return raw
}

// The invariant the issue asks for: at every step, inFlight equals the handlers parked on a deferred.
// A release happens when the response has closed AND the middleware has settled, which may be a
// turn after the client saw its answer, hence `until` after each step.
describe.each(koaVersions)(
  '%s: a request is counted until its middleware settled and its response closed',
  (_name, Koa) => {
    const start = async () => {
      app = await createAppWith(Koa)({ signals: false, logger: false })
      return app
    }
    const settles = (expected: number, what: string) =>
      until(
        () => app?.shutdown.inFlight === expected && app.parkedCount === expected,
        2_000,
        `inFlight and parked handlers both at ${expected} (${what})`,
      )

    it('abort mid-request: stays counted while the middleware is still parked, released once it finishes', async () => {
      const a = await start()
      const { port, shutdown } = a
      const client = http.request({
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/slow',
        headers: { 'content-length': '5' },
        agent: false,
      })
      client.on('error', () => {}) // the abort below is ours
      client.end('hello')
      const gate = await within(2_000, a.nextParked(), '/slow to park')
      expect([shutdown.inFlight, a.parkedCount]).toEqual([1, 1])
      client.destroy()
      await within(2_000, responseClosed(gate.res), 'the server to see the abort')
      expect([shutdown.inFlight, a.parkedCount]).toEqual([1, 1])
      gate.resolve()
      await settles(0, 'after the parked middleware finished')
    })

    it('abort while the body is still being sent: released once the middleware (reading the body) has failed', async () => {
      const a = await start()
      const { port, shutdown } = a
      const raw = await connect(port)
      raw.write('POST /slow HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\nonly ten b')
      await until(() => app?.hits.includes('/slow') === true, 2_000, 'the handler to start reading the body')
      expect(shutdown.inFlight).toBe(1)
      raw.socket.destroy()
      await settles(0, 'after the aborted read')
    })

    it('abort mid-response: the response closes first, the release waits for the still-running middleware', async () => {
      const a = await start()
      const { port, shutdown } = a
      const raw = await connect(port)
      raw.write(rawRequest('GET', '/partial'))
      const gate = await within(2_000, a.nextParked(), '/partial to park')
      await raw.waitFor('part 0\n')
      expect([shutdown.inFlight, a.parkedCount]).toEqual([1, 1])
      raw.socket.destroy()
      await within(2_000, responseClosed(gate.res), 'the server to see the abort')
      expect([shutdown.inFlight, a.parkedCount]).toEqual([1, 1])
      gate.resolve()
      await settles(0, 'after the middleware wrote into the closed response and returned')
    })

    it('stream body: counted after the middleware returned, until the stream has been sent in full', async () => {
      const a = await start()
      const { port, shutdown } = a
      const raw = await connect(port)
      raw.write(rawRequest('GET', '/stream'))
      const gate = await within(2_000, a.nextParked(), '/stream to park')
      // Koa pipes a stream body only after the whole chain settled: the middleware has returned by now.
      await raw.waitFor('chunk 0\n')
      expect([shutdown.inFlight, a.parkedCount]).toEqual([1, 1])
      gate.resolve()
      await raw.waitFor('chunk 1\n\r\n0\r\n\r\n')
      await settles(0, 'after the last chunk')
      expect(raw.socket.destroyed).toBe(false) // served on a keep-alive connection
    })

    it('stream body aborted mid-response: released when the response closes; Koa destroys the stream, so its producer stops', async () => {
      const a = await start()
      const { port } = a
      const raw = await connect(port)
      raw.write(rawRequest('GET', '/stream'))
      const gate = await within(2_000, a.nextParked(), '/stream to park')
      await raw.waitFor('chunk 0\n')
      raw.socket.destroy()
      await within(2_000, responseClosed(gate.res), 'the server to see the abort')
      await settles(0, 'after the stream was destroyed')
    })

    it('thrown error: Koa still answers 500, and the request is released after that answer', async () => {
      const a = await start()
      const { port, shutdown } = a
      const pending = request(port, { agent: false, path: '/park-throw' })
      const gate = await within(2_000, a.nextParked(), '/park-throw to park')
      expect([shutdown.inFlight, a.parkedCount]).toEqual([1, 1])
      gate.resolve()
      const response = await within(2_000, pending, 'the 500')
      expect(response).toMatchObject({ status: 500, body: 'Internal Server Error' })
      await settles(0, 'after the 500')
      for (const path of ['/throw', '/reject']) {
        expect(await request(port, { agent: false, path })).toMatchObject({
          status: 500,
          body: 'Internal Server Error',
        })
      }
      await settles(0, 'after the synchronous throw and the rejection')
    })

    it('several parked at once: one fewer counted at each step, whatever way each ends', async () => {
      const a = await start()
      const { port, shutdown } = a
      const slow = request(port, { agent: false, path: '/slow' })
      const throwing = request(port, { agent: false, path: '/park-throw' })
      const gates = [
        await within(2_000, a.nextParked(), 'the first to park'),
        await within(2_000, a.nextParked(), 'the second to park'),
      ]
      const streamRaw = await connect(port)
      streamRaw.write(rawRequest('GET', '/stream'))
      gates.push(await within(2_000, a.nextParked(), '/stream to park'))
      const partialRaw = await connect(port)
      partialRaw.write(rawRequest('GET', '/partial'))
      gates.push(await within(2_000, a.nextParked(), '/partial to park'))
      await partialRaw.waitFor('part 0\n')
      expect([shutdown.inFlight, a.parkedCount]).toEqual([4, 4])

      const gateOf = (path: string) => {
        const gate = gates.find((entry) => entry.path === path)
        if (gate === undefined) throw new Error(`no parked ${path}`)
        return gate
      }
      gateOf('/slow').resolve()
      expect((await within(2_000, slow, '/slow')).body).toBe('slow 0')
      await settles(3, '/slow answered')

      gateOf('/park-throw').resolve()
      expect((await within(2_000, throwing, '/park-throw')).status).toBe(500)
      await settles(2, '/park-throw answered 500')

      partialRaw.socket.destroy()
      await within(2_000, responseClosed(gateOf('/partial').res), 'the /partial abort')
      await settles(2, '/partial aborted but its middleware still parked')
      gateOf('/partial').resolve()
      await settles(1, '/partial middleware finished')

      gateOf('/stream').resolve()
      await streamRaw.waitFor('0\r\n\r\n')
      await settles(0, '/stream sent in full')
    })
  },
)
