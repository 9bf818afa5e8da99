import http from 'node:http'
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2'
import { type Deferred, deferred, listen } from '@lameduck/test-utils'
import {
  createShutdown,
  onResponseClosed,
  type Shutdown,
  type ShutdownOptions,
  writeRefusal,
} from '../../src/index.js'

/** A raw node:http app using the core the way an adapter does, with parkable handlers. */
export interface TestApp {
  server: http.Server
  shutdown: Shutdown
  port: number
  /** Handler runs so far, by path. */
  hits: string[]
  /** Requests to `/slow` park here until released; resolves with the response parked. */
  parked: Deferred<void>[]
  /** Resolves when a request reaches `/slow`. */
  nextParked(): Promise<Deferred<void>>
}

/** How the handler counts its request: `admit()` as the adapters do, or `enter()` + `onResponseClosed()`. */
export type Gate = 'admit' | 'enter'

/**
 * Counts the request `via` one gate or the other (`enter()` released by `onResponseClosed()`), or
 * answers the refusal and returns false.
 */
export function passGate(
  shutdown: Shutdown,
  via: Gate,
  req: http.IncomingMessage | Http2ServerRequest,
  res: http.ServerResponse | Http2ServerResponse,
): boolean {
  if (via === 'admit') {
    if (shutdown.admit(req, res)) return true
  } else {
    const release = shutdown.enter(req, res)
    if (release !== undefined) {
      onResponseClosed(res, release)
      return true
    }
  }
  writeRefusal(req, res, shutdown.refusal(req))
  return false
}

export async function startApp(options: ShutdownOptions = {}, via: Gate = 'admit'): Promise<TestApp> {
  const shutdown = createShutdown({ signals: false, logger: false, ...options })
  const hits: string[] = []
  const parked: Deferred<void>[] = []
  // The n-th call of nextParked() resolves with the n-th request to park, however they interleave.
  const arrivals: Deferred<Deferred<void>>[] = []
  let consumed = 0
  const arrival = (index: number) => {
    while (arrivals.length <= index) arrivals.push(deferred())
    return arrivals[index] as Deferred<Deferred<void>>
  }
  const server = http.createServer((req, res) => {
    // admit(): the adapters' gate, released by the core when the response (or its socket) closes.
    // The conformance suite's raw app covers enter() + onResponseClosed() too.
    if (!passGate(shutdown, via, req, res)) return
    hits.push(req.url ?? '')
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', async () => {
      if (req.url === '/poll' && !shutdown.signal.aborted) {
        await new Promise((resolve) => shutdown.signal.addEventListener('abort', resolve, { once: true }))
      }
      if (req.url === '/slow') {
        const gate = deferred<void>()
        arrival(parked.length).resolve(gate)
        parked.push(gate)
        await gate.promise
      }
      const body = req.url === '/echo' ? Buffer.concat(chunks).toString() : `ok ${req.url}`
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
  })
  shutdown.attach(server)
  const port = await listen(server)
  return { server, shutdown, port, hits, parked, nextParked: () => arrival(consumed++).promise }
}
