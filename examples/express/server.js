// A minimal Express app with lameduck. Run it (`PORT=3000 node server.js`), then press Ctrl-C or
// `kill -TERM <pid>` while a request is in flight: it finishes, then the process exits on its own.
import { setTimeout as sleep } from 'node:timers/promises'
import { graceful } from '@lameduck/express'
import express from 'express'

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

const app = express()
app.use(lameduck) // first, before every other middleware
app.use((_req, _res, next) => {
  metrics.count()
  next()
})

app.get('/', (_req, res) => {
  res.json({ hello: 'world' })
})

// A slow request: one in flight when SIGTERM arrives still gets its whole answer.
app.get('/slow', async (req, res) => {
  const ms = Math.min(Number(req.query.ms) || 1000, 10_000)
  console.log(`slow: working for ${ms} ms`)
  await sleep(ms)
  res.json({ done: true, ms })
})

// Background work that outlives its request: tracked, so the shutdown waits for it (or aborts its
// signal at the deadline).
app.post('/jobs', (_req, res) => {
  void shutdown.track('report', async (signal) => {
    await sleep(500, undefined, { signal })
    console.log('job: report sent')
  })
  res.status(202).json({ accepted: true })
})

// Server-sent events: a stream never ends by itself, so it ends when shutdown.signal aborts.
app.get('/events', (_req, res) => {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' })
  let id = 0
  res.write(`id: ${id}\ndata: hello\n\n`)
  const tick = setInterval(() => res.write(`id: ${++id}\ndata: tick\n\n`), 1000)
  const end = () => res.end('event: bye\ndata: server shutting down, reconnect elsewhere\n\n')
  // Begun after stopping began (a kept-alive connection's last request): end it at once.
  if (shutdown.signal.aborted) end()
  else shutdown.signal.addEventListener('abort', end, { once: true })
  res.on('close', () => {
    clearInterval(tick)
    shutdown.signal.removeEventListener('abort', end)
  })
})

const server = app.listen(Number(process.env.PORT ?? 3000), process.env.HOST, () => {
  console.log(`ready ${server.address().port}`)
})
shutdown.attach(server) // sees every connection from the start
