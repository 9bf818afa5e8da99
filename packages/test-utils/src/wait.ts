import type { EventEmitter } from 'node:events'

/** Resolves with `promise`, or rejects after `ms` with an error naming what we waited for. */
export function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** A promise with its resolve and reject exposed: handlers park on it, tests release them. */
export interface Deferred<T> {
  readonly promise: Promise<T>
  resolve(value: T): void
  reject(error: unknown): void
  readonly settled: boolean
}

/** Creates a {@link Deferred}. */
export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void
  let reject!: (error: unknown) => void
  let settled = false
  const promise = new Promise<T>((res, rej) => {
    resolve = (value) => {
      settled = true
      res(value)
    }
    reject = (error) => {
      settled = true
      rej(error)
    }
  })
  return {
    promise,
    resolve,
    reject,
    get settled() {
      return settled
    },
  }
}

/** Resolves with the arguments of the next `event` on `emitter`. */
export function nextEvent<T extends unknown[] = unknown[]>(emitter: EventEmitter, event: string): Promise<T> {
  return new Promise((resolve) => emitter.once(event, (...args: unknown[]) => resolve(args as T)))
}

/** Waits until `predicate()` is true, checking on every macrotask turn; fails with `what` after `ms`. */
export function until(predicate: () => boolean, ms: number, what: string): Promise<void> {
  return within(
    ms,
    new Promise<void>((resolve) => {
      const check = () => (predicate() ? resolve() : setImmediate(check))
      check()
    }),
    what,
  )
}
