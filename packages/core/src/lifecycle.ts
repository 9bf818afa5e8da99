import type { AnyResponse } from './refusal.js'

/**
 * Calls `callback` once when `res` has closed — finished or aborted. Also listens on the socket:
 * a pipelined response Node never got to write may not emit `'close'` itself. Adapters release
 * their request from here (plus, where the framework tells, when the handler has settled).
 */
export function onResponseClosed(res: AnyResponse, callback: () => void): void {
  // A response queued behind an earlier one on its connection has no `socket` yet (Node assigns it
  // when the response's turn comes), and is exactly the one that never emits 'close' if the client
  // leaves first: its request's socket is the same connection.
  const socket =
    (res as { socket?: NodeJS.EventEmitter | null }).socket ??
    (res as { req?: { socket?: NodeJS.EventEmitter | null } }).req?.socket ??
    undefined
  let called = false
  const once = () => {
    if (called) return
    called = true
    res.off('close', once)
    socket?.off('close', once)
    callback()
  }
  if (res.closed || (socket as { destroyed?: boolean } | undefined)?.destroyed) {
    queueMicrotask(once)
    return
  }
  res.once('close', once)
  // HTTP/2 responses expose a proxy, not a socket: their stream's 'close' reaches `res` anyway.
  if (socket && (res as { stream?: unknown }).stream === undefined) socket.once('close', once)
}

/** {@link onResponseClosed} as a promise. */
export function responseClosed(res: AnyResponse): Promise<void> {
  return new Promise((resolve) => onResponseClosed(res, resolve))
}

/**
 * Calls `callback` once `result` has settled (fulfilled or rejected) when it is a promise or any
 * thenable, at once otherwise — `undefined` included, which is what a `try { result = run() }
 * finally { whenSettled(result, release) }` sees when `run` threw. Adapters hold a request while a
 * handler chain runs with it; the rejection itself is left to whoever else holds `result`.
 */
export function whenSettled(result: unknown, callback: () => void): void {
  if (isThenable(result)) result.then(callback, callback)
  else callback()
}

/** True when `value` is a promise or any other thenable (an object or function with a `then` method). */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null | undefined)?.then === 'function'
}

/**
 * Calls the app's `fn` and hands what it threw, or what the promise it returned rejected with, to
 * `failed` (`rejected` tells which), never to the caller nor to an unhandled rejection: an app's
 * listener, logger or exit function must not crash a shutdown.
 */
export function callSafely(fn: () => unknown, failed: (error: unknown, rejected: boolean) => void): void {
  let result: unknown
  try {
    result = fn()
  } catch (error) {
    failed(error, false)
    return
  }
  if (isThenable(result)) Promise.resolve(result).catch((error: unknown) => failed(error, true))
}
