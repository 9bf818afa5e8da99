import type { AddressInfo } from 'node:net'
import { deferred } from '@lameduck/test-utils'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyServerOptions } from 'fastify'
import { type GracefulOptions, graceful } from '../../src/index.js'

const started = new Set<FastifyInstance>()

/**
 * A Fastify app with `graceful` registered first (`signals: false`, `logger: false` unless
 * overridden, or `options` as they are when they share a `shutdown`), then `setup(app)` for the test's own routes and hooks, listening on 127.0.0.1:0.
 */
export async function startFastify(
  setup: (app: FastifyInstance) => void,
  options: GracefulOptions = {},
  fastifyOptions: FastifyServerOptions = {},
): Promise<{ app: FastifyInstance; port: number }> {
  const app = Fastify({ logger: false, ...fastifyOptions }) as unknown as FastifyInstance
  started.add(app)
  await app.register(graceful, options.shutdown ? options : { signals: false, logger: false, ...options })
  setup(app)
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, port: (app.server.address() as AddressInfo).port }
}

/** For `afterEach`: every app started here is forced closed (sockets destroyed, hooks capped). */
export async function stopFastifyApps(): Promise<void> {
  const apps = [...started]
  started.clear()
  await Promise.all(
    apps.map(async (app) => {
      ;(app.server as { closeAllConnections?: () => void }).closeAllConnections?.()
      await app.shutdown.force('test cleanup')
      await app.close()
    }),
  )
}

/**
 * A hook (`preHandler`, `onRequest`…) that parks until `gate` opens — a session lookup, say, during
 * which the client gives up — then does `then(reply)`. `running` resolves when it starts,
 * `responseClosed` when the server sees its response close.
 */
export function parkingHook(then: (reply: FastifyReply) => unknown = () => undefined) {
  const running = deferred<void>()
  const responseClosed = deferred<void>()
  const gate = deferred<void>()
  const hook = async (_request: unknown, reply: FastifyReply): Promise<unknown> => {
    reply.raw.once('close', () => responseClosed.resolve())
    running.resolve()
    await gate.promise
    return then(reply)
  }
  return { hook, running: running.promise, responseClosed: responseClosed.promise, gate }
}
