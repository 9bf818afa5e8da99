import type { App, Cell, RunOptions } from './rolling.ts'

function integer(name: string, fallback: number, min: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < min)
    throw new RangeError(`e2e: ${name} must be a whole number >= ${min}; received "${raw}"`)
  return value
}

/**
 * Runs per cell and app: `E2E_RUNS`, default 10 (the issue's full mode); `.ci/extra.sh` sets 1 (CI
 * mode, every cell once per app, the blocked one listed as todo).
 */
export const RUNS = integer('E2E_RUNS', 10, 1)

/** Every app the suite can put behind the proxies (`fixtures/<app>-app.mjs`). */
export const APP_NAMES: readonly App[] = ['express', 'koa', 'fastify', 'core']

/**
 * The apps under the proxy, each judged in every cell: `E2E_APP`, a comma-separated list, default
 * `express,koa,fastify` (the three adapters); `core` is the bare @lameduck/core on node:http, to tell
 * adapter bugs from core bugs.
 */
export const APPS: readonly App[] = (() => {
  const raw = process.env.E2E_APP
  const names = (raw === undefined || raw.trim() === '' ? 'express,koa,fastify' : raw)
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '')
  for (const name of names) {
    if (!(APP_NAMES as readonly string[]).includes(name))
      throw new RangeError(
        `e2e: E2E_APP must be a comma-separated list of ${APP_NAMES.map((app) => `"${app}"`).join(', ')}; received "${raw}"`,
      )
  }
  return [...new Set(names as App[])]
})()

/** What every run of `app` shares; the connection count and pacing can be changed for experiments. */
export function runOptions(app: App): RunOptions {
  return {
    app,
    connections: integer('E2E_CONNECTIONS', 32, 1),
    // ~650 requests/s through the proxy: steady load with headroom on 2 cores. At 10 ms (~1200/s) the
    // suite itself starves the apps it measures (event-loop stalls of 100-370 ms during shutdown).
    gapMs: integer('E2E_GAP_MS', 40, 0),
    timeoutMs: 10_000,
    checkIntervalMs: 200,
    fall: 2,
    rise: 2,
  }
}

/** Issue 10, requirement 1: active checks every 200 ms on /readyz, fall 2, drainDelayMs 1000, with and without retries. */
export const HAPROXY_CELLS: readonly Cell[] = [
  {
    proxy: 'haproxy',
    name: 'HAProxy, checks 200 ms fall 2, retries 0, drainDelayMs 1000',
    drainDelayMs: 1_000,
    retries: false,
  },
  {
    proxy: 'haproxy',
    name: 'HAProxy, checks 200 ms fall 2, retries 3 + redispatch, drainDelayMs 1000',
    drainDelayMs: 1_000,
    retries: true,
  },
]

/**
 * Issue 10, requirement 2: nginx open source, default proxy_next_upstream, drainDelayMs 0 and 1000.
 * max_fails=1 fail_timeout=10s, nginx's defaults, written out: fail_timeout must outlast an
 * instance's exit plus its replacement's start, which took up to 5.5 s on a busy 2-core machine (a
 * 2 s fail_timeout gave 4–12 refused attempts per restart there, one more every 3 s). The price:
 * a deploy waits up to 10 s per instance for nginx to route to the replacement.
 */
export const NGINX_CELLS: readonly Cell[] = [
  {
    proxy: 'nginx',
    name: 'nginx, default proxy_next_upstream, drainDelayMs 0',
    drainDelayMs: 0,
    failTimeoutS: 10,
    blocked:
      'closing the listener resets connections still in its accept queue (e2e/repro/accept-queue-*.mjs); 3 of 10 full-mode runs fail',
  },
  {
    proxy: 'nginx',
    name: 'nginx, default proxy_next_upstream, drainDelayMs 1000',
    drainDelayMs: 1_000,
    failTimeoutS: 10,
  },
]
