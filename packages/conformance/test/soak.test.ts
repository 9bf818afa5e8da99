import http from 'node:http'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { createShutdown, onResponseClosed, writeRefusal } from '@lameduck/core'
import {
  type AdapterApp,
  type CreateAdapterApp,
  closeServer,
  listen,
  until,
  within,
} from '@lameduck/test-utils'
import { describe, expect, it } from 'vitest'
import { adapterApps as expressApps } from '../../express/test/app.ts'
import { createApp as createFastifyApp } from '../../fastify/test/app.ts'
import { createKoa2App, createKoaApp } from '../../koa/test/app.ts'
import { createRawApp } from '../src/raw-app.js'

// Soak: per adapter, many requests over keep-alive with random client aborts (mid-upload, mid-response,
// while the handler is parked), then a shutdown. CI runs a small version; `pnpm test:soak` (root)
// runs 100,000 requests per adapter (LAMEDUCK_SOAK=full, or LAMEDUCK_SOAK=<count>).
const SOAK = process.env.LAMEDUCK_SOAK
const REQUESTS = SOAK === 'full' ? 100_000 : Number(SOAK ?? 0) > 0 ? Number(SOAK) : 2_000
const CONCURRENCY = 16
/** The stated bound: heap growth after warm-up under 8 MiB plus 256 bytes per request (~32 MiB at 100,000). */
const HEAP_BOUND_BYTES = 8 * 1024 * 1024 + 256 * REQUESTS
// A safety net, not the target: 2,000 requests take about a second on an idle 2-core machine.
const TEST_TIMEOUT_MS = Math.max(30_000, REQUESTS * 10)

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

/** A small seeded PRNG (mulberry32): the same mix of operations on every run. */
function random(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

type Operation = 'fast' | 'echo' | 'slow' | 'abort-upload' | 'abort-response' | 'abort-parked'
const MIX: ReadonlyArray<[Operation, number]> = [
  ['fast', 0.55],
  ['echo', 0.15],
  ['slow', 0.1],
  ['abort-upload', 0.08],
  ['abort-response', 0.06],
  ['abort-parked', 0.06],
]

function pick(next: () => number): Operation {
  let roll = next()
  for (const [operation, share] of MIX) {
    roll -= share
    if (roll < 0) return operation
  }
  return 'fast'
}

/** Runs one operation; resolves with what the client saw. Completed requests are checked in full. */
function run(operation: Operation, port: number, agent: http.Agent): Promise<'ok' | 'aborted'> {
  return new Promise((resolve, reject) => {
    const fail = (why: string) => reject(new Error(`${operation}: ${why}`))
    const expectBody = (res: http.IncomingMessage, body: string) => {
      let text = ''
      res.setEncoding('latin1')
      res.on('data', (chunk: string) => {
        text += chunk
      })
      res.on('end', () =>
        res.statusCode === 200 && text === body
          ? resolve('ok')
          : fail(`${res.statusCode} ${text.slice(0, 80)}`),
      )
      res.on('error', (error) => fail(error.message))
    }
    const options = { host: '127.0.0.1', port, agent }
    if (operation === 'fast' || operation === 'slow') {
      const req = http.get({ ...options, path: `/${operation}` }, (res) =>
        expectBody(res, operation === 'fast' ? 'fast' : 'slow 0'),
      )
      req.on('error', (error) => fail(error.message))
    } else if (operation === 'echo') {
      const body = 'e'.repeat(64)
      const req = http.request(
        { ...options, method: 'POST', path: '/echo', headers: { 'content-length': body.length } },
        (res) => expectBody(res, body),
      )
      req.on('error', (error) => fail(error.message))
      req.end(body)
    } else {
      const aborted = () => resolve('aborted')
      const path = operation === 'abort-upload' ? '/echo' : operation === 'abort-response' ? '/big' : '/slow'
      const req = http.request({ ...options, method: operation === 'abort-upload' ? 'POST' : 'GET', path })
      req.on('error', () => {})
      req.on('close', aborted)
      if (operation === 'abort-upload') {
        req.setHeader('content-length', '4096')
        req.write('a'.repeat(64), () => req.destroy())
      } else if (operation === 'abort-response') {
        req.on('response', (res) => res.once('data', () => req.destroy()))
        req.end()
      } else {
        req.end(() => req.destroy())
      }
    }
  })
}

function resources(): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const name of process.getActiveResourcesInfo()) counts[name] = (counts[name] ?? 0) + 1
  return counts
}

/** The resource kinds an app or a shutdown could leave behind. */
const WATCHED = ['TCPServerWrap', 'TCPSocketWrap', 'Timeout'] as const
const watched = (counts: Record<string, number>) =>
  Object.fromEntries(WATCHED.map((name) => [name, counts[name] ?? 0]))

function serverListeners(server: http.Server | import('node:net').Server): Record<string, number> {
  return Object.fromEntries(server.eventNames().map((name) => [String(name), server.listenerCount(name)]))
}

async function load(
  app: AdapterApp,
  requests: number,
  seed: number,
): Promise<{ ok: number; aborted: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY })
  const next = random(seed)
  let issued = 0
  const seen = { ok: 0, aborted: 0 }
  let releasing = true
  // Every parked handler (`/slow`, also one whose client left) is let go as soon as it parks.
  void (async () => {
    while (releasing) (await app.nextParked()).resolve()
  })()
  const worker = async () => {
    while (issued < requests) {
      issued++
      seen[await run(pick(next), app.port, agent)]++
    }
  }
  try {
    await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  } finally {
    releasing = false
    agent.destroy()
  }
  return seen
}

const apps: ReadonlyArray<[string, CreateAdapterApp]> = [
  ['node:http + core', createRawApp],
  ...expressApps.map(({ name, createApp }): [string, CreateAdapterApp] => [name, createApp]),
  ['Koa 2', createKoa2App],
  ['Koa 3', createKoaApp],
  ['Fastify 5', createFastifyApp],
]

describe(`soak: ${REQUESTS} requests per adapter with random client aborts, then a shutdown`, () => {
  for (const [index, [name, createApp]] of apps.entries()) {
    it(
      `${name}: inFlight 0 before the shutdown, heap growth < ${Math.round(HEAP_BOUND_BYTES / 1024 / 1024)} MiB, listeners and resources back after close`,
      async () => {
        gc()
        const signalsBefore = [process.listenerCount('SIGTERM'), process.listenerCount('SIGINT')]
        const resourcesBefore = watched(resources())
        // Real signal listeners (exit: false): the soak checks they are removed again.
        const app = await createApp({
          signals: ['SIGTERM', 'SIGINT'],
          exit: false,
          logger: false,
          timeoutMs: 5_000,
        })
        try {
          expect([process.listenerCount('SIGTERM'), process.listenerCount('SIGINT')]).toEqual(
            signalsBefore.map((n) => n + 1),
          )
          const warmUp = Math.max(200, Math.floor(REQUESTS / 20))
          await load(app, warmUp, index + 1)
          await until(() => app.shutdown.inFlight === 0, 5_000, 'the warm-up requests to be released')
          const listenersAfterWarmUp = serverListeners(app.server)
          gc()
          const heapBefore = process.memoryUsage().heapUsed
          const seen = await load(app, REQUESTS - warmUp, index + 101)
          expect(seen.ok + seen.aborted).toBe(REQUESTS - warmUp)
          expect(seen.aborted).toBeGreaterThan(0)
          await until(
            () => app.shutdown.inFlight === 0 && app.parkedCount === 0,
            5_000,
            'every request to be released',
          )
          expect(app.shutdown.inFlight).toBe(0)
          gc()
          const growth = process.memoryUsage().heapUsed - heapBefore
          console.info(
            `${name}: ${REQUESTS} requests (${seen.aborted} aborted), heap growth ${Math.round(growth / 1024)} KiB`,
          )
          expect(growth, `heap grew ${Math.round(growth / 1024)} KiB`).toBeLessThan(HEAP_BOUND_BYTES)
          // No per-request listener left on the server.
          expect(serverListeners(app.server)).toEqual(listenersAfterWarmUp)

          const report = await within(8_000, app.shutdown.close('soak'), 'the shutdown after the soak')
          expect(report).toMatchObject({ graceful: true, exitCode: 0, requests: { forced: 0 } })
        } finally {
          await within(8_000, app.close(), 'app.close()')
          // A failed assertion above must not leave this Shutdown's signal listeners to the next test.
          if (app.shutdown.state !== 'closed') await within(8_000, app.shutdown.force('cleanup'), 'force()')
        }
        expect([process.listenerCount('SIGTERM'), process.listenerCount('SIGINT')]).toEqual(signalsBefore)
        // Back to the snapshot or below: a kind can only go down when an earlier (failed) test's
        // server finished closing meanwhile; anything above it is this app's leak.
        const settled = () =>
          Object.entries(watched(resources())).every(([kind, n]) => n <= (resourcesBefore[kind] ?? 0))
        await until(settled, 3_000, `active resources back to ${JSON.stringify(resourcesBefore)}`).catch(
          () => {
            expect(watched(resources())).toEqual(resourcesBefore)
          },
        )
      },
      TEST_TIMEOUT_MS,
    )
  }

  it('a server attached to a Shutdown has its listeners back to the snapshot taken before createShutdown once closed', async () => {
    const server = http.createServer()
    const before = serverListeners(server)
    const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 2_000 })
    server.on('request', (req, res) => {
      const release = shutdown.enter(req, res)
      if (release === undefined) return writeRefusal(req, res, shutdown.refusal(req))
      onResponseClosed(res, release)
      res.end('ok')
    })
    const handler = server.listeners('request').at(-1)
    shutdown.attach(server)
    const port = await listen(server)
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 })
    for (let i = 0; i < 20; i++)
      await new Promise((resolve) =>
        http.get({ port, agent, path: '/' }, (res) => res.resume().on('end', resolve)),
      )
    agent.destroy()
    await shutdown.close('soak')
    await closeServer(server)
    server.off('request', handler as never)
    expect(serverListeners(server)).toEqual(before)
  })
})
