// A minimal Fastify app with lameduck. Run it (`PORT=3000 node server.js`), then press Ctrl-C or
// `kill -TERM <pid>` while a request is in flight: it finishes, then the process exits on its own.
import { PassThrough } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { graceful } from '@lameduck/fastify'
import Fastify from 'fastify'

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
// lameduck logs through Fastify's logger, so turn it on to see the shutdown.
const app = Fastify({ logger: true })
await app.register(graceful, { timeoutMs: 10_000, health: true }) // first; GET /readyz and /livez
const { shutdown } = app
shutdown.onClose('metrics', () => metrics.close()) // runs after the last request and job, newest first
app.addHook('onRequest', async () => {
  metrics.count()
})

app.get('/', async () => ({ hello: 'world' }))

// A slow request: one in flight when SIGTERM arrives still gets its whole answer.
app.get('/slow', async (request) => {
  const ms = Math.min(Number(request.query.ms) || 1000, 10_000)
  console.log(`slow: working for ${ms} ms`)
  await sleep(ms)
  return { done: true, ms }
})

// Background work that outlives its request: tracked, so the shutdown waits for it (or aborts its
// signal at the deadline).
app.post('/jobs', async (_request, reply) => {
  void shutdown.track('report', async (signal) => {
    await sleep(500, undefined, { signal })
    console.log('job: report sent')
  })
  return reply.code(202).send({ accepted: true })
})

// Server-sent events: a stream never ends by itself, so it ends when shutdown.signal aborts.
app.get('/events', (_request, reply) => {
  const stream = new PassThrough()
  let id = 0
  stream.write(`id: ${id}\ndata: hello\n\n`)
  const tick = setInterval(() => stream.write(`id: ${++id}\ndata: tick\n\n`), 1000)
  const end = () => stream.end('event: bye\ndata: server shutting down, reconnect elsewhere\n\n')
  // Begun after stopping began (a kept-alive connection's last request): end it at once.
  if (shutdown.signal.aborted) end()
  else shutdown.signal.addEventListener('abort', end, { once: true })
  reply.raw.on('close', () => {
    clearInterval(tick)
    shutdown.signal.removeEventListener('abort', end)
  })
  return reply.header('content-type', 'text/event-stream').header('cache-control', 'no-store').send(stream)
})

// Fastify listens on localhost unless told otherwise; a container needs 0.0.0.0.
await app.listen({ port: Number(process.env.PORT ?? 3000), host: process.env.HOST ?? '0.0.0.0' })
console.log(`ready ${app.server.address().port}`)
