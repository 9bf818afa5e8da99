import { PassThrough } from 'node:stream'
import type { AdapterApp, CreateAdapterApp, Deferred } from '@lameduck/test-utils'
import { deferred } from '@lameduck/test-utils'
import Fastify, { type FastifyInstance, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import { type GracefulOptions, graceful } from '../src/index.js'

/** What the Fastify app adds to the shared contract: the instance itself, for Fastify-only tests. */
export interface FastifyAdapterApp extends AdapterApp {
  readonly app: FastifyInstance
}

/**
 * The Fastify implementation of the shared adapter contract (`CreateAdapterApp` in
 * `@lameduck/test-utils`): `graceful` registered first, then the contract's routes.
 *
 * `settings.attach` is accepted but has no effect: the plugin itself attaches `app.server` (it
 * knows the server at register time), so there is nothing left to discover from a request.
 */
export const createApp: CreateAdapterApp = (options, settings) => createFastifyApp(options, settings)

/** {@link createApp} with Fastify server options (`http2`, `https`, `logger`…) and the instance exposed. */
export async function createFastifyApp(
  options: GracefulOptions,
  _settings: { attach?: boolean } = {},
  fastifyOptions: FastifyServerOptions = {},
): Promise<FastifyAdapterApp> {
  const app = Fastify({ logger: false, ...fastifyOptions }) as unknown as FastifyInstance
  await app.register(graceful, options)
  const { shutdown } = app

  const hits: string[] = []
  const parked = new Set<Deferred<void>>()
  // Parked gates not yet handed out, and nextParked() calls still waiting for one: each gate goes to
  // exactly one caller, in order, whichever of the two comes first.
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

  // Any body, any content type, as a Buffer: the contract's routes only measure or echo it.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body))
  const hit = (request: FastifyRequest) => hits.push(request.url.split('?')[0] ?? '')
  const bodyOf = (body: unknown): Buffer => (Buffer.isBuffer(body) ? body : Buffer.alloc(0))

  app.get('/fast', async (request) => {
    hit(request)
    return 'fast'
  })
  app.route({
    method: ['GET', 'POST'],
    url: '/slow',
    handler: async (request) => {
      hit(request)
      const length = bodyOf(request.body).length
      await park()
      return `slow ${length}`
    },
  })
  app.post('/echo', async (request, reply) => {
    hit(request)
    reply.type('text/plain')
    return bodyOf(request.body)
  })
  app.get('/stream', async (request, reply) => {
    hit(request)
    const body = new PassThrough()
    reply.type('text/plain').send(body)
    body.write('chunk 0\n')
    await park()
    body.end('chunk 1\n')
    return reply
  })
  app.get('/big', async (request, reply) => {
    hit(request)
    reply.type('text/plain')
    return Buffer.alloc(1024 * 1024, 'x')
  })
  app.get('/throw', (request) => {
    hit(request)
    throw new Error('thrown by /throw')
  })
  app.get('/reject', async (request) => {
    hit(request)
    throw new Error('rejected by /reject')
  })
  app.get('/sse', (request, reply) => {
    hit(request)
    const body = new PassThrough()
    reply.header('content-type', 'text/event-stream').header('cache-control', 'no-store').send(body)
    body.write('data: hello\n\n')
    const end = () => body.end()
    if (shutdown.signal.aborted) end()
    else {
      shutdown.signal.addEventListener('abort', end, { once: true })
      request.raw.once('close', () => shutdown.signal.removeEventListener('abort', end))
    }
    return reply
  })

  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0

  return {
    app,
    server: app.server,
    port,
    shutdown,
    hits,
    nextParked() {
      const gate = unclaimed.shift()
      if (gate) return Promise.resolve(gate)
      return new Promise((resolve) => claimers.push(resolve))
    },
    get parkedCount() {
      return parked.size
    },
    async close() {
      for (const gate of parked) gate.resolve()
      ;(app.server as { closeAllConnections?: () => void }).closeAllConnections?.()
      // The deadline now: hooks run (Fastify's close among them) with forcedHookTimeoutMs at most.
      await shutdown.force('test cleanup')
      await app.close()
    },
  }
}
