import http from 'node:http'
import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'

/** Which route a client drives. */
export type Route = 'order' | 'fast'

/** How one request ended, as the client saw it. */
export type OutcomeKind =
  /** 2xx, connection kept open. */
  | 'served'
  /** 2xx with `Connection: close`: the server's clean way to end a keep-alive connection. */
  | 'served-close'
  /** A complete 503. */
  | 'refusal-503'
  /** Any other complete answer (4xx, 500…). */
  | 'other-status'
  /** The connection broke before an answer: ECONNRESET, "socket hang up", EPIPE. */
  | 'reset'
  /** Headers arrived, the body did not finish. */
  | 'truncated'
  /** A new connection was refused (ECONNREFUSED): the listener is closed or the process is gone. */
  | 'refused'
  /** No answer within the per-request bound. */
  | 'timeout'

/** One request's outcome; times are `performance.now()` milliseconds. */
export interface Outcome {
  readonly route: Route
  readonly kind: OutcomeKind
  readonly sentAt: number
  readonly endedAt: number
  readonly status?: number
  /** The id of an acknowledged order (a 201 from `POST /orders`). */
  readonly orderId?: number
  /** The error code of a reset. */
  readonly code?: string
}

/** Options of {@link startLoad}. */
export interface LoadOptions {
  readonly port: number
  /** Keep-alive connections sending `POST /orders` back to back. */
  readonly orderClients: number
  /** Keep-alive connections sending `GET /fast`, each once every `fastIntervalMs`. */
  readonly fastClients: number
  readonly fastIntervalMs: number
  /** No request is sent at or after this `performance.now()` time. */
  readonly endAt: number
  /** Bound on requests per connection, whatever the time. */
  readonly maxRequestsPerClient: number
  /** A request with no answer after this long is abandoned and counted as `timeout`. */
  readonly requestTimeoutMs: number
  onOutcome(outcome: Outcome): void
}

const ORDER_BODY = JSON.stringify({ item: 'rubber duck', qty: 1 })

/**
 * Drives keep-alive load until `endAt`. Each client owns one pooled connection (an agent with one
 * socket, like a proxy's upstream pool) and stops once a new connection is refused: the server is
 * gone for it, as a load balancer would conclude. Resolves when every client has stopped.
 */
export function startLoad(options: LoadOptions): { done: Promise<void>; stop(): void } {
  let stopped = false
  const agents: http.Agent[] = []
  const watched = new WeakSet<Socket>()

  // Node's agent hands out a pooled socket that has already received the server's FIN (it only
  // skips destroyed ones), and the request then fails with "socket hang up". Any proper client drops a
  // connection the server closed before reusing it; so does this one. A request written before the
  // FIN arrived still fails, and is counted.
  function dropOnServerClose(socket: Socket): void {
    if (watched.has(socket)) return
    watched.add(socket)
    socket.once('end', () => socket.destroy())
  }

  async function client(route: Route, index: number, total: number): Promise<void> {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    agents.push(agent)
    // Spread the fast clients over one interval so the server sees a steady stream.
    if (route === 'fast') await pause((options.fastIntervalMs * index) / total)
    for (let sent = 0; sent < options.maxRequestsPerClient; sent++) {
      if (stopped || performance.now() >= options.endAt) break
      const outcome = await send(agent, route)
      options.onOutcome(outcome)
      if (outcome.kind === 'refused') break
      await pause(route === 'fast' ? options.fastIntervalMs : 0)
    }
    agent.destroy()
  }

  function send(agent: http.Agent, route: Route): Promise<Outcome> {
    return new Promise((resolve) => {
      const sentAt = performance.now()
      let answered = false
      let settled = false
      const finish = (kind: OutcomeKind, extra: Partial<Outcome> = {}) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        resolve({ route, kind, sentAt, endedAt: performance.now(), ...extra })
      }
      const req = http.request(
        {
          host: '127.0.0.1',
          port: options.port,
          agent,
          method: route === 'order' ? 'POST' : 'GET',
          path: route === 'order' ? '/orders' : '/fast',
          headers: route === 'order' ? { 'content-type': 'application/json' } : {},
        },
        (res) => {
          answered = true
          const chunks: Buffer[] = []
          res.on('data', (chunk: Buffer) => chunks.push(chunk))
          res.on('error', () => {}) // classified on 'close' from `res.complete`
          res.on('close', () => {
            const status = res.statusCode ?? 0
            if (!res.complete) return finish('truncated', { status })
            if (status === 503) return finish('refusal-503', { status })
            if (status < 200 || status > 299) return finish('other-status', { status })
            const closing = /\bclose\b/i.test(res.headers.connection ?? '')
            let orderId: number | undefined
            if (route === 'order' && status === 201) {
              try {
                orderId = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { id?: number }).id
              } catch {
                return finish('truncated', { status })
              }
            }
            finish(closing ? 'served-close' : 'served', {
              status,
              ...(orderId === undefined ? {} : { orderId }),
            })
          })
        },
      )
      req.on('socket', dropOnServerClose)
      req.on('error', (error: NodeJS.ErrnoException) => {
        if (answered) return // the response's own 'close' says whether it was complete
        if (error.code === 'ECONNREFUSED') finish('refused', { code: error.code })
        else finish('reset', { code: error.code ?? error.message })
      })
      const timer = setTimeout(() => {
        finish('timeout')
        req.destroy()
      }, options.requestTimeoutMs)
      req.end(route === 'order' ? ORDER_BODY : undefined)
    })
  }

  const clients = [
    ...Array.from({ length: options.orderClients }, (_, i) => client('order', i, options.orderClients)),
    ...Array.from({ length: options.fastClients }, (_, i) => client('fast', i, options.fastClients)),
  ]
  return {
    done: Promise.all(clients).then(() => undefined),
    stop() {
      stopped = true
      for (const agent of agents) agent.destroy()
    },
  }
}

// The client's pacing. The timer callback only schedules the send with setImmediate, so the poll
// phase runs in between: a FIN already waiting on the pooled socket is read first (and the socket
// dropped, above), and the agent opens a new connection instead of writing onto a closed one — the
// check any pooling client makes before reusing a connection. A close still in flight when the
// request is written stays a race, and is counted as a reset.
function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(() => setImmediate(resolve), ms))
}
