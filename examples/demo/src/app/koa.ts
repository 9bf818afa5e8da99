import { once } from 'node:events'
import type { IncomingMessage, Server } from 'node:http'
import Koa, { type Middleware } from 'koa'
import { type AppContext, closeJournal, fireAndForget } from './context.js'
import { createOrders, invalidOrder, type Services } from './orders.js'

const MAX_BODY_BYTES = 64 * 1024

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_BODY_BYTES) throw Object.assign(new Error('body too large'), { status: 413, expose: true })
    chunks.push(chunk)
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    throw Object.assign(new Error('body is not valid JSON'), { status: 400, expose: true })
  }
}

// The app itself: identical under both shutdowns. Only what is mounted first differs.
function createApp(services: Services, first?: Middleware): Koa {
  const orders = createOrders(services)
  const app = new Koa()
  if (first) app.use(first)
  app.use(async (ctx) => {
    if (ctx.method === 'GET' && ctx.path === '/fast') {
      ctx.body = { ok: true }
    } else if (ctx.method === 'POST' && ctx.path === '/orders') {
      const body = await readJson(ctx.req)
      const problem = invalidOrder(body)
      if (problem !== undefined) {
        ctx.status = 400
        ctx.body = { error: problem }
        return
      }
      ctx.body = await orders.place(body as { item: string; qty: number })
      ctx.status = 201
    }
  })
  return app
}

async function listen(app: Koa, port: number): Promise<Server> {
  const server = app.listen(port, '127.0.0.1')
  await once(server, 'listening')
  return server
}

/** Koa with `graceful()` mounted first; the journal is closed in an `onClose` hook. */
export async function startLameduck(ctx: AppContext): Promise<Server> {
  const { graceful } = await import('@lameduck/koa')
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

/** Koa shut down the usual way: SIGTERM → `server.close()`, exit in its callback (journal closed first). */
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
