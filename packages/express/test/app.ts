import http, { type IncomingMessage } from 'node:http'
import type { AdapterApp, CreateAdapterApp, Deferred } from '@lameduck/test-utils'
import { closeServer, deferred, listen } from '@lameduck/test-utils'
import express5, { type NextFunction, type Request, type RequestHandler, type Response } from 'express'
import { graceful } from '../src/index.js'
import { type ExpressFactory, expressVersions } from './helpers/express.js'

/**
 * The Express implementation of the shared adapter contract (`CreateAdapterApp` in
 * `@lameduck/test-utils`): `graceful(options)` mounted first, then the contract's routes.
 *
 * - {@link createApp}: Express 5, the one a suite that runs one app per adapter should use.
 * - {@link adapterApps}: Express 4 and 5, for `describe.each(adapterApps)`.
 * - {@link createExpressApp}: the same app on any `express` default export.
 */
export function createExpressApp(express: ExpressFactory, major: number): CreateAdapterApp {
  return async (options, settings = {}) => {
    const mw = graceful(options)
    const { shutdown } = mw
    const app = express()
    // finalhandler prints every 500's stack unless the env is 'test'; /throw and /reject would be noise.
    app.set('env', 'test')
    app.use(mw)

    const hits: string[] = []
    const parked = new Set<Deferred<void>>()
    // Parked gates not yet handed out, and nextParked() calls still waiting for one: each gate goes
    // to exactly one caller, in order, whichever of the two comes first.
    const unclaimed: Deferred<void>[] = []
    const claimers: Array<(gate: Deferred<void>) => void> = []
    const park = (): Promise<void> => {
      const gate = deferred<void>()
      parked.add(gate)
      const claimer = claimers.shift()
      if (claimer) claimer(gate)
      else unclaimed.push(gate)
      return gate.promise.finally(() => parked.delete(gate))
    }
    // Express 4 does not catch a rejected handler's promise; its users pass it to next() themselves.
    const handle = (
      handler: (req: Request, res: Response, next: NextFunction) => Promise<void>,
    ): RequestHandler =>
      function route(req, res, next) {
        hits.push(req.path)
        const settled = handler(req, res, next)
        if (major < 5) settled.catch(next)
        return settled
      }

    app.get(
      '/fast',
      handle(async (_req, res) => void res.send('fast')),
    )
    const slow = handle(async (req, res) => {
      const body = await readBody(req)
      await park()
      res.send(`slow ${body.length}`)
    })
    app.get('/slow', slow)
    app.post('/slow', slow)
    app.post(
      '/echo',
      handle(async (req, res) => void res.send(await readBody(req))),
    )
    app.get(
      '/stream',
      handle(async (_req, res) => {
        res.type('text/plain')
        res.write('chunk 0\n')
        await park()
        res.end('chunk 1\n')
      }),
    )
    app.get(
      '/big',
      handle(async (_req, res) => void res.type('text/plain').send(Buffer.alloc(1024 * 1024, 'x'))),
    )
    app.get(
      '/throw',
      handle(() => {
        throw new Error('thrown by /throw')
      }),
    )
    app.get(
      '/reject',
      handle(async () => {
        await Promise.resolve()
        throw new Error('rejected by /reject')
      }),
    )
    app.get(
      '/sse',
      handle(async (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' })
        res.write('data: hello\n\n')
        if (!shutdown.signal.aborted) {
          await new Promise<void>((resolve) => {
            shutdown.signal.addEventListener('abort', () => resolve(), { once: true })
            res.once('close', resolve)
          })
        }
        res.end()
      }),
    )

    const server = http.createServer(app)
    if (settings.attach !== false) shutdown.attach(server)
    const port = await listen(server)

    const adapterApp: AdapterApp = {
      server,
      port,
      shutdown,
      hits,
      nextParked: () => {
        const gate = unclaimed.shift()
        return gate ? Promise.resolve(gate) : new Promise((resolve) => claimers.push(resolve))
      },
      get parkedCount() {
        return parked.size
      },
      async close() {
        for (const gate of parked) gate.resolve()
        await closeServer(server)
      },
    }
    return adapterApp
  }
}

/** Express 5: the app a suite running one app per adapter uses. */
export const createApp: CreateAdapterApp = createExpressApp(express5, 5)

/** Both supported majors, for `describe.each(adapterApps)('$name', ({ createApp }) => …)`. */
export const adapterApps: ReadonlyArray<{ name: string; createApp: CreateAdapterApp }> = expressVersions.map(
  (version) => ({ name: version.name, createApp: createExpressApp(version.express, version.major) }),
)

/** The whole request body; an aborted upload yields what arrived (the handler then parks or ends unseen). */
async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  try {
    for await (const chunk of req) chunks.push(chunk as Buffer)
  } catch {
    // The client went away mid-body: nothing to answer, the response closes with the socket.
  }
  return Buffer.concat(chunks)
}
