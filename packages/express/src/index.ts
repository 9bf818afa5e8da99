import type { IncomingMessage, ServerResponse } from 'node:http'
import {
  type AdapterOptions,
  healthAnswer,
  resolveAdapterOptions,
  type Shutdown,
  writeRefusal,
} from '@lameduck/core'

export * from '@lameduck/core'

/**
 * Options of {@link graceful}: every `@lameduck/core` option (`timeoutMs`, `drainDelayMs`,
 * `lateRequests`, …, see the core README), or `shutdown` to share an existing Shutdown between
 * several apps or servers, plus `health` to answer the Kubernetes probes.
 */
export type GracefulOptions = AdapterOptions

/**
 * The middleware `graceful()` returns, typed on Node's request and response so it fits Express 4
 * and 5 without depending on `@types/express`. Mount it before everything else.
 */
export interface GracefulMiddleware {
  (req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void): void
  /** The core Shutdown behind this middleware: `attach`, `onClose`, `track`, `close`, `state`… */
  readonly shutdown: Shutdown
}

/**
 * Express middleware for graceful shutdown, for Express 4 and 5. Each request is counted when it
 * enters and released once when its response closes (finished or aborted); once stopping has begun
 * a request the core refuses gets the core's 503, written raw, and no later middleware runs. With
 * `health`, `GET`/`HEAD` on the readiness and liveness paths (relative to where it is mounted) are
 * answered here, before the gate, and not counted.
 *
 * Call `mw.shutdown.attach(app.listen(port))` so every connection is seen from the start; without
 * it the server is taken from the first request's socket and one log line recommends `attach`.
 *
 * Not handled: Express cannot tell a middleware when a route handler has finished, so a handler
 * still running after its client aborted is no longer counted. Wrap such work in
 * `shutdown.track()`.
 *
 * @throws TypeError or RangeError with `code: 'ERR_LAMEDUCK_INVALID_OPTION'` for a bad option, here
 * rather than on the first request; the message starts with `@lameduck/express:`.
 */
export function graceful(options?: GracefulOptions): GracefulMiddleware {
  const { shutdown, health } = resolveAdapterOptions(options, '@lameduck/express')

  function gracefulMiddleware(
    req: IncomingMessage,
    res: ServerResponse,
    next: (error?: unknown) => void,
  ): void {
    // Probes first: readiness must answer 503 while stopping rather than be refused or counted.
    if (health !== undefined) {
      const probe = healthAnswer(shutdown, health, req.method, req.url)
      if (probe !== undefined) {
        // Not counted, but seen: a server only ever probed is still discovered, and a probe that is
        // its connection's last request once stopping carries `Connection: close`.
        shutdown.observe(req, res)
        res.writeHead(probe.status, probe.headers).end(probe.body)
        return
      }
    }
    // With req and res the core applies the connection rules (last request, pipelined ones dropped),
    // discovers the server when attach() was not called, and releases the request when res closes.
    if (!shutdown.admit(req, res)) {
      writeRefusal(req, res, shutdown.refusal(req))
      return
    }
    next()
  }

  return Object.assign(gracefulMiddleware, { shutdown })
}
