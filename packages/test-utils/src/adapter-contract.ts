import type { Server } from 'node:net'
// A relative, type-only import: a package dependency on core would make a cycle (core tests use these helpers).
import type { AdapterOptions, Shutdown } from '../../core/src/index.js'
import type { Deferred } from './wait.js'

/**
 * The app every adapter builds for the shared conformance suite (`describeAdapter`). It is mounted
 * with `graceful(options)` FIRST, listens on 127.0.0.1 port 0, and has these routes:
 *
 * - `GET /fast`            → 200 `fast`
 * - `GET|POST /slow`       → reads the body, parks on a deferred (see `nextParked`), then 200 `slow <body length>`
 * - `POST /echo`           → 200 with the request body
 * - `GET /stream`          → 200, writes `chunk 0\n`, parks, then writes `chunk 1\n` and ends (chunked)
 * - `GET /big`             → 200, a 1 MiB body of `x` (for slow readers / backpressure)
 * - `GET /throw`           → the handler throws synchronously (the framework answers 500)
 * - `GET /reject`          → the handler rejects asynchronously (500)
 * - `GET /sse`             → 200 text/event-stream, one `data: hello` event, ends when `shutdown.signal` aborts
 *
 * Every route handler records its path in `hits` when it starts running — the suite asserts that
 * refused requests never reach a handler.
 */
export interface AdapterApp {
  readonly server: Server
  readonly port: number
  readonly shutdown: Shutdown
  /** Paths whose route handler started, in order. */
  readonly hits: string[]
  /** Resolves with the deferred of the next request that parks (`/slow`, `/stream`); resolve it to let it finish. */
  nextParked(): Promise<Deferred<void>>
  /** Number of handlers currently parked. */
  readonly parkedCount: number
  /** Ends the server for `afterEach` (destroys sockets); safe after a shutdown. */
  close(): Promise<void>
}

/**
 * Builds and starts an {@link AdapterApp}. `options` are passed to `graceful()` as they are; the suite
 * always sets `signals: false` and `logger: false` unless a test says otherwise. When
 * `attach` is false, the app must NOT call `shutdown.attach(server)` (tests server discovery).
 */
export type CreateAdapterApp = (
  options: AdapterOptions,
  settings?: { attach?: boolean },
) => Promise<AdapterApp>
