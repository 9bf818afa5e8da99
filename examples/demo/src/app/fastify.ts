import type { Server } from 'node:http'
import Fastify, { type FastifyInstance, LogController } from 'fastify'
import { type AppContext, closeJournal, fireAndForget } from './context.js'
import { createOrders, invalidOrder, type OrderInput, type Services } from './orders.js'

// Fastify logs through its own pino logger, which is off unless configured, and the lameduck plugin
// logs there too. Both apps turn it on the same way, without the per-request lines.
function createFastify(): FastifyInstance {
  return Fastify({
    logger: { level: 'info' },
    logController: new LogController({ disableRequestLogging: true }),
  })
}

// The routes: identical under both shutdowns.
function addRoutes(app: FastifyInstance, services: Services): void {
  const orders = createOrders(services)
  app.get('/fast', async () => ({ ok: true }))
  app.post('/orders', async (request, reply) => {
    const problem = invalidOrder(request.body)
    if (problem !== undefined) return reply.code(400).send({ error: problem })
    const placed = await orders.place(request.body as OrderInput)
    return reply.code(201).send(placed)
  })
}

/** Fastify with the lameduck plugin registered first; the journal is closed in an `onClose` hook. */
export async function startLameduck(ctx: AppContext): Promise<Server> {
  const { graceful } = await import('@lameduck/fastify')
  const app = createFastify()
  await app.register(graceful, { timeoutMs: ctx.timeoutMs, idleGraceMs: ctx.idleGraceMs, health: true })
  const { shutdown } = app
  addRoutes(app, { journal: ctx.journal, runJob: (label, job) => void shutdown.track(label, job) })
  shutdown.onClose('journal', () => closeJournal(ctx.journal), { timeoutMs: ctx.hookTimeoutMs })
  shutdown.on('closed', (report) => ctx.printReport(report))
  await app.listen({ port: ctx.port, host: '127.0.0.1' })
  return app.server
}

/** Fastify's own shutdown: SIGTERM → `app.close()` (its onClose hook closes the journal), then exit. */
export async function startBaseline(ctx: AppContext): Promise<Server> {
  const app = createFastify()
  app.addHook('onClose', () => closeJournal(ctx.journal))
  addRoutes(app, { journal: ctx.journal, runJob: fireAndForget })
  await app.listen({ port: ctx.port, host: '127.0.0.1' })
  process.once('SIGTERM', () => {
    console.error('SIGTERM: app.close()')
    app.close().then(
      () => process.exit(0),
      () => process.exit(1),
    )
  })
  return app.server
}
