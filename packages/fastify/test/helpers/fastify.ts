import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
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
