import type { AnyResponse } from './refusal.js'

/**
 * Calls `callback` once when `res` has closed — finished or aborted. Also listens on the socket:
 * a pipelined response Node never got to write may not emit `'close'` itself. Adapters release
 * their request from here (plus, where the framework tells, when the handler has settled).
 */
export function onResponseClosed(res: AnyResponse, callback: () => void): void {
  const socket = (res as { socket?: NodeJS.EventEmitter | null }).socket ?? undefined
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
