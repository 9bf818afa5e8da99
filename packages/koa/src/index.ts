import {
  type AdapterOptions,
  healthAnswer,
  resolveAdapterOptions,
  type Shutdown,
  whenSettled,
  writeRefusal,
} from '@lameduck/core'
import type { Context, Next } from 'koa'

export * from '@lameduck/core'

declare module 'koa' {
  interface DefaultState {
    /**
     * The Shutdown of the `graceful()` middleware that admitted this request. Its `signal` aborts
     * when stopping begins: end long-polls and SSE streams with it.
     */
    shutdown: Shutdown
  }
}

/**
 * Options of {@link graceful}: every core option (`timeoutMs`, `drainDelayMs`, `lateRequests`, …; see
 * the `@lameduck/core` README), or `shutdown` to share an existing Shutdown, plus `health` probes.
 */
export type GracefulOptions = AdapterOptions

/** The Koa middleware returned by {@link graceful}, carrying its core {@link Shutdown}. */
export interface GracefulMiddleware {
  (ctx: Context, next: Next): Promise<void>
  /** The core Shutdown: `attach(server)`, `onClose(...)`, `close()`, `signal`, `inFlight`, … */
  readonly shutdown: Shutdown
}

/** What the probe and refusal paths return: nothing downstream ran. */
const settled: Promise<void> = Promise.resolve()

/**
 * Koa 2 and 3 middleware for graceful shutdown; mount it first: `app.use(graceful())`.
 *
 * Each request is counted until both the downstream middleware has settled (also when it throws:
 * the error is rethrown for Koa to answer) and the response has closed — for a stream body, when
 * it has been sent in full; after a client abort, when the still-running middleware finishes. Once
 * the shutdown refuses a request (`lateRequests: 'refuse'`, or one pipelined behind its
 * connection's last response) the core's 503 is written raw and no downstream middleware runs.
 * `health` probes are answered here, before the gate, and are not counted. Downstream middleware
 * finds the Shutdown at `ctx.state.shutdown`.
 *
 * Options are validated here, once: a `TypeError` or `RangeError` with
 * `code: 'ERR_LAMEDUCK_INVALID_OPTION'` and a message starting with `@lameduck/koa:`. Call `mw.shutdown.attach(app.listen(port))` so connections
 * opened before the first request are tracked too; without it the server is taken from the first
 * request's socket. Timers, signals and defaults all belong to `@lameduck/core`.
 */
export function graceful(options?: GracefulOptions): GracefulMiddleware {
  const { shutdown, health } = resolveAdapterOptions(options, '@lameduck/koa')

  // Not async: one promise per request fewer. Koa's compose takes whatever it returns.
  function gracefulMiddleware(ctx: Context, next: Next): Promise<void> {
    const { req, res } = ctx
    if (health !== undefined) {
      const probe = healthAnswer(shutdown, health, req.method, req.url)
      if (probe !== undefined) {
        ctx.respond = false
        // Not counted, but seen: a server only ever probed is still discovered.
        shutdown.observe(req, res)
        res.writeHead(probe.status, probe.headers).end(probe.body)
        return settled
      }
    }
    if (!shutdown.admit(req, res)) {
      // Koa must add nothing: the refusal is the same bytes in every adapter.
      ctx.respond = false
      writeRefusal(req, res, shutdown.refusal(req))
      return settled
    }
    ctx.state.shutdown = shutdown
    // Counted until the response has closed (core) and the chain has settled (this hold): Koa writes
    // the body only after the chain settles, and a client may abort while middleware still runs.
    const release = shutdown.hold(req, res)
    let chain: Promise<void> | undefined
    try {
      chain = next()
    } finally {
      whenSettled(chain, release)
    }
    // The chain itself is returned: a rejection still reaches Koa, which answers the error.
    return chain
  }

  return Object.assign(gracefulMiddleware, { shutdown })
}
