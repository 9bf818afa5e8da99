// What is measured: the shutdown libraries, the frameworks they run on, and how each is configured.
// server.mjs wires them exactly as described here; RESULTS.md quotes these descriptions.

/** Settings every server gets, whatever the library: same app, same timeouts. */
export const COMMON_SERVER_SETTINGS =
  'HTTP/1.1 on 127.0.0.1, port 0; `keepAliveTimeout` 65 s and `headersTimeout` 66 s on every server ' +
  '(longer than a typical load balancer idle timeout, so Node itself never closes the idle connections ' +
  'mid-measurement); `NODE_ENV=production`; Fastify with `logger: false`; no drain delay anywhere ' +
  '(no load balancer to wait for on loopback).'

/**
 * Shutdown libraries. `frameworks` lists where each is run in the shutdown and scale sections:
 * lameduck on all three adapters, no library on all three (Express only in the shutdown section),
 * the server-level libraries on Express (they only see the `http.Server`), Fastify's own `close()`
 * on Fastify. `sections`, when set, keeps a row to those sections (the scale section's floor, which
 * is no graceful shutdown).
 */
export const LIBRARIES = {
  none: {
    label: 'none',
    // On all three in the scale section, as the memory baseline; on Express only in the shutdown
    // section, where every framework dies the same way.
    frameworks: ['express', 'koa', 'fastify'],
    config:
      'No handler: SIGTERM kills the process (the baseline every library improves on). Shutdown section: ' +
      'Express only; scale section: all three frameworks, the baseline for memory per request.',
  },
  lameduck: {
    label: 'lameduck',
    frameworks: ['express', 'koa', 'fastify'],
    config:
      'Express/Koa: `const mw = graceful({ timeoutMs: T }); app.use(mw)` before the routes, ' +
      '`mw.shutdown.attach(server)` after `listen`. Fastify: `await app.register(graceful, { timeoutMs: T })` ' +
      'before the routes. Every other option at its default (signals SIGTERM+SIGINT, exit on its own, ' +
      'idleGraceMs 50, lateRequests "serve", log lines on stderr).',
  },
  'http-terminator': {
    label: 'http-terminator',
    frameworks: ['express'],
    config:
      '`createHttpTerminator({ server, gracefulTerminationTimeout: T })`; ' +
      "`process.once('SIGTERM', () => terminator.terminate())` (it installs no signal handler and does not " +
      'end the process: the process exits when its event loop empties).',
  },
  stoppable: {
    label: 'stoppable',
    frameworks: ['express'],
    config:
      "`stoppable(server, T)`; `process.once('SIGTERM', () => server.stop())` (no signal handler of its " +
      'own; the process exits when its event loop empties).',
  },
  terminus: {
    label: '@godaddy/terminus',
    frameworks: ['express'],
    config:
      '`createTerminus(server, { timeout: T, useExit0: true })` (default signal SIGTERM) — `useExit0` as its ' +
      'Kubernetes section recommends; no health checks, no `beforeShutdown` (no load balancer here).',
  },
  'http-graceful-shutdown': {
    label: 'http-graceful-shutdown',
    frameworks: ['express'],
    config:
      "`gracefulShutdown(server, { timeout: T, signals: 'SIGINT SIGTERM' })`; `forceExit` at its default " +
      '(true: `process.exit` at the end).',
  },
  'close-all': {
    label: "Node's closeAllConnections()",
    frameworks: ['express'],
    // The floor of the scale section: what closing every socket at once costs on this machine, with
    // no grace and no library. Not a graceful shutdown (it cuts requests in flight), so the shutdown
    // section leaves it out.
    sections: ['scale'],
    config:
      "Scale section only, the floor: `process.once('SIGTERM', () => { server.close(); " +
      'server.closeAllConnections() })` — Node destroys every connection at once, no grace, no library; ' +
      'the process exits when its event loop empties.',
  },
  'exit-now': {
    label: 'process.exit() at the signal',
    frameworks: ['express'],
    // The client's floor in the scale section: the kernel closes every socket at once as the process
    // ends, with no JavaScript per socket, so what is left of "signal → all closed" is this client
    // seeing that many closes. Idle connections only (it would cut every request in flight).
    sections: ['scale'],
    idleOnly: true,
    config:
      "Scale section only, idle connections only, the client's floor: `process.once('SIGTERM', () => " +
      'process.exit(0))` — the kernel closes every socket as the process ends, no JavaScript per socket; ' +
      'what remains of "signal → all closed" is the client taking in that many closes.',
  },
  'fastify-close': {
    label: 'fastify close()',
    frameworks: ['fastify'],
    config:
      "Fastify 5 defaults (`return503OnClosing: true`, `forceCloseConnections: 'idle'`); " +
      "`process.once('SIGTERM', () => app.close())`, and since `close()` has no timeout, " +
      '`setTimeout(() => process.exit(1), T).unref()` armed at the signal (what close-with-grace does).',
  },
}

/** The lameduck adapter package of each framework. */
export const ADAPTERS = { express: '@lameduck/express', koa: '@lameduck/koa', fastify: '@lameduck/fastify' }

/** Row label: `lameduck (koa)`, `stoppable (express)`. */
export function rowLabel(lib, fw) {
  return `${LIBRARIES[lib]?.label ?? lib} (${fw})`
}
