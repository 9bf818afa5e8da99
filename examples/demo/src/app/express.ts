import { once } from 'node:events'
import type { Server } from 'node:http'
import express, { type RequestHandler } from 'express'
import { type AppContext, closeJournal, fireAndForget } from './context.js'
import { createOrders, invalidOrder, type Services } from './orders.js'

// The app itself: identical under both shutdowns. Only what is mounted first differs.
function createApp(services: Services, first?: RequestHandler): express.Express {
  const orders = createOrders(services)
  const app = express()
  if (first) app.use(first)
  app.get('/fast', (_req, res) => {
    res.json({ ok: true })
  })
  app.post('/orders', express.json(), async (req, res) => {
    const problem = invalidOrder(req.body)
    if (problem !== undefined) {
      res.status(400).json({ error: problem })
      return
    }
    res.status(201).json(await orders.place(req.body))
  })
  return app
}

async function listen(app: express.Express, port: number): Promise<Server> {
  const server = app.listen(port, '127.0.0.1')
  await once(server, 'listening')
  return server
}

/** Express with `graceful()` mounted first; the journal is closed in an `onClose` hook. */
export async function startLameduck(ctx: AppContext): Promise<Server> {
  const { graceful } = await import('@lameduck/express')
  const middleware = graceful({ timeoutMs: ctx.timeoutMs, idleGraceMs: ctx.idleGraceMs, health: true })
  const { shutdown } = middleware
  const app = createApp(
    { journal: ctx.journal, runJob: (label, job) => void shutdown.track(label, job) },
    middleware,
  )
  shutdown.onClose('journal', () => closeJournal(ctx.journal), { timeoutMs: ctx.hookTimeoutMs })
  shutdown.on('closed', (report) => ctx.printReport(report))
  return shutdown.attach(await listen(app, ctx.port))
}

/** Express shut down as its docs show: SIGTERM → `server.close()`, exit in its callback (journal closed first). */
export async function startBaseline(ctx: AppContext): Promise<Server> {
  const app = createApp({ journal: ctx.journal, runJob: fireAndForget })
  const server = await listen(app, ctx.port)
  process.once('SIGTERM', () => {
    console.error('SIGTERM: server.close()')
    server.close(() => {
      closeJournal(ctx.journal).then(
        () => process.exit(0),
        () => process.exit(1),
      )
    })
  })
  return server
}
