import { constants } from 'node:os'
import { CORE_PACKAGE, invalidOptionRange, invalidOptionType, unknownOption } from './errors.js'
import { consoleLogger, type Logger, silentLogger } from './logger.js'

/** What to do with a request arriving on an open connection once stopping has begun. */
export type LateRequestPolicy = 'serve' | 'refuse'

/** Timers and a clock; tests pass fakes. Handles returned by `setTimeout` are opaque. */
export interface Clock {
  /** The time in milliseconds; only differences between two readings are used. Default `Date.now()`. */
  now(): number
  /** Calls `callback` once after `ms` milliseconds; returns a handle for `clearTimeout`. */
  setTimeout(callback: () => void, ms: number): unknown
  /** Cancels a timer from `setTimeout`; unknown or spent handles are ignored. */
  clearTimeout(handle: unknown): void
}

/** Options of {@link createShutdown}. Every one is checked at creation; unknown keys are rejected. */
export interface ShutdownOptions {
  /** Milliseconds from the first signal (or `close()`) to the hard deadline for requests and tasks; the drain delay counts inside it. Default 20000. */
  timeoutMs?: number | undefined
  /** Milliseconds to keep serving, not ready, before the listener closes; lets load balancers route away. Must be below `timeoutMs`. Default 0. */
  drainDelayMs?: number | undefined
  /** Milliseconds each `onDrain`/`onClose` hook may take unless it sets its own. Default 5000. */
  hookTimeoutMs?: number | undefined
  /** Cap in milliseconds on each `onClose` hook once the shutdown was forced by a second signal or `force()`. Default 1000. */
  forcedHookTimeoutMs?: number | undefined
  /** Milliseconds the whole server must have received no request (counted from the start of stopping at the earliest) before idle keep-alive sockets are closed, so none is closed under a client about to reuse it. Default 50. */
  idleGraceMs?: number | undefined
  /** `'serve'` (default): the last request on an open connection is served with `Connection: close`. `'refuse'`: it gets the 503 refusal. */
  lateRequests?: LateRequestPolicy | undefined
  /** Signals that start the shutdown; `false` installs no listener. Default `['SIGTERM', 'SIGINT']`. */
  signals?: readonly NodeJS.Signals[] | false | undefined
  /** After a signal-started shutdown: `true` (default) sets `process.exitCode` and lets the process end, with a watchdog; `false` leaves the process alone; a function is called with the exit code instead. */
  exit?: boolean | ((code: number) => void) | undefined
  /** Exit codes: `graceful` (default 0) and `failed` (default 1: forced drain or a hook failed). A non-zero `process.exitCode` set by the app is kept. */
  exitCodes?: { graceful?: number | undefined; failed?: number | undefined } | undefined
  /** Milliseconds after the shutdown ends before the unref'd watchdog logs what holds the event loop and calls `process.exit`. Default 1000. */
  exitWatchdogMs?: number | undefined
  /** Seconds in the refusal's `Retry-After` header. Default 5. */
  retryAfterSeconds?: number | undefined
  /** Milliseconds between progress lines while stopping; 0 turns them off. Default 1000. */
  progressIntervalMs?: number | undefined
  /** `info`/`warn`/`error` called as methods with `(fields, message)` — pino's convention; `console` works too. `false` silences. Default: one line per event on stderr. */
  logger?: Logger | false | undefined
  /** Clock and timers (tests inject fakes). Default: `Date.now`, `setTimeout`, `clearTimeout`. */
  clock?: Clock | undefined
}

/**
 * Options after validation, every default applied (what {@link resolveOptions} returns); each member
 * means what the {@link ShutdownOptions} member of the same name does.
 */
export interface ResolvedOptions {
  /** {@link ShutdownOptions.timeoutMs}. */
  timeoutMs: number
  /** {@link ShutdownOptions.drainDelayMs}. */
  drainDelayMs: number
  /** {@link ShutdownOptions.hookTimeoutMs}. */
  hookTimeoutMs: number
  /** {@link ShutdownOptions.forcedHookTimeoutMs}. */
  forcedHookTimeoutMs: number
  /** {@link ShutdownOptions.idleGraceMs}. */
  idleGraceMs: number
  /** {@link ShutdownOptions.lateRequests}. */
  lateRequests: LateRequestPolicy
  /** {@link ShutdownOptions.signals}: `false` is an empty list; two names of one signal, one entry. */
  signals: readonly NodeJS.Signals[]
  /** {@link ShutdownOptions.exit}. */
  exit: boolean | ((code: number) => void)
  /** {@link ShutdownOptions.exitCodes}, both set. */
  exitCodes: { graceful: number; failed: number }
  /** {@link ShutdownOptions.exitWatchdogMs}. */
  exitWatchdogMs: number
  /** {@link ShutdownOptions.retryAfterSeconds}. */
  retryAfterSeconds: number
  /** {@link ShutdownOptions.progressIntervalMs}. */
  progressIntervalMs: number
  /** {@link ShutdownOptions.logger}: `false` is a silent logger. */
  logger: Logger
  /** {@link ShutdownOptions.clock}. */
  clock: Clock
}

/** Option names of {@link ShutdownOptions}, the list unknown keys are checked against. */
export const SHUTDOWN_OPTION_NAMES = [
  'timeoutMs',
  'drainDelayMs',
  'hookTimeoutMs',
  'forcedHookTimeoutMs',
  'idleGraceMs',
  'lateRequests',
  'signals',
  'exit',
  'exitCodes',
  'exitWatchdogMs',
  'retryAfterSeconds',
  'progressIntervalMs',
  'logger',
  'clock',
] as const

const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
}

// Signals a process can actually handle; SIGKILL and SIGSTOP cannot be caught.
const CATCHABLE = Object.keys(constants.signals).filter((name) => name !== 'SIGKILL' && name !== 'SIGSTOP')

/**
 * Checks every option once and applies the defaults — the only copy of them. `extraKeys` are the
 * names an adapter accepts beside the core options; `source` is the package named at the start of
 * each message: `@lameduck/core` (default), or the adapter the user called.
 * @throws TypeError or RangeError with `code: 'ERR_LAMEDUCK_INVALID_OPTION'`.
 */
export function resolveOptions(
  options: ShutdownOptions = {},
  extraKeys: readonly string[] = [],
  source: string = CORE_PACKAGE,
): ResolvedOptions {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw invalidOptionType('options', 'an object', options, source)
  }
  const known: readonly string[] = [...SHUTDOWN_OPTION_NAMES, ...extraKeys]
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) throw unknownOption(key, known, source)
  }
  const timeoutMs = milliseconds('timeoutMs', options.timeoutMs, 20_000, source)
  const drainDelayMs = milliseconds('drainDelayMs', options.drainDelayMs, 0, source)
  const delayProblem = drainDelayProblem(drainDelayMs, timeoutMs)
  if (delayProblem !== undefined) throw invalidOptionRange('drainDelayMs', delayProblem, drainDelayMs, source)
  const exitCodes = options.exitCodes === undefined ? {} : options.exitCodes
  if (exitCodes === null || typeof exitCodes !== 'object' || Array.isArray(exitCodes)) {
    throw invalidOptionType('exitCodes', 'an object { graceful?, failed? }', exitCodes, source)
  }
  for (const key of Object.keys(exitCodes)) {
    if (key !== 'graceful' && key !== 'failed')
      throw unknownOption(`exitCodes.${key}`, ['exitCodes.graceful', 'exitCodes.failed'], source)
  }
  const idleGraceMs = milliseconds('idleGraceMs', options.idleGraceMs, 50, source)
  if (options.idleGraceMs !== undefined && idleGraceMs >= timeoutMs - drainDelayMs) {
    // Idle connections could then be closed only at the deadline: every shutdown would be forced.
    // (Only when set: the default must not reject a short timeoutMs the user chose.)
    throw invalidOptionRange(
      'idleGraceMs',
      `below "timeoutMs" minus "drainDelayMs" (${timeoutMs - drainDelayMs}), the time left to close idle connections in`,
      idleGraceMs,
      source,
    )
  }
  return {
    timeoutMs,
    drainDelayMs,
    hookTimeoutMs: milliseconds('hookTimeoutMs', options.hookTimeoutMs, 5_000, source),
    forcedHookTimeoutMs: milliseconds('forcedHookTimeoutMs', options.forcedHookTimeoutMs, 1_000, source),
    idleGraceMs,
    lateRequests: oneOf('lateRequests', options.lateRequests, ['serve', 'refuse'] as const, 'serve', source),
    signals: signalList(options.signals, source),
    exit: exitOption(options.exit, source),
    exitCodes: {
      graceful: exitCode('exitCodes.graceful', exitCodes.graceful, 0, source),
      failed: exitCode('exitCodes.failed', exitCodes.failed, 1, source),
    },
    exitWatchdogMs: milliseconds('exitWatchdogMs', options.exitWatchdogMs, 1_000, source),
    retryAfterSeconds: integer(
      'retryAfterSeconds',
      options.retryAfterSeconds,
      5,
      { min: 0, max: 86_400, expected: 'a whole number of seconds from 0 to 86400' },
      source,
    ),
    progressIntervalMs: milliseconds('progressIntervalMs', options.progressIntervalMs, 1_000, source),
    logger: loggerOption(options.logger, source),
    clock: clockOption(options.clock, source),
  }
}

/**
 * A duration option: a finite number of milliseconds >= 0 (at most 2^31 - 1, what a Node timer
 * holds), `fallback` when undefined; errors name `source` (default `@lameduck/core`).
 */
/** The longest delay Node's timers take (2^31 - 1 ms); a longer one fires at once. */
const MAX_TIMER_MS = 2_147_483_647

export function milliseconds(
  name: string,
  value: unknown,
  fallback: number,
  source: string = CORE_PACKAGE,
): number {
  if (value === undefined) return fallback
  const expected = 'a finite number of milliseconds >= 0'
  if (typeof value !== 'number') throw invalidOptionType(name, expected, value, source)
  if (!isTimerMs(value)) throw invalidOptionRange(name, expected, value, source)
  return value
}

/** A duration a Node timer holds: a finite number of milliseconds from 0 to 2^31 - 1. */
export function isTimerMs(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 && value <= MAX_TIMER_MS
}

/**
 * What `drainDelayMs` must be when `delayMs` breaks the rule (below `timeoutMs`, since the delay
 * counts inside it; 0 always fits), for the error message; `undefined` when it fits.
 */
export function drainDelayProblem(delayMs: number, timeoutMs: number): string | undefined {
  return delayMs > 0 && delayMs >= timeoutMs
    ? `below "timeoutMs" (${timeoutMs}), since the delay counts inside it`
    : undefined
}

function integer(
  name: string,
  value: unknown,
  fallback: number,
  range: { min: number; max: number; expected: string },
  source: string,
): number {
  if (value === undefined) return fallback
  const { min, max, expected } = range
  if (typeof value !== 'number') throw invalidOptionType(name, expected, value, source)
  if (!Number.isInteger(value) || value < min || value > max)
    throw invalidOptionRange(name, expected, value, source)
  return value
}

function exitCode(name: string, value: unknown, fallback: number, source: string): number {
  return integer(
    name,
    value,
    fallback,
    { min: 0, max: 255, expected: 'a whole number from 0 to 255' },
    source,
  )
}

function oneOf<T extends string>(
  name: string,
  value: unknown,
  allowed: readonly T[],
  fallback: T,
  source: string,
): T {
  if (value === undefined) return fallback
  if (typeof value === 'string' && (allowed as readonly string[]).includes(value)) return value as T
  const expected = `one of ${allowed.map((v) => `"${v}"`).join(', ')}`
  throw typeof value === 'string'
    ? invalidOptionRange(name, expected, value, source)
    : invalidOptionType(name, expected, value, source)
}

function signalList(value: unknown, source: string): readonly NodeJS.Signals[] {
  if (value === undefined) return ['SIGTERM', 'SIGINT']
  if (value === false) return []
  const expected = 'an array of signal names such as ["SIGTERM", "SIGINT"], or false'
  if (!Array.isArray(value)) throw invalidOptionType('signals', expected, value, source)
  const byNumber = new Map<number, NodeJS.Signals>()
  for (const [index, signal] of (value as unknown[]).entries()) {
    if (typeof signal !== 'string')
      throw invalidOptionType(`signals[${index}]`, 'a signal name', signal, source)
    if (!CATCHABLE.includes(signal)) {
      throw invalidOptionRange(
        `signals[${index}]`,
        'a signal name a process can catch (not SIGKILL or SIGSTOP)',
        signal,
        source,
      )
    }
    // Two names of one signal (SIGIO and SIGPOLL, SIGABRT and SIGIOT) are one signal: kept once, or
    // a single kill would arrive under both names and count as a second signal.
    const number = signalNumber(signal)
    if (!byNumber.has(number)) byNumber.set(number, signal as NodeJS.Signals)
  }
  return [...byNumber.values()]
}

/** The number of a signal name (aliases share one), or -1 for a name this platform does not have. */
export function signalNumber(name: string): number {
  return (constants.signals as Record<string, number | undefined>)[name] ?? -1
}

function exitOption(value: unknown, source: string): boolean | ((code: number) => void) {
  if (value === undefined) return true
  if (typeof value === 'boolean' || typeof value === 'function')
    return value as boolean | ((code: number) => void)
  throw invalidOptionType('exit', 'a boolean or a function (code) => void', value, source)
}

/** An object whose `methods` are all functions; the message names the first one that is not. */
function withMethods<T>(
  name: string,
  value: unknown,
  methods: readonly string[],
  expected: string,
  source: string,
): T {
  if (value === null || typeof value !== 'object') throw invalidOptionType(name, expected, value, source)
  for (const method of methods) {
    const member = (value as Record<string, unknown>)[method]
    if (typeof member !== 'function')
      throw invalidOptionType(`${name}.${method}`, 'a function', member, source)
  }
  return value as T
}

function loggerOption(value: unknown, source: string): Logger {
  if (value === undefined) return consoleLogger
  if (value === false) return silentLogger
  const expected = 'an object with info, warn and error methods (pino, console), or false'
  return withMethods<Logger>('logger', value, ['info', 'warn', 'error'], expected, source)
}

function clockOption(value: unknown, source: string): Clock {
  if (value === undefined) return realClock
  const expected = 'an object with now, setTimeout and clearTimeout functions'
  return withMethods<Clock>('clock', value, ['now', 'setTimeout', 'clearTimeout'], expected, source)
}
