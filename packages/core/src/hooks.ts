import type { Clock } from './options.js'

/** A drain or close hook: gets an `AbortSignal` that aborts when its own timeout passes. */
export type Hook = (signal: AbortSignal) => unknown

/** What happened to one hook, as listed in the report. */
export interface HookOutcome {
  readonly label: string
  /** `'drain'`: started when draining began. `'close'`: ran after the drain, newest first. */
  readonly phase: 'drain' | 'close'
  readonly ok: boolean
  readonly timedOut: boolean
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

/**
 * Runs one hook, bounded: resolves when the hook settles or its timeout passes, whichever is first,
 * and never rejects. The timer stays ref'd so the process cannot slip out under a hook.
 */
export function runHook(
  entry: HookEntry,
  phase: HookOutcome['phase'],
  timeoutMs: number,
  clock: Clock,
  cutoff?: Promise<unknown>,
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
    const timer = clock.setTimeout(() => {
      controller.abort(new Error(`hook "${entry.label}" timed out after ${timeoutMs} ms`))
      settle(false, true, new Error(`timed out after ${timeoutMs} ms`))
    }, timeoutMs)
    // A drain hook is also bounded by the shutdown's deadline: it must not stretch the time budget.
    void cutoff?.then(() => {
      if (settled) return
      controller.abort(new Error(`hook "${entry.label}" still running at the shutdown deadline`))
      settle(false, true, new Error('still running at the shutdown deadline'))
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
