import type { Clock } from './options.js'

/** A drain or close hook: gets an `AbortSignal` that aborts when its own timeout passes. */
export type Hook = (signal: AbortSignal) => unknown

/** What happened to one hook, as listed in the report. */
export interface HookOutcome {
  /** The label the hook was registered with. */
  readonly label: string
  /** `'drain'`: started when draining began. `'close'`: ran after the drain, newest first. */
  readonly phase: 'drain' | 'close'
  /** True when the hook settled without throwing or rejecting, within its timeout. */
  readonly ok: boolean
  /** True when its timeout passed first (its signal was aborted then; `ok` is false). */
  readonly timedOut: boolean
  /** Milliseconds from its start to its end (or to its timeout). */
  readonly durationMs: number
  /** What the hook threw or rejected with, stack intact; absent when it succeeded. */
  readonly error?: unknown
}

/** A registered hook: label, function, and its own timeout when it set one. */
export interface HookEntry {
  readonly label: string
  readonly run: Hook
  readonly timeoutMs: number | undefined
}

/** What else bounds a hook besides its own timeout. */
export interface HookBounds {
  /** Settles at the shutdown's deadline: a drain hook still running is cut there and then. */
  readonly cutoff?: Promise<unknown> | undefined
  /**
   * Settles when the shutdown is forced: a close hook still running gets at most `forcedTimeoutMs`
   * more, counted from then (a hook with less time left keeps its own timeout).
   */
  readonly forced?: { readonly promise: Promise<unknown>; readonly timeoutMs: number } | undefined
}

/**
 * Runs one hook, bounded: resolves when the hook settles or its timeout passes, whichever is first,
 * and never rejects. The timer stays ref'd so the process cannot slip out under a hook.
 */
export function runHook(
  entry: HookEntry,
  phase: HookOutcome['phase'],
  timeoutMs: number,
  clock: Clock,
  bounds: HookBounds = {},
): Promise<HookOutcome> {
  const startedAt = clock.now()
  const controller = new AbortController()
  return new Promise<HookOutcome>((resolve) => {
    let settled = false
    const settle = (ok: boolean, timedOut: boolean, error?: unknown) => {
      if (settled) return
      settled = true
      clock.clearTimeout(timer)
      const outcome = { label: entry.label, phase, ok, timedOut, durationMs: clock.now() - startedAt }
      resolve(error === undefined ? outcome : { ...outcome, error })
    }
    const timeOut = (why: string) => () => {
      controller.abort(new Error(`hook "${entry.label}" ${why}`))
      settle(false, true, new Error(why))
    }
    let timer = clock.setTimeout(timeOut(`timed out after ${timeoutMs} ms`), timeoutMs)
    // A drain hook is also bounded by the shutdown's deadline: it must not stretch the time budget.
    void bounds.cutoff?.then(() => {
      if (settled) return
      timeOut('still running at the shutdown deadline')()
    })
    // A second signal or force() while a close hook runs: what is left of it shrinks to the cap.
    const forced = bounds.forced
    void forced?.promise.then(() => {
      if (settled || clock.now() + forced.timeoutMs >= startedAt + timeoutMs) return
      clock.clearTimeout(timer)
      const endsAfterMs = clock.now() - startedAt + forced.timeoutMs
      timer = clock.setTimeout(
        timeOut(
          `timed out after ${endsAfterMs} ms (cut to ${forced.timeoutMs} ms once the shutdown was forced)`,
        ),
        forced.timeoutMs,
      )
    })
    try {
      Promise.resolve(entry.run(controller.signal)).then(
        () => settle(true, false),
        (error: unknown) => settle(false, false, error ?? new Error('rejected with no reason')),
      )
    } catch (error) {
      settle(false, false, error ?? new Error('threw with no reason'))
    }
  })
}
