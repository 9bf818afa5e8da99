// A minimal Koa app with lameduck. Run it (`PORT=3000 node server.js`), then press Ctrl-C or
// `kill -TERM <pid>` while a request is in flight: it finishes, then the process exits on its own.
import { PassThrough } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { graceful } from '@lameduck/koa'
import Koa from 'koa'

// Stand-in for a database pool or a metrics client: it holds a timer (and would hold sockets), so
// the process cannot exit until it is closed — which is what the onClose hook below is for.
function createMetrics() {
  let requests = 0
  const timer = setInterval(() => console.log(`metrics: ${requests} request(s) so far`), 10_000)
  return {
    count: () => requests++,
    async close() {
      clearInterval(timer)
      console.log(`metrics: flushed (${requests} request(s)), closed`)
    },
  }
}

const metrics = createMetrics()
const lameduck = graceful({ timeoutMs: 10_000, health: true }) // GET /readyz and /livez
const { shutdown } = lameduck
shutdown.onClose('metrics', () => metrics.close()) // runs after the last request and job, newest first

const routes = {
  'GET /': (ctx) => {
    ctx.body = { hello: 'world' }
  },

  // A slow request: one in flight when SIGTERM arrives still gets its whole answer.
  'GET /slow': async (ctx) => {
    const ms = Math.min(Number(ctx.query.ms) || 1000, 10_000)
    console.log(`slow: working for ${ms} ms`)
    await sleep(ms)
    ctx.body = { done: true, ms }
  },

  // Background work that outlives its request: tracked, so the shutdown waits for it (or aborts
  // its signal at the deadline).
  'POST /jobs': (ctx) => {
    void shutdown.track('report', async (signal) => {
      await sleep(500, undefined, { signal })
      console.log('job: report sent')
    })
    ctx.status = 202
    ctx.body = { accepted: true }
  },

  // Server-sent events: a stream never ends by itself, so it ends when shutdown.signal aborts.
  'GET /events': (ctx) => {
    const stream = new PassThrough()
    let id = 0
    stream.write(`id: ${id}\ndata: hello\n\n`)
    const tick = setInterval(() => stream.write(`id: ${++id}\ndata: tick\n\n`), 1000)
    const end = () => stream.end('event: bye\ndata: server shutting down, reconnect elsewhere\n\n')
    // Begun after stopping began (a kept-alive connection's last request): end it at once.
    if (shutdown.signal.aborted) end()
    else shutdown.signal.addEventListener('abort', end, { once: true })
    ctx.res.on('close', () => {
      clearInterval(tick)
      shutdown.signal.removeEventListener('abort', end)
    })
    ctx.set('cache-control', 'no-store')
    ctx.type = 'text/event-stream'
    ctx.body = stream
  },
}

const app = new Koa()
app.use(lameduck) // first, before every other middleware
app.use(async (_ctx, next) => {
  metrics.count()
  await next()
})
app.use(async (ctx) => {
  await routes[`${ctx.method} ${ctx.path}`]?.(ctx)
})

const server = app.listen(Number(process.env.PORT ?? 3000), process.env.HOST, () => {
  console.log(`ready ${server.address().port}`)
})
shutdown.attach(server) // sees every connection from the start
