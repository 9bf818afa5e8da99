import { callSafely } from './lifecycle.js'
import { signalNumber } from './options.js'

/**
 * The process-wide signal coordinator — the only file that touches `process`. Several Shutdowns, or
 * two copies of this package (ESM and CJS, two versions), share one coordinator stored on
 * `globalThis` under a `Symbol.for` key with a versioned shape, so one listener per signal is
 * installed, every Shutdown is closed, and the process exits once with the highest exit code.
 */

/** The registry key. Changing the shape of {@link SignalCoordinator} means a new `version`. */
const COORDINATOR_KEY = Symbol.for('lameduck.signal-coordinator')
/**
 * Signals this soon after the one before count as it, whatever their names: one request to stop
 * often arrives twice — Ctrl-C reaches every process of the terminal's group, and a wrapper (npm,
 * pnpm, a cluster primary) may pass it on again, as SIGINT or as SIGTERM, within milliseconds.
 */
const DUPLICATE_WINDOW_MS = 500

type Log = {
  info(fields: Record<string, unknown>, message: string): void
  warn(fields: Record<string, unknown>, message: string): void
  error(fields: Record<string, unknown>, message: string): void
  flush(): void
}

/** What a Shutdown registers. Version 1 of the shape; only ever extended with optional members. */
export interface SignalMember {
  readonly signals: readonly string[]
  readonly exit: boolean | ((code: number) => void)
  readonly exitWatchdogMs: number
  readonly log: Log
  /** First signal: starts (or joins) the shutdown and resolves with its exit code. */
  close(signal: string): Promise<number>
  /** Second signal: the deadline is now. */
  force(signal: string): void
  /** Our own labels for what may still hold the event loop, for the watchdog's log line. */
  describeHandles(): string[]
}

interface SignalCoordinator {
  readonly version: 1
  register(member: SignalMember): () => void
}

/** Registers a Shutdown with the process-wide coordinator; returns the unregister function. */
export function onSignals(member: SignalMember): () => void {
  const registry = globalThis as unknown as Record<symbol, SignalCoordinator | undefined>
  let coordinator = registry[COORDINATOR_KEY]
  if (
    coordinator === undefined ||
    typeof coordinator.register !== 'function' ||
    !(coordinator.version >= 1)
  ) {
    coordinator = createCoordinator()
    Object.defineProperty(registry, COORDINATOR_KEY, { value: coordinator, configurable: true })
  }
  return coordinator.register(member)
}

function createCoordinator(): SignalCoordinator {
  const members = new Set<SignalMember>()
  const handlers = new Map<string, () => void>()
  let signalCount = 0
  let previous: { signal: string; at: number } | undefined
  /** Per signal, the other listeners there (and warned of) when ours was installed. */
  const othersAtInstall = new Map<string, Set<unknown>>()

  function sync(): void {
    const wanted = new Set([...members].flatMap((member) => member.signals))
    for (const signal of wanted) {
      if (handlers.has(signal)) continue
      const others = process.listeners(signal as NodeJS.Signals)
      othersAtInstall.set(signal, new Set(others))
      if (others.length > 0) {
        first()?.log.warn(
          { signal, listeners: others.length },
          `${others.length} other ${signal} listener(s) already installed; they run beside lameduck and may exit the process before the drain ends`,
        )
      }
      const handler = () => onSignal(signal)
      handlers.set(signal, handler)
      process.on(signal, handler)
    }
    // Once a signal arrived, the listeners stay until the process exits: the next one forces.
    if (signalCount > 0) return
    for (const [signal, handler] of handlers) {
      if (wanted.has(signal)) continue
      process.off(signal, handler)
      handlers.delete(signal)
    }
  }

  function first(): SignalMember | undefined {
    return members.values().next().value
  }

  function onSignal(signal: string): void {
    const now = Date.now()
    // Also one kill of a signal two members listen for under two names (SIGIO and SIGPOLL): it
    // arrives under both at once.
    if (previous && now - previous.at < DUPLICATE_WINDOW_MS) {
      first()?.log.info(
        { signal, previous: previous.signal },
        `${signal} ${now - previous.at} ms after ${previous.signal}: taken as the same request to stop (signals within ${DUPLICATE_WINDOW_MS} ms count once)`,
      )
      return
    }
    previous = { signal, at: now }
    const number = signalNumber(signal)
    signalCount++
    const targets = [...members].filter((member) =>
      member.signals.some((name) => signalNumber(name) === number),
    )
    if (signalCount === 1 && targets.length === 0) {
      // Nobody to close (all closed already): behave as if we had never listened.
      for (const [name, handler] of handlers) process.off(name, handler)
      handlers.clear()
      process.kill(process.pid, signal)
      return
    }
    if (signalCount === 1) {
      warnOfLaterListeners(signal)
      void closeAll(signal, targets)
    } else if (signalCount === 2) {
      first()?.log.warn({ signal }, `second signal (${signal}): forcing the shutdown now`)
      for (const member of members) member.force(signal)
    } else {
      first()?.log.error({ signal }, `third signal (${signal}): exiting at once with code 1`)
      first()?.log.flush()
      exitNow(targets.length > 0 ? targets : [...members], 1)
    }
  }

  /**
   * Listeners for `signal` added after ours (close-with-grace, as Fastify's templates and fastify-cli
   * install it) run beside lameduck as those installed before do, and were never warned of: one that
   * ends the process, or closes the app, cuts the drain short.
   */
  function warnOfLaterListeners(signal: string): void {
    const ours = new Set<unknown>(handlers.values())
    const before = othersAtInstall.get(signal)
    const later = process
      .listeners(signal as NodeJS.Signals)
      .filter((listener) => !ours.has(listener) && !before?.has(listener)).length
    if (later === 0) return
    first()?.log.warn(
      { signal, listeners: later },
      `${later} other ${signal} listener(s) added after lameduck's run beside it (close-with-grace, for one); one that exits the process or closes the app cuts the drain short`,
    )
  }

  async function closeAll(signal: string, targets: SignalMember[]): Promise<void> {
    const codes = await Promise.all(targets.map((member) => member.close(signal).catch(() => 1)))
    const code = Math.max(0, ...codes)
    const custom = targets.find((member) => typeof member.exit === 'function')
    if (custom) {
      callExit(custom, code)
      return
    }
    const exiting = targets.filter((member) => member.exit === true)
    if (exiting.length === 0) return
    keepOrSetExitCode(code)
    // An IPC channel to a parent (a cluster worker, a process PM2 or a test runner forked) keeps the
    // event loop alive for good: without this the process would wait for the watchdog, and the
    // parent would see a stop that always takes exitWatchdogMs.
    process.channel?.unref()
    const graceMs = Math.max(...exiting.map((member) => member.exitWatchdogMs))
    const watchdog = setTimeout(() => {
      const ours = exiting.flatMap((member) => member.describeHandles())
      const resources = process.getActiveResourcesInfo().filter((name) => name !== 'TTYWrap')
      const log = exiting[0]?.log
      log?.warn(
        { handles: ours, resources },
        `the process did not exit within ${graceMs} ms of the shutdown; still holding the event loop: ${
          [...ours, ...resources].join(', ') || 'nothing visible'
        }; exiting with code ${process.exitCode}`,
      )
      log?.flush()
      process.exit()
    }, graceMs)
    // The watchdog alone must never keep the process alive.
    watchdog.unref()
    endWithoutTeardown()
  }

  /**
   * Once the event loop is empty and every `'exit'` listener has run, Node still frees the whole
   * environment and heap before the process is gone: about 10 ms on the bench machine, all of it
   * after the last response. Registered when the shutdown ends, after the app's, our last listener
   * ends the process with `process.exit()`, which skips that teardown (and native addons'
   * environment cleanup hooks, as any `process.exit()` does).
   */
  function endWithoutTeardown(): void {
    if (process.listeners('exit').includes(exitWithoutTeardown)) return
    process.prependListener('exit', noteLastAtExit)
    process.on('exit', exitWithoutTeardown)
    // A crash (an uncaught exception, an unhandled rejection) emits 'exit' before Node prints the
    // error and writes its report: that end stays Node's.
    process.on('uncaughtExceptionMonitor', keepNodeEnd)
  }

  /**
   * Node calls the listeners it had when `'exit'` began, even one removed meanwhile, and none added
   * since: ours must have been the last of those; if it was not (a listener came after it), the
   * end is left to Node.
   */
  let lastAtExit = false
  function noteLastAtExit(): void {
    lastAtExit = process.listeners('exit').at(-1) === exitWithoutTeardown
  }

  function exitWithoutTeardown(): void {
    // No argument: the code as the listeners left it, as Node's own end would read it.
    if (lastAtExit) process.exit()
  }

  function keepNodeEnd(): void {
    process.off('exit', noteLastAtExit)
    process.off('exit', exitWithoutTeardown)
    process.off('uncaughtExceptionMonitor', keepNodeEnd)
  }

  function exitNow(targets: SignalMember[], code: number): void {
    const custom = targets.find((member) => typeof member.exit === 'function')
    if (custom) callExit(custom, code)
    else process.exit(code)
  }

  /**
   * The app's own `exit(code)`: one that throws or rejects is logged, and the process ends with the
   * code as Node would on an empty event loop, `process.exitCode` set to `code` unless the app set one.
   */
  function callExit(member: SignalMember, code: number): void {
    callSafely(
      () => (member.exit as (code: number) => unknown)(code),
      (error) => {
        member.log.error({ err: error, code }, `the exit option's function failed; exit code ${code}`)
        keepOrSetExitCode(code)
      },
    )
  }

  /** Sets `process.exitCode` to `code`, unless the app set a non-zero one: that says more than ours. */
  function keepOrSetExitCode(code: number): void {
    const current = Number(process.exitCode ?? 0)
    process.exitCode = current !== 0 && Number.isFinite(current) ? current : code
  }

  return {
    version: 1,
    register(member) {
      // Every earlier Shutdown has closed (an app that restarts its server under `exit: false`): the
      // next signal is this one's first, not a second that would force it.
      if (members.size === 0) {
        signalCount = 0
        previous = undefined
      }
      members.add(member)
      sync()
      return () => {
        members.delete(member)
        sync()
      }
    },
  }
}
