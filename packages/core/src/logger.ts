import { callSafely } from './lifecycle.js'

const ignore = (): void => {}
/**
 * What the core logs through. Methods are called as methods (`logger.info(...)`), so pino, its child
 * loggers and `console` all work. Convention: pino's — structured fields first, then the message.
 */
export interface Logger {
  /** The steps of a shutdown (started, stopping, closed) and a server attached on its first request. */
  info(fields: Record<string, unknown>, message: string): void
  /** What the app should know: the deadline forcing requests, a second signal, `drainDelayMs` 0 in Kubernetes. */
  warn(fields: Record<string, unknown>, message: string): void
  /** A failed hook or task, or an event listener that threw (`fields.err`); a third signal. */
  error(fields: Record<string, unknown>, message: string): void
  /** Called, when present, before the watchdog exits the process (pino's `flush`). */
  flush?(): void
}

// The default: one readable line per event on stderr, fields left out (they are for structured loggers).
function line(level: string, message: string, fields: Record<string, unknown>): void {
  const error = fields.err instanceof Error ? `\n${fields.err.stack ?? String(fields.err)}` : ''
  console.error(`[lameduck] ${level === 'info' ? '' : `${level}: `}${message}${error}`)
}

/** The default logger: `[lameduck] message` on stderr; errors with their stack. */
export const consoleLogger: Logger = {
  info: (fields, message) => line('info', message, fields),
  warn: (fields, message) => line('warn', message, fields),
  error: (fields, message) => line('error', message, fields),
}

/** `logger: false`. */
export const silentLogger: Logger = { info() {}, warn() {}, error() {} }

/** Calls the user's logger without letting a throwing logger break the shutdown. */
export function safeLogger(
  logger: Logger,
): Required<Pick<Logger, 'info' | 'warn' | 'error'>> & { flush(): void } {
  // A logger that throws, or whose async methods reject, must not turn a graceful shutdown into a crash.
  const call = (level: 'info' | 'warn' | 'error') => (fields: Record<string, unknown>, message: string) =>
    callSafely(() => logger[level](fields, message), ignore)
  return {
    info: call('info'),
    warn: call('warn'),
    error: call('error'),
    flush: () => {
      try {
        logger.flush?.()
      } catch {}
    },
  }
}
