import http from 'node:http'
import { closeServer, type Deferred, deferred, listen, within } from '@lameduck/test-utils'
import type { Express, NextFunction, Request, Response } from 'express'
import { type GracefulMiddleware, type GracefulOptions, graceful, type Shutdown } from '../../src/index.ts'
import type { ExpressFactory } from './express.ts'

/** A running Express app with `graceful(options)` mounted first, and tools for parking handlers. */
export interface ExpressTestApp {
  readonly app: Express
  readonly middleware: GracefulMiddleware
  readonly server: http.Server
  readonly port: number
  readonly shutdown: Shutdown
  /** Paths whose route handler started, in order. */
  readonly hits: string[]
  /** What ran after the middleware: `mw <url>` from the next middleware, then each route handler's path. */
  readonly records: string[]
  /** For handlers: parks until the test resolves the gate handed out by `nextParked()`. */
  park(): Promise<void>
  /** Resolves with the gate of the next (or an already parked, unclaimed) handler. */
  nextParked(): Promise<Deferred<void>>
  readonly parkedCount: number
  close(): Promise<void>
}

/** Tools handed to the route builder. */
export interface RouteTools {
  /** Wraps a route handler: records its path, turns a rejection into `next(err)` (Express 4 style). */
  route(
    handler: (req: Request, res: Response, next: NextFunction) => unknown,
  ): (req: Request, res: Response, next: NextFunction) => void
  /** What `route` does first: records `req.path` in `hits` and `records` (for handlers not wrapped). */
  record(req: Request): void
  park(): Promise<void>
  readonly shutdown: Shutdown
}

/** Reads a request body; rejects when the client aborts. */
export function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.once('end', () => resolve(Buffer.concat(chunks)))
    req.once('error', reject)
  })
}

/**
 * Starts `express()` on 127.0.0.1 port 0 with `graceful(options)` mounted first and a recording
 * middleware after it, then the routes `build` adds. `attach: false` leaves the server to discovery.
 */
export async function startExpressApp(
  express: ExpressFactory,
  options: GracefulOptions,
  build: (app: Express, tools: RouteTools) => void,
  settings: { attach?: boolean } = {},
): Promise<ExpressTestApp> {
  const middleware = graceful(options)
  const { shutdown } = middleware
  const hits: string[] = []
  const records: string[] = []
  const unclaimed: Deferred<void>[] = []
  const claimers: Deferred<Deferred<void>>[] = []
  const gates = new Set<Deferred<void>>()

  function park(): Promise<void> {
    const gate = deferred<void>()
    gates.add(gate)
    const claimer = claimers.shift()
    if (claimer) claimer.resolve(gate)
    else unclaimed.push(gate)
    return gate.promise.finally(() => gates.delete(gate))
  }

  const app = express()
  app.set('env', 'test') // finalhandler prints error stacks outside 'test'
  app.use(middleware)
  app.use((req, _res, next) => {
    records.push(`mw ${req.url}`)
    next()
  })
  const record = (req: Request) => {
    hits.push(req.path)
    records.push(req.path)
  }
  const route: RouteTools['route'] = (handler) =>
    function recorded(req, res, next) {
      record(req)
      const result = handler(req, res, next)
      if (result instanceof Promise) result.catch(next)
    }
  build(app, { route, record, park, shutdown })

  const server = http.createServer(app)
  if (settings.attach !== false) shutdown.attach(server)
  const port = await listen(server)
  return {
    app,
    middleware,
    server,
    port,
    shutdown,
    hits,
    records,
    park,
    nextParked() {
      const gate = unclaimed.shift()
      if (gate) return Promise.resolve(gate)
      const claimer = deferred<Deferred<void>>()
      claimers.push(claimer)
      return claimer.promise
    },
    get parkedCount() {
      return gates.size
    },
    async close() {
      for (const gate of gates) gate.resolve()
      await closeServer(server)
      // A Shutdown passed in belongs to the test; one made here is finished so no listener outlives it.
      if (options.shutdown === undefined && shutdown.state !== 'closed') {
        await within(3_000, shutdown.force('test cleanup'), 'the cleanup shutdown')
      }
    },
  }
}
