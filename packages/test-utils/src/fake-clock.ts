/**
 * A deterministic clock for the core's `clock` option: time moves only when a test calls
 * `advance()`, and timers due by then fire in order (microtasks flushed between them, so promise
 * chains inside the shutdown settle as they would in real time).
 */
export interface FakeClock {
  now(): number
  setTimeout(callback: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
  /** Moves time forward by `ms`, firing every timer due on the way. */
  advance(ms: number): Promise<void>
  /** Lets pending promise callbacks run without moving time. */
  flush(): Promise<void>
  /** Timers still scheduled. */
  readonly pending: number
}

interface Timer {
  id: number
  at: number
  callback: () => void
}

/** Creates a {@link FakeClock} starting at `start` ms. */
export function createFakeClock(start = 0): FakeClock {
  let now = start
  let nextId = 1
  const timers = new Map<number, Timer>()
  const flush = async () => {
    for (let i = 0; i < 20; i++) await Promise.resolve()
  }
  return {
    now: () => now,
    setTimeout(callback, ms) {
      const timer = { id: nextId++, at: now + Math.max(0, ms), callback }
      timers.set(timer.id, timer)
      return timer.id
    },
    clearTimeout(handle) {
      timers.delete(handle as number)
    },
    async advance(ms) {
      const target = now + ms
      await flush()
      for (;;) {
        let due: Timer | undefined
        for (const timer of timers.values()) {
          if (
            timer.at <= target &&
            (due === undefined || timer.at < due.at || (timer.at === due.at && timer.id < due.id))
          )
            due = timer
        }
        if (due === undefined) break
        timers.delete(due.id)
        now = Math.max(now, due.at)
        due.callback()
        await flush()
      }
      now = target
      await flush()
    },
    flush,
    get pending() {
      return timers.size
    },
  }
}
