// One benchmark server, run as a child process: `node --expose-gc server.mjs '<json config>'`.
// Config: { fw: 'express'|'koa'|'fastify', lib: a key of LIBRARIES, timeoutMs, health, noop (the empty-middleware arm), maxLifeMs, probe }.
// Prints `ready <port>`; `held <n>` once n /hold requests are in their handlers; on SIGUSR2 prints
// `mem <json>` after two GCs and, if requests are held, releases them 500 ms later.
import { performance } from 'node:perf_hooks'
import { Readable } from 'node:stream'
import { ADAPTERS } from './libraries.mjs'
import { pattern } from './pattern.mjs'

const config = JSON.parse(process.argv[2] ?? '{}')
const { fw, lib, timeoutMs, health = false, noop = false, maxLifeMs = 120_000, probe = false } = config

// Bounded even if the bench is SIGKILLed: unref'd, so it never keeps the process alive itself.
setTimeout(() => {
  process.stderr.write(`bench server: max life of ${maxLifeMs} ms reached, exiting\n`)
  process.exit(98)
}, maxLifeMs).unref()

const KEEP_ALIVE_TIMEOUT_MS = 65_000
const HEADERS_TIMEOUT_MS = 66_000
const HELLO = 'hello world'
const OCTETS = 'application/octet-stream'

// --- handlers shared by the three frameworks ---------------------------------------------------

function query(url) {
  const at = url.indexOf('?')
  return new URLSearchParams(at === -1 ? '' : url.slice(at + 1))
}

function number(params, name, fallback) {
  const value = Number(params.get(name))
  return Number.isFinite(value) && params.has(name) ? value : fallback
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** `/slow?ms&bytes`: waits, then answers `bytes` of the byte-checkable pattern. */
async function slowBody(url) {
  const params = query(url)
  await sleep(number(params, 'ms', 1_500))
  return pattern(number(params, 'bytes', 65_536))
}

/** `/stream?chunks&bytes&everyMs`: a chunked body, one chunk of the pattern every `everyMs`. */
function streamBody(url) {
  const params = query(url)
  const chunks = number(params, 'chunks', 32)
  const size = number(params, 'bytes', 2_048)
  const everyMs = number(params, 'everyMs', 50)
  let sent = 0
  let timer
  const readable = new Readable({
    read() {},
    destroy(error, callback) {
      clearInterval(timer)
      callback(error)
    },
  })
  timer = setInterval(() => {
    readable.push(pattern(size, sent * size))
    sent++
    if (sent === chunks) {
      clearInterval(timer)
      readable.push(null)
    }
  }, everyMs)
  return readable
}

const held = new Set()
let holdLimit

/** `/hold?n&bytes`: held until the SIGUSR2 after `n` are in (or 15 s at most), then `bytes` of pattern. */
function holdBody(url) {
  const params = query(url)
  const announce = number(params, 'n', 0)
  const bytes = number(params, 'bytes', 1_024)
  return new Promise((resolve) => {
    held.add(() => resolve(pattern(bytes)))
    if (held.size === 1) holdLimit = setTimeout(releaseAll, 15_000)
    if (held.size === announce) console.log(`held ${announce}`)
  })
}

function releaseAll() {
  clearTimeout(holdLimit)
  const waiting = [...held]
  held.clear()
  for (const resolve of waiting) resolve()
}

process.on('SIGUSR2', () => {
  globalThis.gc?.()
  globalThis.gc?.()
  const { rss, heapUsed, external, arrayBuffers } = process.memoryUsage()
  console.log(`mem ${JSON.stringify({ rss, heapUsed, external, arrayBuffers, held: held.size })}`)
  if (held.size > 0) setTimeout(releaseAll, 500)
})

// --- the three apps ------------------------------------------------------------------------------

function lameduckOptions() {
  return { timeoutMs, ...(health ? { health: true } : {}) }
}

async function expressServer() {
  const { default: express } = await import('express')
  const app = express()
  let middleware
  if (lib === 'lameduck') {
    const { graceful } = await import(ADAPTERS.express)
    middleware = graceful(lameduckOptions())
    app.use(middleware)
  }
  if (noop) app.use((_req, _res, next) => next())
  app.get('/', (_req, res) => {
    res.send(HELLO)
  })
  app.get('/slow', async (req, res) => {
    res.type(OCTETS).send(await slowBody(req.url))
  })
  app.get('/hung', () => {})
  app.get('/stream', (req, res) => {
    res.type(OCTETS)
    streamBody(req.url).pipe(res)
  })
  app.get('/hold', async (req, res) => {
    res.type(OCTETS).send(await holdBody(req.url))
  })
  const server = await listen(app)
  middleware?.shutdown.attach(server)
  return { server }
}

async function koaServer() {
  const { default: Koa } = await import('koa')
  const app = new Koa()
  let middleware
  if (lib === 'lameduck') {
    const { graceful } = await import(ADAPTERS.koa)
    middleware = graceful(lameduckOptions())
    app.use(middleware)
  }
  if (noop) app.use((_ctx, next) => next())
  app.use(async (ctx) => {
    switch (ctx.path) {
      case '/':
        ctx.body = HELLO
        return
      case '/slow':
        ctx.type = OCTETS
        ctx.body = await slowBody(ctx.url)
        return
      case '/hung':
        await new Promise(() => {})
        return
      case '/stream':
        ctx.type = OCTETS
        ctx.body = streamBody(ctx.url)
        return
      case '/hold':
        ctx.type = OCTETS
        ctx.body = await holdBody(ctx.url)
        return
      default:
        ctx.status = 404
    }
  })
  const server = await listen(app)
  middleware?.shutdown.attach(server)
  return { server }
}

async function fastifyServer() {
  const { default: Fastify } = await import('fastify')
  const app = Fastify({ logger: false, keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS })
  if (lib === 'lameduck') {
    const { graceful } = await import(ADAPTERS.fastify)
    await app.register(graceful, lameduckOptions())
  }
  if (noop) {
    app.addHook('onRoute', (route) => {
      const handler = route.handler
      route.handler = function passThrough(request, reply) {
        return handler.call(this, request, reply)
      }
    })
    app.addHook('onRequest', (_request, _reply, done) => done())
  }
  app.get('/', async () => HELLO)
  app.get('/slow', async (req, reply) => {
    const body = await slowBody(req.url)
    return reply.type(OCTETS).send(body)
  })
  app.get('/hung', () => {})
  app.get('/stream', (req, reply) => {
    reply.type(OCTETS).send(streamBody(req.url))
  })
  app.get('/hold', async (req, reply) => {
    const body = await holdBody(req.url)
    return reply.type(OCTETS).send(body)
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  app.server.headersTimeout = HEADERS_TIMEOUT_MS
  return { server: app.server, app }
}

function listen(app) {
  return new Promise((resolve, reject) => {
    const server = app.listen(0, '127.0.0.1', () => resolve(server))
    server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS
    server.headersTimeout = HEADERS_TIMEOUT_MS
    server.once('error', reject)
  })
}

// --- the server-level libraries, as described in libraries.mjs -----------------------------------

async function wire(server, app) {
  switch (lib) {
    case 'none':
    case 'lameduck':
      return
    case 'http-terminator': {
      const { createHttpTerminator } = await import('http-terminator')
      const terminator = createHttpTerminator({ server, gracefulTerminationTimeout: timeoutMs })
      process.once('SIGTERM', () => {
        terminator.terminate().catch((error) => console.error(error))
      })
      return
    }
    case 'stoppable': {
      const { default: stoppable } = await import('stoppable')
      stoppable(server, timeoutMs)
      process.once('SIGTERM', () => server.stop())
      return
    }
    case 'terminus': {
      const { createTerminus } = await import('@godaddy/terminus')
      createTerminus(server, { timeout: timeoutMs, useExit0: true })
      return
    }
    case 'http-graceful-shutdown': {
      const { default: gracefulShutdown } = await import('http-graceful-shutdown')
      gracefulShutdown(server, { timeout: timeoutMs, signals: 'SIGINT SIGTERM' })
      return
    }
    case 'close-all': {
      process.once('SIGTERM', () => {
        server.close()
        server.closeAllConnections()
      })
      return
    }
    case 'exit-now': {
      process.once('SIGTERM', () => process.exit(0))
      return
    }
    case 'fastify-close': {
      if (!app) throw new Error('fastify-close runs on Fastify only')
      process.once('SIGTERM', () => {
        setTimeout(() => process.exit(1), timeoutMs).unref()
        app.close().catch((error) => console.error(error))
      })
      return
    }
    default:
      throw new Error(`unknown library "${lib}"`)
  }
}

/**
 * The child's own clock, for the shutdown sections: when the last response finished, when the last
 * socket closed, when 'exit' fired (wall-clock milliseconds, comparable with the parent's). It tells
 * a library's latency apart from the time a busy machine takes to schedule the parent.
 */
function installProbe(server) {
  const now = () => performance.timeOrigin + performance.now()
  const seen = { open: 0, lastFinishAt: null, lastSocketCloseAt: null }
  server.on('connection', (socket) => {
    seen.open++
    socket.once('close', () => {
      seen.open--
      seen.lastSocketCloseAt = now()
    })
  })
  server.on('request', (_req, res) => {
    res.once('finish', () => {
      seen.lastFinishAt = now()
    })
  })
  process.on('exit', () => {
    console.log(`probe ${JSON.stringify({ ...seen, exitAt: now() })}`)
  })
}

const build = { express: expressServer, koa: koaServer, fastify: fastifyServer }[fw]
if (!build) throw new Error(`unknown framework "${fw}"`)
const { server, app } = await build()
await wire(server, app)
if (probe) installProbe(server)
console.log(`ready ${server.address().port}`)
