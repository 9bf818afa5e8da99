import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import {
  type AdapterOptions,
  healthAnswer,
  onResponseClosed,
  resolveAdapterOptions,
  type Shutdown,
  writeRefusal,
} from '@lameduck/core'
import {
  type AdapterApp,
  type CreateAdapterApp,
  closeServer,
  type Deferred,
  deferred,
  listen,
} from '@lameduck/test-utils'

type Route = (req: IncomingMessage, res: ServerResponse) => unknown

/**
 * The reference "adapter": a plain `node:http` server using `@lameduck/core` the way an adapter
 * does — probes first, `enter(req, res)`, the refusal written raw — and releasing each request once
 * its response has closed AND its handler has settled (the strongest rule an adapter can follow;
 * issue 3 item 9). Implements the `CreateAdapterApp` contract so `describeAdapter` runs against the
 * core with no framework in between.
 */
export const createRawApp: CreateAdapterApp = async (options: AdapterOptions, settings = {}) => {
  const { shutdown, health } = resolveAdapterOptions(options)
  const hits: string[] = []
  const parked = new Set<Deferred<void>>()
  // Each parked gate goes to exactly one nextParked() caller, in order, whichever comes first.
  const unclaimed: Deferred<void>[] = []
  const claimers: Array<(gate: Deferred<void>) => void> = []

  function park(): Promise<void> {
    const gate = deferred<void>()
    parked.add(gate)
    const claimer = claimers.shift()
    if (claimer) claimer(gate)
    else unclaimed.push(gate)
    return gate.promise.finally(() => parked.delete(gate))
  }

  const routes = createRoutes(shutdown, park)

  const server = http.createServer((req, res) => {
    const probe = healthAnswer(shutdown, health, req.method, req.url)
    if (probe !== undefined) {
      res.writeHead(probe.status, probe.headers).end(probe.body)
      return
    }
    const release = shutdown.enter(req, res)
    if (release === undefined) {
      writeRefusal(req, res, shutdown.refusal(req))
      return
    }
    let handlerSettled = false
    let responseClosed = false
    onResponseClosed(res, () => {
      responseClosed = true
      if (handlerSettled) release()
    })
    const settle = () => {
      handlerSettled = true
      if (responseClosed) release()
    }
    const path = (req.url ?? '/').split('?')[0] ?? '/'
    const route = routes[`${req.method} ${path}`]
    if (route === undefined) {
      send(res, 404, 'not found')
      settle()
      return
    }
    hits.push(path)
    let result: unknown
    try {
      result = route(req, res)
    } catch (error) {
      fail(res, error)
      settle()
      return
    }
    Promise.resolve(result).then(settle, (error: unknown) => {
      fail(res, error)
      settle()
    })
  })
  if (settings.attach !== false) shutdown.attach(server)
  const port = await listen(server)

  const app: AdapterApp = {
    server,
    port,
    shutdown,
    hits,
    nextParked() {
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
  return app
}

function createRoutes(shutdown: Shutdown, park: () => Promise<void>): Record<string, Route> {
  const slow: Route = async (req, res) => {
    const body = await readBody(req)
    await park()
    send(res, 200, `slow ${body.length}`)
  }
  return {
    'GET /fast': (_req, res) => send(res, 200, 'fast'),
    'GET /slow': slow,
    'POST /slow': slow,
    'POST /echo': async (req, res) => send(res, 200, await readBody(req)),
    'GET /stream': async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('chunk 0\n')
      await park()
      res.end('chunk 1\n')
    },
    'GET /big': (_req, res) => send(res, 200, Buffer.alloc(1024 * 1024, 'x')),
    'GET /throw': () => {
      throw new Error('thrown by /throw')
    },
    'GET /reject': async () => {
      await Promise.resolve()
      throw new Error('rejected by /reject')
    },
    'GET /sse': async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' })
      res.write('data: hello\n\n')
      if (!shutdown.signal.aborted) {
        await new Promise<void>((resolve) => {
          const done = () => {
            shutdown.signal.removeEventListener('abort', done)
            res.off('close', done)
            resolve()
          }
          shutdown.signal.addEventListener('abort', done)
          res.once('close', done)
        })
      }
      res.end()
    },
  }
}

function send(res: ServerResponse, status: number, body: string | Buffer): void {
  res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) }).end(body)
}

/** What a framework does with a handler error: a 500 when nothing was sent yet, else cut the response. */
function fail(res: ServerResponse, _error: unknown): void {
  if (res.headersSent) res.destroy()
  else send(res, 500, 'Internal Server Error')
}

/** The whole body; after a client abort, what arrived (the handler then finishes unseen). */
async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  try {
    for await (const chunk of req) chunks.push(chunk as Buffer)
  } catch {
    // The client went away mid-body: its response closes with the socket.
  }
  return Buffer.concat(chunks)
}
