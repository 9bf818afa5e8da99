import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import { PassThrough } from 'node:stream'
import {
  type AdapterApp,
  type CreateAdapterApp,
  closeServer,
  type Deferred,
  deferred,
  listen,
} from '@lameduck/test-utils'
import Koa3 from 'koa'
import Koa2 from 'koa2'
import { type GracefulOptions, graceful } from '../src/index.js'

/** The Koa class of either major version (both described by @types/koa). */
export type KoaClass = typeof Koa3

/** Koa 2 and Koa 3, for `describe.each`. */
export const koaVersions: ReadonlyArray<readonly [name: string, Koa: KoaClass]> = [
  ['koa 2', Koa2],
  ['koa 3', Koa3],
]

/** A handler parked on its deferred, with the path and Node response it will finish. */
export interface Parked extends Deferred<void> {
  readonly path: string
  readonly res: ServerResponse
}

/** The contract app plus what the Koa tests look at. */
export interface KoaTestApp extends AdapterApp {
  readonly app: Koa3
  /** Paths of every request that reached the middleware mounted right after `graceful()`, in order. */
  readonly reached: string[]
  nextParked(): Promise<Parked>
}

/**
 * Builds the {@link AdapterApp} of the conformance suite on `Koa`: `graceful(options)` first, then a
 * middleware recording `reached`, then the contract's routes (see adapter-contract.ts) and these:
 *
 * - `GET /partial`    → 200, writes `part 0\n` on `ctx.res`, parks, then ends with `part 1\n` (the middleware runs on mid-response)
 * - `GET /park-throw` → parks, then throws (Koa answers 500)
 * - `GET /state`      → 200 `same` when `ctx.state.shutdown` is the app's Shutdown
 *
 * `/stream` and `/sse` set a stream as `ctx.body`: Koa sends it after the middleware returned. The
 * `/stream` producer stops (unparks) when its stream is destroyed, as after a client abort.
 */
export function createAppWith(
  Koa: KoaClass,
): (options: GracefulOptions, settings?: { attach?: boolean }) => Promise<KoaTestApp> {
  return async (options, settings = {}) => {
    const mw = graceful(options)
    const { shutdown } = mw
    const hits: string[] = []
    const reached: string[] = []
    const parked = new Set<Parked>()
    const unclaimed: Parked[] = []
    const waiting: Array<(entry: Parked) => void> = []

    function park(path: string, res: ServerResponse): Parked {
      const gate = deferred<void>()
      const entry: Parked = {
        path,
        res,
        promise: gate.promise,
        resolve: gate.resolve,
        reject: gate.reject,
        get settled() {
          return gate.settled
        },
      }
      parked.add(entry)
      // Settled entries are forgotten: the soak parks tens of thousands of requests.
      const forget = () => parked.delete(entry)
      void gate.promise.then(forget, forget)
      const waiter = waiting.shift()
      if (waiter) waiter(entry)
      else unclaimed.push(entry)
      return entry
    }

    type Handler = (ctx: Koa3.Context) => unknown
    const routes: Record<string, Handler> = {
      'GET /fast': (ctx) => {
        ctx.body = 'fast'
      },
      'GET /slow': slow,
      'POST /slow': slow,
      'POST /echo': async (ctx) => {
        ctx.body = (await readBody(ctx.req)).toString()
      },
      'GET /stream': (ctx) => {
        const body = new PassThrough()
        ctx.type = 'text/plain'
        ctx.body = body
        body.write('chunk 0\n')
        const gate = park(ctx.path, ctx.res)
        body.once('close', () => gate.resolve())
        void gate.promise.then(() => {
          if (!body.destroyed) body.end('chunk 1\n')
        })
      },
      'GET /big': (ctx) => {
        ctx.body = Buffer.alloc(1024 * 1024, 'x')
      },
      'GET /throw': () => {
        throw new Error('thrown by /throw')
      },
      'GET /reject': async () => {
        await Promise.resolve()
        throw new Error('rejected by /reject')
      },
      'GET /sse': (ctx) => {
        const stream = new PassThrough()
        ctx.type = 'text/event-stream'
        ctx.set('cache-control', 'no-cache')
        ctx.body = stream
        stream.write('data: hello\n\n')
        const { signal } = ctx.state.shutdown
        const end = () => stream.end()
        if (signal.aborted) return end()
        signal.addEventListener('abort', end, { once: true })
        stream.once('close', () => signal.removeEventListener('abort', end))
      },
      'GET /partial': async (ctx) => {
        ctx.respond = false
        ctx.res.writeHead(200, { 'content-type': 'text/plain' })
        ctx.res.write('part 0\n')
        await park(ctx.path, ctx.res).promise
        ctx.res.end('part 1\n')
      },
      'GET /park-throw': async (ctx) => {
        await park(ctx.path, ctx.res).promise
        throw new Error('thrown by /park-throw')
      },
      'GET /state': (ctx) => {
        ctx.body = ctx.state.shutdown === shutdown ? 'same' : 'missing'
      },
    }

    async function slow(ctx: Koa3.Context): Promise<void> {
      const body = await readBody(ctx.req)
      await park(ctx.path, ctx.res).promise
      ctx.body = `slow ${body.length}`
    }

    const app = new Koa()
    app.silent = true // the 500s are expected; Koa would log each one
    app.use(mw)
    app.use(function downstream(ctx, next) {
      reached.push(ctx.path)
      return next()
    })
    app.use(function router(ctx, next) {
      const handler = routes[`${ctx.method} ${ctx.path}`]
      if (handler === undefined) return next()
      hits.push(ctx.path)
      return handler(ctx) // not awaited here: `/throw` throws synchronously, as the contract asks
    })

    const server = http.createServer(app.callback())
    if (settings.attach !== false) shutdown.attach(server)
    const port = await listen(server)
    return {
      app,
      server,
      port,
      shutdown,
      hits,
      reached,
      nextParked: () => {
        const entry = unclaimed.shift()
        return entry ? Promise.resolve(entry) : new Promise<Parked>((resolve) => waiting.push(resolve))
      },
      get parkedCount() {
        let count = 0
        for (const entry of parked) if (!entry.settled) count++
        return count
      },
      close: () => closeServer(server),
    }
  }
}

/** The conformance app on Koa 3. */
export const createKoaApp: CreateAdapterApp = createAppWith(Koa3)
/** The conformance app on Koa 2. */
export const createKoa2App: CreateAdapterApp = createAppWith(Koa2)

/** Reads the whole request body; rejects when the client aborts before the end. */
function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.once('end', () => resolve(Buffer.concat(chunks)))
    req.once('error', reject)
    req.once('close', () => {
      if (!req.complete) reject(new Error('request aborted before its body ended'))
    })
  })
}
