import { setMaxListeners } from 'node:events'
import { Server as NetServer } from 'node:net'
import { closedError, invalidArgument, unknownArgumentKey } from './errors.js'
import { type Hook, type HookEntry, type HookOutcome, runHook } from './hooks.js'
import { callSafely, isThenable, onResponseClosed } from './lifecycle.js'
import { safeLogger } from './logger.js'
import {
  drainDelayProblem,
  isTimerMs,
  type ResolvedOptions,
  resolveOptions,
  type ShutdownOptions,
} from './options.js'
import {
  type AnyRequest,
  type AnyResponse,
  buildRefusal,
  isWebSocketHandshake,
  type Refusal,
} from './refusal.js'
import { type AttachableServer, createServerTracker, type ResponseWatcher } from './server.js'
import { onSignals } from './signals.js'

/** serving ─signal/close()─▶ draining ─drainDelayMs─▶ stopping ─drained or deadline─▶ closing ─hooks─▶ closed */
export type ShutdownState = 'serving' | 'draining' | 'stopping' | 'closing' | 'closed'

/** Releases a request counted by `enter()`. Idempotent: only the first call counts. */
export type Release = () => void

/** What a shutdown did, returned by `close()` and summed up in the last log line. */
export interface ShutdownReport {
  /** What started it: the signal name, or the reason given to `close()` (default `'close()'`). */
  readonly reason: string
  /** True when every request, task and connection finished before the deadline. */
  readonly graceful: boolean
  /** Milliseconds from the start of the shutdown to the end of the last hook. */
  readonly durationMs: number
  /** Requests counted by the gate (admitted by an adapter, or `enter()`ed). */
  readonly requests: {
    /**
     * Requests released after the shutdown began (in flight at the signal, or late ones served) and
     * before the drain ended; one cut at the deadline counts as forced only.
     */
    readonly completed: number
    /** Requests answered with the refusal (or dropped behind a connection's last response). */
    readonly refused: number
    /** Requests still in flight at the deadline. */
    readonly forced: number
  }
  /** Tasks given to `track()`: settled after the shutdown began, rejected, or still running at the deadline. */
  readonly tasks: { readonly completed: number; readonly failed: number; readonly aborted: number }
  /** Sockets and HTTP/2 sessions destroyed at the deadline. */
  readonly connectionsDestroyed: number
  /** Every `onDrain` and `onClose` hook, in the order they finished. */
  readonly hooks: readonly HookOutcome[]
  /** `exitCodes.graceful`, or `exitCodes.failed` when the drain was forced or a hook failed. */
  readonly exitCode: number
}

/** Events of a Shutdown; listeners are called synchronously and must not throw. */
export interface ShutdownEvents {
  /** On every step: serving → draining → stopping → closing → closed. */
  statechange: (state: ShutdownState, previous: ShutdownState) => void
  /** Once, with the report, after the last hook (before the process exits, when it exits). */
  closed: (report: ShutdownReport) => void
}

/** Per-hook options. */
export interface HookOptions {
  /** Milliseconds this hook may take; default `hookTimeoutMs`. */
  timeoutMs?: number | undefined
}

/** Options of `close()`. */
export interface CloseOptions {
  /** Overrides `drainDelayMs` for this run (a framework already closing has no use for a delay). */
  drainDelayMs?: number | undefined
}

/** The shutdown coordinator of one application; see the package README for the full lifecycle. */
export interface Shutdown {
  /** Where the shutdown is: `'serving'` until a signal or `close()`. */
  readonly state: ShutdownState
  /** True while serving: readiness probes answer 200. */
  readonly isReady: boolean
  /** Requests counted by `enter()` and not yet released. */
  readonly inFlight: number
  /** Aborted when stopping begins: long-lived handlers (SSE, long-poll) should wrap up. */
  readonly signal: AbortSignal
  /** Connection bookkeeping for `server` (http, https, http2); idempotent; several servers allowed. */
  attach<S extends AttachableServer>(server: S): S
  /**
   * Counts a request. Returns its release, or `undefined` when the request must be refused: once
   * stopping under `lateRequests: 'refuse'`, once closing, or when it was pipelined behind its
   * connection's last response. Pass `req` (and `res`) so the connection rules apply; an unattached
   * server is then discovered from `req.socket.server`.
   */
  enter(req?: AnyRequest, res?: AnyResponse): Release | undefined
  /**
   * The gate adapters use: counts the request until its response has closed (finished or aborted;
   * for a pipelined response Node dropped, until its socket closed) — no release to call. Returns
   * false when the request must be refused, for the same reasons as {@link Shutdown.enter}. Cheaper
   * than `enter()` plus a `'close'` listener: the connection bookkeeping already watches the response.
   * Idempotent: a request admitted already (two adapters on one Shutdown, an app mounted inside
   * another) returns true and stays counted once.
   */
  admit(req: AnyRequest, res: AnyResponse): boolean
  /**
   * Keeps the request of `res`, admitted by {@link Shutdown.admit}, counted until the returned
   * release is called as well — for work that outlives the response (a handler still running after
   * its client aborted). A no-op release when the request is not counted or already released.
   * `whenResponseCloses`, if given, is called once the response has closed (finished or aborted)
   * while the request is still counted — soon if it already has: an adapter holding the request for
   * a handler that has not started yet can then tell whether it still will.
   */
  hold(req: AnyRequest, res: AnyResponse, whenResponseCloses?: () => void): Release
  /**
   * Lets the shutdown see a request it must not count — a health probe answered before the gate:
   * an unattached server is discovered from it and its connection follows the same rules (its
   * last request once stopping carries `Connection: close`).
   */
  observe(req: AnyRequest, res: AnyResponse): void
  /** The 503 to answer with, identical in every adapter; no `Connection` header for HTTP/2. */
  refusal(req?: { httpVersionMajor: number }): Refusal
  /** Holds the drain open until `task` settles; its signal aborts at the deadline. A rejection is reported, never unhandled. */
  track<T>(label: string, task: Promise<T> | ((signal: AbortSignal) => Promise<T>)): Promise<T>
  /** Runs `hook` when draining begins, concurrently with other drain hooks, bounded. */
  onDrain(label: string, hook: Hook, options?: HookOptions): void
  /** Runs `hook` after the drain (also a forced one), newest first, one at a time, bounded. */
  onClose(label: string, hook: Hook, options?: HookOptions): void
  /** Subscribes to an event; returns the unsubscribe function. */
  on<E extends keyof ShutdownEvents>(event: E, listener: ShutdownEvents[E]): () => void
  /** Starts the shutdown, or joins the one under way: every call returns the same promise. */
  close(reason?: string, options?: CloseOptions): Promise<ShutdownReport>
  /** Makes the deadline now (starting the shutdown if needed); close hooks get `forcedHookTimeoutMs`. */
  force(reason?: string): Promise<ShutdownReport>
  /** `await using shutdown = createShutdown(…)`: closes it (as `close()`) when the scope ends. */
  [Symbol.asyncDispose](): Promise<void>
}

/** Brand recognising a Shutdown across copies of this package (ESM and CJS), instead of `instanceof`. */
export const SHUTDOWN_BRAND: unique symbol = Symbol.for('lameduck.shutdown') as never

/** True when `value` is a Shutdown made by any copy of `@lameduck/core`. */
export function isShutdown(value: unknown): value is Shutdown {
  return (
    typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[SHUTDOWN_BRAND] === true
  )
}

/** States in order; `enter()` compares ranks on every request, so a lookup rather than a search. */
const RANK: Readonly<Record<ShutdownState, number>> = {
  serving: 0,
  draining: 1,
  stopping: 2,
  closing: 3,
  closed: 4,
}

/**
 * A counted request, released once every holder has let go: its first holder is the response
 * (`admit()`, told by the tracker when it closes) or the caller (`enter()`); `hold()` adds more.
 */
class Admission implements ResponseWatcher {
  holds = 1
  responseClosed = false
  /** Set through `hold(req, res, whenResponseCloses)`: told before the response's own hold drops. */
  private tell: (() => void) | undefined = undefined
  /**
   * An admission still held once its response has closed goes into `kept`, under `response`, where
   * `hold()` finds it (the tracker forgets a response when it closes); neither is given by `enter()`.
   */
  constructor(
    private readonly leave: () => void,
    private readonly response?: object,
    private readonly kept?: WeakMap<object, Admission>,
    /** Told what a `whenResponseCloses` callback threw: logged, never thrown into Node's 'close'. */
    private readonly onTellError?: (error: unknown) => void,
  ) {}
  closed(): void {
    this.responseClosed = true
    const tell = this.tell
    this.tell = undefined
    try {
      tell?.()
    } catch (error) {
      this.onTellError?.(error)
    } finally {
      this.drop()
      if (this.holds > 0 && this.response !== undefined) this.kept?.set(this.response, this)
    }
  }
  /** Calls `told` once the response has closed (soon, if it has already). */
  whenResponseCloses(told: () => void): void {
    if (this.responseClosed) {
      queueMicrotask(() => {
        try {
          told()
        } catch (error) {
          this.onTellError?.(error)
        }
      })
      return
    }
    const before = this.tell
    this.tell =
      before === undefined
        ? told
        : () => {
            before()
            told()
          }
  }
  /** The first holder's release, or one for a holder just added: idempotent. */
  release(): Release {
    let dropped = false
    return () => {
      if (dropped) return
      dropped = true
      this.drop()
    }
  }
  private drop(): void {
    if (--this.holds === 0) this.leave()
  }
}

const noop: Release = () => {}

/**
 * Creates the shutdown coordinator. Options are checked here, once: bad input throws a `TypeError`
 * or `RangeError` with `code: 'ERR_LAMEDUCK_INVALID_OPTION'`. Installs signal listeners unless
 * `signals: false`.
 */
export function createShutdown(options: ShutdownOptions = {}): Shutdown {
  return createShutdownFrom(resolveOptions(options))
}

/** {@link createShutdown} from options already resolved (adapters validate their own keys first). */
export function createShutdownFrom(opts: ResolvedOptions): Shutdown {
  const { clock } = opts
  const log = safeLogger(opts.logger)
  let state: ShutdownState = 'serving'
  let inFlight = 0
  const tasks = new Set<Promise<unknown>>()
  const drainHooks: HookEntry[] = []
  const closeHooks: HookEntry[] = []
  const wrapUp = new AbortController()
  const stopNow = new AbortController()
  // Each shared by every request or task that listens (SSE streams, long-polls, tracked work): no
  // limit, which would warn of a leak from the eleventh on.
  setMaxListeners(0, wrapUp.signal, stopNow.signal)
  const listeners: { [E in keyof ShutdownEvents]: Set<ShutdownEvents[E]> } = {
    statechange: new Set(),
    closed: new Set(),
  }
  const counts = {
    completed: 0,
    refused: 0,
    forced: 0,
    tasksCompleted: 0,
    tasksFailed: 0,
    tasksAborted: 0,
    destroyed: 0,
  }
  let running: Promise<ShutdownReport> | undefined
  let forcedByUser = false
  let wakeDrain: (() => void) | undefined
  let wakeDelay: (() => void) | undefined
  let reachDeadline: (() => void) | undefined
  let markForced!: () => void
  /** Settles on the first force(): close hooks running then are cut to `forcedHookTimeoutMs`. */
  const forcedNow = new Promise<void>((resolve) => {
    markForced = resolve
  })

  const tracker = createServerTracker({
    clock,
    idleGraceMs: opts.idleGraceMs,
    log,
    refusal: (httpVersionMajor) => buildRefusal(opts.retryAfterSeconds, httpVersionMajor),
    events: {
      onConnectionsChanged: checkDrained,
      onRefused: () => {
        counts.refused++
      },
    },
  })

  /**
   * In Kubernetes without a drain delay, warned once a server attached here listens: not when the
   * Shutdown is made, which apps tested with inject() in a CI job on Kubernetes do too.
   */
  let drainDelayWarned = !process.env.KUBERNETES_SERVICE_HOST || opts.drainDelayMs !== 0
  function warnOfNoDrainDelay(): void {
    if (drainDelayWarned || atLeast('closing')) return
    drainDelayWarned = true
    log.warn(
      { drainDelayMs: 0 },
      'running in Kubernetes with drainDelayMs 0: endpoints are removed asynchronously after SIGTERM, so new connections keep arriving for a few seconds; set drainDelayMs (e.g. 5000) or a preStop sleep so readiness can turn before the listener closes',
    )
  }
  function attachServer(server: AttachableServer): void {
    const isNew = !tracker.has(server)
    tracker.attach(server)
    if (drainDelayWarned || !isNew) return
    if (server.listening) warnOfNoDrainDelay()
    else server.once('listening', warnOfNoDrainDelay)
  }

  const unregister =
    opts.signals.length === 0
      ? () => {}
      : onSignals({
          signals: opts.signals,
          exit: opts.exit,
          exitWatchdogMs: opts.exitWatchdogMs,
          log,
          close: (signal) => close(signal).then((report) => report.exitCode),
          force: (signal) => void force(signal),
          describeHandles: () => {
            const open = tracker.openConnections
            return [
              ...(open > 0 ? [`${open} connection(s) of attached servers`] : []),
              ...(tasks.size > 0 ? [`${tasks.size} tracked task(s)`] : []),
            ]
          },
        })

  function moveTo(next: ShutdownState): void {
    if (RANK[next] <= RANK[state]) {
      throw new Error(`@lameduck/core: illegal transition ${state} → ${next}`)
    }
    const previous = state
    state = next
    emit('statechange', next, previous)
  }

  /** Calls every listener of `event`; one that throws is logged and the others still run. */
  function emit<E extends keyof ShutdownEvents>(event: E, ...args: Parameters<ShutdownEvents[E]>): void {
    for (const listener of listeners[event]) {
      callSafely(
        () => (listener as (...values: Parameters<ShutdownEvents[E]>) => unknown)(...args),
        (error, rejected) =>
          log.error({ err: error }, `a ${event} listener ${rejected ? 'rejected' : 'threw'}`),
      )
    }
  }

  function atLeast(target: ShutdownState): boolean {
    return RANK[state] >= RANK[target]
  }

  function checkDrained(): void {
    if (
      state === 'stopping' &&
      inFlight === 0 &&
      tasks.size === 0 &&
      tracker.openConnections === 0 &&
      // Connections opened before attach() are closed by the quiet reap, not by finish() under a
      // request on its way: the reap tells when it has run (onConnectionsChanged).
      !tracker.isAwaitingReap
    )
      wakeDrain?.()
  }

  /**
   * Admissions of responses the tracker does not hold: HTTP/2 streams, and responses closed while
   * still held. Every open HTTP/1 response's is found through the tracker instead, so the common
   * path neither hashes the response nor adds a property to it (a property added to Express's
   * responses, whose prototype Express swaps, cost about 2 % of a request's CPU).
   */
  const kept = new WeakMap<object, Admission>()

  function discover(req: AnyRequest, res: AnyResponse | undefined): void {
    let server: unknown
    try {
      server = (req.socket as unknown as { server?: unknown } | undefined)?.server
    } catch {
      return // An HTTP/2 compat socket proxy refuses some property reads.
    }
    if (
      server === null ||
      typeof server !== 'object' ||
      typeof (server as AttachableServer).listen !== 'function'
    )
      return
    const found = server as AttachableServer
    if (!tracker.has(found)) {
      if (atLeast('closing')) return
      attachServer(found)
      log.info(
        {},
        'attached the server on its first request; call shutdown.attach(server) right after listen() so connections opened before the first request are handled too',
      )
    }
    if (res) tracker.observe(req, res)
  }

  /** Counts the request unless it must be refused; false (and counted as refused) when it must. */
  function pass(req: AnyRequest | undefined): boolean {
    const refused =
      atLeast('closing') ||
      (state === 'stopping' && opts.lateRequests === 'refuse') ||
      (req !== undefined && tracker.isDropped(req))
    if (refused) {
      counts.refused++
      return false
    }
    inFlight++
    return true
  }

  /**
   * A WebSocket handshake that reached the gate (routed through the app rather than Node's
   * `'upgrade'` event) is not counted: the connection is the app's WebSocket from then on, closed in
   * its close hook, and never holds the drain. While stopping it is refused, as an `'upgrade'` is.
   */
  function passUpgrade(): boolean {
    if (!atLeast('stopping')) return true
    counts.refused++
    return false
  }

  function leave(): void {
    inFlight--
    if (state !== 'serving') counts.completed++
    checkDrained()
  }

  function enter(req?: AnyRequest, res?: AnyResponse): Release | undefined {
    // Duck-typed: requests from Fastify's inject() (light-my-request) are not IncomingMessages.
    if (
      req !== undefined &&
      (req === null ||
        typeof req !== 'object' ||
        typeof req.headers !== 'object' ||
        typeof req.httpVersionMajor !== 'number')
    ) {
      throw invalidArgument(
        'enter',
        'req',
        "a Node request (a 'request' listener's first argument) or undefined",
        req,
      )
    }
    if (req !== undefined) {
      discover(req, res)
      if (isWebSocketHandshake(req)) return passUpgrade() ? noop : undefined
    }
    if (!pass(req)) return undefined
    return new Admission(leave).release()
  }

  function admit(req: AnyRequest, res: AnyResponse): boolean {
    // Admitted already by this Shutdown (a second graceful() on the way: an app mounted in another,
    // a router with its own): counted once, or its first admission would never be released.
    const watcher = tracker.watcherOf(req, res)
    if (watcher !== null) {
      if (watcher !== undefined) return true
      // Not held open by the tracker: an unattached server, HTTP/2, a response already closed, an
      // upgrade. Held (`null`: every HTTP/1 request its 'request' listener saw), the server is known.
      discover(req, res)
      if (admissionOf(req, res) !== undefined) return true
      if (isWebSocketHandshake(req)) return passUpgrade()
    }
    if (!pass(req)) return false
    const admission = new Admission(leave, res, kept, tellFailed)
    // HTTP/2 streams, and responses the tracker does not hold: watched and kept here.
    if (!tracker.watch(req, res, admission)) {
      kept.set(res, admission)
      onResponseClosed(res, () => admission.closed())
    }
    return true
  }

  /** The Admission of `res`: from the tracker while it holds `res` open, else kept here. */
  function admissionOf(req: AnyRequest, res: AnyResponse): Admission | undefined {
    const watcher = tracker.watcherOf(req, res)
    return watcher === undefined ? kept.get(res) : ((watcher ?? undefined) as Admission | undefined)
  }

  function tellFailed(error: unknown): void {
    log.error({ err: error }, 'a hold() whenResponseCloses callback threw')
  }

  function hold(req: AnyRequest, res: AnyResponse, whenResponseCloses?: () => void): Release {
    if (whenResponseCloses !== undefined && typeof whenResponseCloses !== 'function') {
      throw invalidArgument('hold', 'whenResponseCloses', 'a function or undefined', whenResponseCloses)
    }
    const admission = admissionOf(req, res)
    if (admission === undefined || admission.holds === 0) return noop
    admission.holds++
    if (whenResponseCloses !== undefined) admission.whenResponseCloses(whenResponseCloses)
    return admission.release()
  }

  function track<T>(label: string, task: Promise<T> | ((signal: AbortSignal) => Promise<T>)): Promise<T> {
    checkLabel('track', label)
    if (atLeast('closing')) throw closedError('track', state)
    let promise: Promise<T>
    if (typeof task === 'function') {
      try {
        promise = Promise.resolve(task(stopNow.signal))
      } catch (error) {
        promise = Promise.reject(error)
      }
    } else if (isThenable(task)) {
      // A thenable that is not a native promise (no finally()) is adopted by one.
      promise = task instanceof Promise ? task : Promise.resolve(task)
    } else {
      throw invalidArgument('track', 'task', 'a promise or a function (signal) => promise', task)
    }
    tasks.add(promise)
    promise
      .then(
        () => {
          counts.tasksCompleted++
        },
        (error: unknown) => {
          counts.tasksFailed++
          log.error({ err: error, task: label }, `task "${label}" failed`)
        },
      )
      .finally(() => {
        tasks.delete(promise)
        checkDrained()
      })
    return promise
  }

  function addHook(
    method: 'onDrain' | 'onClose',
    list: HookEntry[],
    label: string,
    hook: Hook,
    hookOptions?: HookOptions,
  ): void {
    checkLabel(method, label)
    if (typeof hook !== 'function') throw invalidArgument(method, 'hook', 'a function', hook)
    if (hookOptions !== undefined && (hookOptions === null || typeof hookOptions !== 'object')) {
      throw invalidArgument(method, 'options', 'an object { timeoutMs? }', hookOptions)
    }
    if (hookOptions !== undefined) checkKeys(method, hookOptions, ['timeoutMs'])
    const timeoutMs = argumentMs(method, 'timeoutMs', hookOptions?.timeoutMs, opts.hookTimeoutMs)
    if (method === 'onDrain' ? state !== 'serving' : atLeast('closing')) throw closedError(method, state)
    list.push({ label, run: hook, timeoutMs })
  }

  function close(reason = 'close()', closeOptions: CloseOptions = {}): Promise<ShutdownReport> {
    if (running) return running
    if (typeof reason !== 'string') throw invalidArgument('close', 'reason', 'a string', reason)
    if (closeOptions === null || typeof closeOptions !== 'object') {
      throw invalidArgument('close', 'options', 'an object { drainDelayMs? }', closeOptions)
    }
    checkKeys('close', closeOptions, ['drainDelayMs'])
    const delayMs = argumentMs('close', 'drainDelayMs', closeOptions.drainDelayMs, opts.drainDelayMs)
    const delayProblem = drainDelayProblem(delayMs, opts.timeoutMs)
    if (delayProblem !== undefined)
      throw invalidArgument('close', 'options.drainDelayMs', delayProblem, delayMs)
    // `running` is set before run() starts: its first steps (the 'statechange' listeners, the drain
    // hooks) may call close() again, and must join this run rather than start a second one.
    let start!: (report: Promise<ShutdownReport>) => void
    running = new Promise<ShutdownReport>((resolve) => {
      start = resolve
    })
    start(run(reason, delayMs))
    return running
  }

  /** A duration in a method's options object: what `milliseconds()` checks, reported as an argument. */
  function argumentMs(method: string, name: string, value: unknown, fallback: number): number {
    if (value === undefined) return fallback
    if (!isTimerMs(value)) {
      throw invalidArgument(method, `options.${name}`, 'a finite number of milliseconds >= 0', value)
    }
    return value
  }

  /** Rejects a key of a method's options object that the method does not know (a typo). */
  function checkKeys(method: string, given: object, known: readonly string[]): void {
    for (const key of Object.keys(given))
      if (!known.includes(key)) throw unknownArgumentKey(method, key, known)
  }

  function force(reason = 'force()'): Promise<ShutdownReport> {
    if (typeof reason !== 'string') throw invalidArgument('force', 'reason', 'a string', reason)
    const report = close(reason)
    forcedByUser = true
    markForced()
    reachDeadline?.()
    wakeDelay?.()
    wakeDrain?.()
    return report
  }

  async function run(reason: string, delayMs: number): Promise<ShutdownReport> {
    const startedAt = clock.now()
    log.info(
      { reason, timeoutMs: opts.timeoutMs, drainDelayMs: delayMs },
      `shutdown started (${reason}): not ready; draining for ${delayMs} ms, deadline in ${opts.timeoutMs} ms`,
    )
    let deadlinePassed = false
    const deadlineReached = new Promise<void>((resolve) => {
      reachDeadline = resolve
    })
    const deadline = clock.setTimeout(() => {
      deadlinePassed = true
      reachDeadline?.()
      wakeDelay?.()
      wakeDrain?.()
    }, opts.timeoutMs)

    moveTo('draining')
    const drainOutcomes = drainHooks.map((entry) =>
      runHook(entry, 'drain', entry.timeoutMs ?? opts.hookTimeoutMs, clock, { cutoff: deadlineReached }),
    )
    const finished: HookOutcome[] = []
    for (const outcome of drainOutcomes) void outcome.then((result) => finished.push(result))

    if (delayMs > 0 && !forcedByUser) {
      await new Promise<void>((resolve) => {
        const timer = clock.setTimeout(resolve, delayMs)
        wakeDelay = () => {
          clock.clearTimeout(timer)
          resolve()
        }
      })
    }
    wakeDelay = undefined

    // The connections learn first: a handler answering on `signal`'s abort or on the 'stopping'
    // event must already get `Connection: close`.
    const idleAtStop = tracker.idleConnections
    tracker.stop()
    moveTo('stopping')
    wrapUp.abort(new Error(`shutdown: ${reason}`))
    log.info(
      { connections: tracker.openConnections, idle: idleAtStop, inFlight, servers: tracker.serverCount },
      tracker.serverCount === 0
        ? `stopping: no server attached or seen (call shutdown.attach(server)); ${plural(inFlight, 'request')} in flight`
        : `stopping: listener closed; ${plural(tracker.openConnections, 'connection')} open (${idleAtStop} idle), ${plural(inFlight, 'request')} in flight`,
    )
    const progress = startProgress(startedAt)
    await new Promise<void>((resolve) => {
      wakeDrain = resolve
      if (forcedByUser || deadlinePassed) resolve()
      else checkDrained()
    })
    wakeDrain = undefined
    clock.clearTimeout(progress.timer())

    const pending = inFlight > 0 || tasks.size > 0 || tracker.openConnections > 0
    const forced = pending && (deadlinePassed || forcedByUser)
    // A request released from here on was cut (its socket destroyed just below): forced, not completed.
    const completed = counts.completed
    if (forced) {
      counts.forced = inFlight
      counts.tasksAborted = tasks.size
      counts.destroyed = tracker.destroyAll()
      stopNow.abort(new Error('shutdown deadline passed'))
      log.warn(
        { inFlight, tasks: tasks.size, destroyed: counts.destroyed },
        `deadline: forcing ${inFlight} request(s), ${tasks.size} task(s); destroyed ${counts.destroyed} connection(s)`,
      )
    }

    moveTo('closing')
    // Drain hooks still running may go on until their own timeout or the deadline, whichever is first.
    await Promise.all(drainOutcomes)
    clock.clearTimeout(deadline)
    for (const entry of [...closeHooks].reverse()) {
      const own = entry.timeoutMs ?? opts.hookTimeoutMs
      const timeoutMs = forcedByUser ? Math.min(own, opts.forcedHookTimeoutMs) : own
      const outcome = await runHook(entry, 'close', timeoutMs, clock, {
        forced: { promise: forcedNow, timeoutMs: opts.forcedHookTimeoutMs },
      })
      finished.push(outcome)
      if (!outcome.ok) {
        log.error(
          { err: outcome.error, hook: entry.label },
          `close hook "${entry.label}" ${outcome.timedOut ? (outcome.error as Error).message : 'failed'}`,
        )
      }
    }
    counts.destroyed += tracker.finish()

    const hooksOk = finished.every((outcome) => outcome.ok)
    const graceful = !forced
    const report: ShutdownReport = {
      reason,
      graceful,
      durationMs: clock.now() - startedAt,
      requests: { completed, refused: counts.refused, forced: counts.forced },
      tasks: { completed: counts.tasksCompleted, failed: counts.tasksFailed, aborted: counts.tasksAborted },
      connectionsDestroyed: counts.destroyed,
      hooks: finished,
      exitCode: graceful && hooksOk ? opts.exitCodes.graceful : opts.exitCodes.failed,
    }
    moveTo('closed')
    unregister()
    log.info({ report }, summarize(report))
    emit('closed', report)
    return report
  }

  function startProgress(startedAt: number): { timer(): unknown } {
    let timer: unknown
    const tick = () => {
      const leftMs = Math.max(0, startedAt + opts.timeoutMs - clock.now())
      const open = tracker.openConnections
      log.info(
        { inFlight, tasks: tasks.size, connections: open, leftMs },
        `awaiting ${plural(inFlight, 'request')}, ${plural(tasks.size, 'task')}, ${plural(open, 'connection')} (${(leftMs / 1000).toFixed(1)} s left)`,
      )
      timer = clock.setTimeout(tick, opts.progressIntervalMs)
    }
    if (opts.progressIntervalMs > 0) timer = clock.setTimeout(tick, opts.progressIntervalMs)
    return { timer: () => timer }
  }

  const shutdown: Shutdown & { [SHUTDOWN_BRAND]: true } = {
    [SHUTDOWN_BRAND]: true,
    get state() {
      return state
    },
    get isReady() {
      return state === 'serving'
    },
    get inFlight() {
      return inFlight
    },
    signal: wrapUp.signal,
    attach(server) {
      // A net.Server: http, https and http2 servers all are. Not an app (Express's, Koa's: pass what
      // listen() returned) nor a Fastify instance (app.server).
      if (!(server instanceof NetServer)) {
        throw invalidArgument(
          'attach',
          'server',
          'an http, https or http2 server (what listen() returns)',
          server,
        )
      }
      if (atLeast('closing') && !tracker.has(server)) throw closedError('attach', state)
      attachServer(server)
      return server
    },
    enter,
    admit,
    hold,
    observe: (req, res) => discover(req, res),
    refusal: (req) => buildRefusal(opts.retryAfterSeconds, req?.httpVersionMajor ?? 1),
    track,
    onDrain: (label, hook, hookOptions) => addHook('onDrain', drainHooks, label, hook, hookOptions),
    onClose: (label, hook, hookOptions) => addHook('onClose', closeHooks, label, hook, hookOptions),
    on(event, listener) {
      // Object.hasOwn: `in` would take what every object inherits ('constructor', 'toString') for events.
      if (!Object.hasOwn(listeners, event))
        throw invalidArgument('on', 'event', '"statechange" or "closed"', event)
      if (typeof listener !== 'function') throw invalidArgument('on', 'listener', 'a function', listener)
      const set = listeners[event] as Set<typeof listener>
      set.add(listener)
      return () => {
        set.delete(listener)
      }
    },
    close,
    force,
    async [Symbol.asyncDispose]() {
      await close('dispose')
    },
  }
  return shutdown
}

function checkLabel(method: string, label: unknown): void {
  if (typeof label !== 'string' || label.length === 0)
    throw invalidArgument(method, 'label', 'a non-empty string', label)
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`
}

function summarize(report: ShutdownReport): string {
  const { requests, tasks, hooks } = report
  const failed = hooks.filter((hook) => !hook.ok).length
  return [
    `closed (${report.reason}) ${report.graceful ? 'gracefully' : 'FORCED'} in ${Math.round(report.durationMs)} ms:`,
    `requests ${requests.completed} completed, ${requests.refused} refused, ${requests.forced} forced;`,
    `tasks ${tasks.completed} completed, ${tasks.failed} failed, ${tasks.aborted} aborted;`,
    `hooks ${hooks.length - failed} ok, ${failed} failed;`,
    `exit code ${report.exitCode}`,
  ].join(' ')
}
