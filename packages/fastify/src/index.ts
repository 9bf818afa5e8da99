import { Server as NetServer } from 'node:net'
import {
  type AdapterOptions,
  healthAnswer,
  type Release,
  resolveAdapterOptions,
  type Shutdown,
  whenSettled,
  writeRefusal,
} from '@lameduck/core'
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest, RawServerBase } from 'fastify'
import fp from 'fastify-plugin'

export * from '@lameduck/core'

declare module 'fastify' {
  interface FastifyInstance {
    /** The `@lameduck/core` Shutdown of this app, set by the `graceful` plugin: `onClose`, `track`, `close`, `state`… */
    readonly shutdown: Shutdown
  }
}

/**
 * Options of {@link graceful}: every `@lameduck/core` option (`timeoutMs`, `drainDelayMs`,
 * `lateRequests`, …), or `shutdown` to share an existing Shutdown, plus `health` for the probes.
 * `logger` defaults to `app.log` (Fastify's pino logger) unless `shutdown` is given.
 */
export type GracefulOptions = AdapterOptions

/**
 * The options with `app.log` as the default logger. Anything but an options object goes to the core
 * as it came, to be rejected by what it is: spread, `'str'` would become `{ 0: 's', … }` (reported
 * as `unknown option "0"`) and `5` or `true` an empty object (accepted without a word).
 */
function withAppLogger(options: unknown, app: FastifyInstance<RawServerBase>): GracefulOptions | undefined {
  if (options === undefined) return { logger: app.log }
  if (options === null || typeof options !== 'object' || Array.isArray(options))
    return options as GracefulOptions
  // Fastify's own register options, which it passes to every plugin and ignores for one wrapped
  // with fastify-plugin (as this one is): accepted, and ignored here too (a plugin loader may pass
  // them to every plugin it loads).
  const {
    prefix: _prefix,
    logLevel: _logLevel,
    logSerializers: _logSerializers,
    ...given
  } = options as GracefulOptions & Record<'prefix' | 'logLevel' | 'logSerializers', unknown>
  return given.shutdown === undefined && given.logger === undefined ? { ...given, logger: app.log } : given
}

/** Where onRequest leaves the hold the route handler takes over. */
const HANDLER_HOLD: unique symbol = Symbol('lameduck handler hold')
type HeldRequest = FastifyRequest & { [HANDLER_HOLD]: Release | null }
/** What responseClosed() reads of a reply, whatever the server type. */
type SentReply = {
  readonly sent: boolean
  hijack(): unknown
  readonly raw: { once(event: 'prefinish', listener: () => void): unknown }
}

/**
 * The response closed: if the handler has not taken the hold, find out whether it still will. A
 * reply already sent or hijacked (a hook answered, a 404, an error) means it will not. A client that
 * left before the handler started does not stop Fastify: the handler may still run (it takes the
 * hold), or the chain ends without it, with Fastify ending the reply (`'prefinish'`), or a hook
 * hijacking it (on HTTP/2, whose closed response emits nothing, the hijack itself). Or the chain
 * never ends: Fastify reads the body of a request whose client has left (a body-carrying request
 * that left during an async `onRequest` or `preParsing` hook) from a stream that will never emit
 * again, and waits for good — seen as its listeners are added to that stream.
 */
function responseClosed(request: HeldRequest, reply: SentReply): void {
  const early = request[HANDLER_HOLD]
  if (early === null) return
  const letGo = () => {
    if (request[HANDLER_HOLD] === early) takeHold(request)?.()
  }
  if (reply.sent) {
    letGo()
    return
  }
  reply.raw.once('prefinish', letGo)
  const raw = request.raw
  // A 'data' listener added to a request that has ended or been destroyed gets nothing, ever, and
  // neither 'end' nor 'error': Fastify's own body read, a content-type parser, a preParsing hook's
  // payload.pipe(…) then wait for good. Code of the app reading it as an async iterator (stream
  // consumers, for await) listens for 'readable' instead and gets an error, which takes the chain
  // on to an error handler that ends the reply: it stays counted. (pipeline() adds 'data' and also
  // errors: released as its error handler starts.)
  const watchBody = (event: string | symbol) => {
    if (request[HANDLER_HOLD] !== early) raw.off('newListener', watchBody)
    else if (event === 'data' && (raw.destroyed || raw.readableEnded)) {
      raw.off('newListener', watchBody)
      letGo()
    }
  }
  raw.on('newListener', watchBody)
  if (raw.httpVersionMajor >= 2) {
    const hijack = reply.hijack
    reply.hijack = function hijackAfterClose(this: SentReply) {
      const result = hijack.call(this)
      letGo()
      return result
    }
  }
}

/** The description of the symbol under which Fastify keeps the servers it adds for `localhost`. */
const FASTIFY_BINDINGS = 'fastify.serverBindings'

/**
 * The servers Fastify listens with besides `app.server`. Listening on `localhost` (its default
 * host), Fastify binds every address the name resolves to: 127.0.0.1 on `app.server` and, where
 * `localhost` is also `::1` (macOS, most distributions, Docker's /etc/hosts), a second server that
 * only `app.server`'s `'close'` ends. Fastify lists them nowhere public (`app.addresses()` gives
 * their addresses only), so they are read from its own array, found by its symbol's description;
 * none when a Fastify version keeps them elsewhere (then each is attached at its first request).
 */
function extraServers(app: FastifyInstance<RawServerBase>): NetServer[] {
  // A plugin's instance inherits the root's own properties (`Object.create`): walk up to them.
  for (let owner: object | null = app; owner !== null; owner = Object.getPrototypeOf(owner)) {
    const key = Object.getOwnPropertySymbols(owner).find((symbol) => symbol.description === FASTIFY_BINDINGS)
    if (key === undefined) continue
    const servers: unknown = (owner as Record<symbol, unknown>)[key]
    if (!Array.isArray(servers)) return []
    return servers.filter(
      (server): server is NetServer => server instanceof NetServer && server !== app.server,
    )
  }
  return []
}

/**
 * Whether `app` is an encapsulated context (a plugin's own instance, which Fastify makes with
 * `Object.create(parent)`) rather than the root or a context shared through fastify-plugin.
 */
function isEncapsulated(app: FastifyInstance<RawServerBase>): boolean {
  const parent: unknown = Object.getPrototypeOf(app)
  return (
    typeof parent === 'object' &&
    parent !== null &&
    (parent as { server?: unknown }).server === app.server &&
    typeof (parent as { register?: unknown }).register === 'function'
  )
}

/** The hold onRequest left on `request`, taken off it (null once taken). */
function takeHold(request: HeldRequest): Release | null {
  const held = request[HANDLER_HOLD]
  request[HANDLER_HOLD] = null
  return held
}

async function gracefulPlugin(app: FastifyInstance<RawServerBase>, options: GracefulOptions): Promise<void> {
  // First: registered twice, this throws FST_ERR_DEC_ALREADY_PRESENT before a second Shutdown (with
  // its signal listeners) exists.
  app.decorate('shutdown', { getter: () => shutdown })
  const resolved = withAppLogger(options, app)
  const { shutdown, health } = resolveAdapterOptions(resolved, '@lameduck/fastify')
  shutdown.attach(app.server)
  if (isEncapsulated(app)) {
    // Through the logger the shutdown logs with (none under `logger: false`); app.log beside a shared one.
    const logger = resolved?.logger === undefined ? app.log : resolved.logger
    if (logger !== false) {
      logger.warn(
        { plugin: '@lameduck/fastify' },
        "registered inside an encapsulated plugin, so its hooks and health probes reach only that plugin's routes and app.shutdown is not on the root; register it on the root instance, or from a plugin wrapped with fastify-plugin",
      )
    }
  }
  // The servers Fastify adds for `localhost` exist once it listens: attached then, so their
  // listeners close at the signal with app.server's and their connections are seen from the start.
  app.addHook('onListen', function gracefulOnListen(done) {
    if (shutdown.state !== 'closing' && shutdown.state !== 'closed') {
      for (const server of extraServers(app)) shutdown.attach(server)
    }
    done()
  })

  const wrapped = new WeakSet<object>()
  // The hold taken in onRequest for the route handler, until the handler takes it over. Declared so
  // every Fastify request keeps one shape.
  app.decorateRequest(HANDLER_HOLD, null)
  let fastifyCloseStarted = false
  let fastifyCloseReached: () => void = () => {}
  const reachedFastifyClose = new Promise<void>((resolve) => {
    fastifyCloseReached = resolve
  })

  // Fastify tells no hook when a handler's promise settles, so handlers of routes registered after
  // this plugin are wrapped: a handler still running after its client aborted keeps its count.
  app.addHook('onRoute', (route) => {
    const handler = route.handler
    if (wrapped.has(handler)) return
    route.handler = function gracefulHandler(this: unknown, request, reply) {
      // Called with other arguments by a plugin that takes the handler for its own use after this
      // hook wrapped it (@fastify/websocket calls a WebSocket route's handler with (socket, request)):
      // nothing of ours to hold.
      if ((request as { raw?: unknown } | undefined)?.raw === undefined) {
        return handler.call(this as never, request, reply)
      }
      // The hold onRequest took, now the handler's; a new one (a no-op when the request was not
      // admitted or already released) if onRequest did not run for it.
      const release = takeHold(request as HeldRequest) ?? shutdown.hold(request.raw, reply.raw)
      let result: unknown
      try {
        result = handler.call(this as never, request, reply)
      } finally {
        // A handler that returns the reply (`return reply.send(…)`) has finished. The reply is a
        // thenable of its own, settled through listeners on the response that Fastify has already
        // added once: waiting on it again would add them a second time, for every such request.
        if (result === reply) release()
        else whenSettled(result, release)
      }
      return result
    } as typeof handler
    wrapped.add(route.handler)
  })

  // The earliest hook. Probes bypass the gate; with req and res the core applies the connection
  // rules (last request gets `Connection: close`, anything pipelined behind it is refused).
  app.addHook('onRequest', function gracefulOnRequest(request, reply, done) {
    if (health !== undefined) {
      const probe = healthAnswer(shutdown, health, request.raw.method, request.raw.url)
      if (probe !== undefined) {
        reply.hijack()
        reply.raw.writeHead(probe.status, probe.headers).end(probe.body)
        return done()
      }
    }
    // Counted until its response closes, and held from here until the route handler has settled:
    // Fastify runs the rest of the chain (an async preHandler, the handler) even after the client
    // has gone, and the close hooks must not run under it.
    if (!shutdown.admit(request.raw, reply.raw)) {
      reply.hijack()
      writeRefusal(request.raw, reply.raw, shutdown.refusal(request.raw))
      return done()
    }
    ;(request as HeldRequest)[HANDLER_HOLD] = shutdown.hold(request.raw, reply.raw, () =>
      responseClosed(request as HeldRequest, reply),
    )
    done()
  })

  // An HTTP/2 response whose stream has closed ignores end() and emits nothing: after a client
  // abort, a chain that ends without the handler is seen here instead, as Fastify sends the reply.
  if (app.initialConfig.http2 === true) {
    app.addHook('onSend', function gracefulOnSend(request, _reply, payload, done) {
      takeHold(request as HeldRequest)?.()
      done(null, payload)
    })
  }

  // Signal (or shutdown.close()) path: after the drain, in the core's closing phase, Fastify closes
  // (preClose, server.close, its onClose hooks) as one bounded hook. On the app.close() path the
  // same hook joins the close already under way instead of starting one.
  shutdown.onClose('fastify.close()', () => {
    fastifyCloseStarted = true
    fastifyCloseReached()
    return app.close()
  })

  // app.close() path: Fastify has already set its closing flag, so the drain starts without a delay.
  // Waiting for the whole core close here would deadlock (its 'fastify.close()' hook waits for this
  // very app.close()); waiting until that hook is reached keeps one order whichever way it starts.
  app.addHook('preClose', async function gracefulPreClose() {
    if (fastifyCloseStarted) return
    await Promise.race([reachedFastifyClose, shutdown.close('app.close()', { drainDelayMs: 0 })])
  })
}

/**
 * Graceful shutdown for Fastify 5, one plugin for the whole app (wrapped with fastify-plugin):
 * `await app.register(graceful, { timeoutMs: 10_000, health: true })`. It attaches `app.server`,
 * decorates `app.shutdown`, counts each request in the first `onRequest` hook and releases it once
 * its response has closed and its handler has finished (a client that leaves during an async
 * `preHandler` does not stop Fastify: the request stays counted until the handler it still runs has
 * finished, or the chain has ended without it); once stopping, a request the core refuses
 * gets the core's 503, written raw. With `health`, `GET`/`HEAD` probes are answered before the gate.
 *
 * One close sequence: a signal drains, runs the core's `onClose` hooks newest first, then
 * `app.close()` (Fastify's `preClose`, server close and `onClose` hooks) as the hook
 * `'fastify.close()'`. `app.close()` called directly drains first (no drain delay: Fastify already
 * answers new requests itself with its own 503, which lacks `Retry-After`), then the same order.
 *
 * Register it before your routes and other hooks: handlers of routes registered earlier are only
 * counted until their response closes.
 *
 * Options may also be Fastify's function form, `(parent) => options`, called when the plugin loads.
 *
 * @throws TypeError or RangeError with `code: 'ERR_LAMEDUCK_INVALID_OPTION'` at register time, the
 * message starting with `@lameduck/fastify:`. Options that are not an object are rejected by what
 * they are (`option "options" must be an object; received "str" (string).`), except the falsy ones:
 * Fastify (avvio) replaces `''`, `0`, `NaN`, `false` and `null` given to `register()` with `{}`
 * before the plugin runs, so those register with the defaults and cannot be told from no options.
 * Returned by the function form they arrive as they are, and are rejected (`undefined` is no options).
 */
export const graceful: FastifyPluginAsync<GracefulOptions, RawServerBase> = fp(gracefulPlugin, {
  name: '@lameduck/fastify',
  fastify: '5.x',
})
