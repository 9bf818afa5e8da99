import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2'

/** The one 503 every adapter writes, byte for byte: status, headers (lower-case names) and body. */
export interface Refusal {
  /** Always 503 Service Unavailable. */
  readonly status: 503
  /** `content-type`, `content-length`, `retry-after`, and on HTTP/1 `connection: close`. */
  readonly headers: Readonly<Record<string, string>>
  /** A JSON body in Fastify's error shape. */
  readonly body: string
}

/** A Node request of either protocol, as seen by `'request'` listeners. */
export type AnyRequest = IncomingMessage | Http2ServerRequest
/** A Node response of either protocol. */
export type AnyResponse = ServerResponse | Http2ServerResponse

// Byte for byte what Fastify answers while it is closing, so a client sees one body whatever the stack.
const BODY = '{"error":"Service Unavailable","message":"Service Unavailable","statusCode":503}'
const BODY_BYTES = String(Buffer.byteLength(BODY))

// How much of an unread request body is read and thrown away before the socket closes: enough for
// ordinary uploads; past it the client may see a reset, which is better than reading forever.
const DISCARD_LIMIT_BYTES = 1024 * 1024
/** How long, at most, an unread request body is read and thrown away before its socket closes. */
export const DISCARD_LIMIT_MS = 2_000

/** Builds the refusal. `Connection: close` only for HTTP/1.x: it is a protocol error in HTTP/2. */
export function buildRefusal(retryAfterSeconds: number, httpVersionMajor = 1): Refusal {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'content-length': BODY_BYTES,
    'retry-after': String(retryAfterSeconds),
  }
  if (httpVersionMajor < 2) headers.connection = 'close'
  return { status: 503, headers, body: BODY }
}

/**
 * Writes `refusal` raw — `writeHead` and the body, no framework helper — and closes the connection
 * without losing the answer to a TCP reset: an unread request body is read and discarded (bounded)
 * before the response ends, because closing a socket with unread input makes the kernel send RST,
 * which can destroy the 503 before the client reads it. The client has the whole answer at once
 * (`Content-Length`), only the close waits.
 */
export function writeRefusal(req: AnyRequest, res: AnyResponse, refusal: Refusal): void {
  refused.add(req)
  if (res.headersSent || res.writableEnded) {
    res.end()
    return
  }
  const response = res as ServerResponse
  // Headers a framework or our own gate set earlier (X-Powered-By, Connection) would change the
  // bytes; the refusal is the same everywhere.
  for (const name of response.getHeaderNames()) response.removeHeader(name)
  response.writeHead(refusal.status, refusal.headers)
  if (!hasUnreadBody(req, res)) {
    response.end(refusal.body)
    return
  }
  response.write(refusal.body)
  let read = 0
  let finished = false
  const finish = () => {
    if (finished) return
    finished = true
    clearTimeout(timer)
    req.off('data', onData)
    response.end()
  }
  const onData = (chunk: Buffer) => {
    read += chunk.length
    if (read > DISCARD_LIMIT_BYTES) finish()
  }
  const timer = setTimeout(finish, DISCARD_LIMIT_MS)
  timer.unref()
  req.on('data', onData)
  req.once('end', finish)
  req.once('error', finish)
  req.once('close', finish)
  req.resume()
}

/**
 * Requests answered by writeRefusal(), which reads and discards their bodies within its own limits:
 * the tracker's wait before a last response's close (closeAfterBody) leaves them alone.
 */
export const refused = new WeakSet<AnyRequest>()

const UPGRADE_TOKEN = /(?:^|,)\s*upgrade\s*(?:,|$)/i
const WEBSOCKET_TOKEN = /(?:^|,)\s*websocket\s*(?:,|$)/i

/**
 * True for an HTTP/1 WebSocket handshake: `websocket` among the `Upgrade` tokens and `upgrade` among
 * the `Connection` ones. Node emits one as `'request'` when the server has no `'upgrade'` listener
 * (koa-easy-ws upgrades it from a middleware), and @fastify/websocket routes the ones it gets through
 * Fastify's hooks. Other upgrades (`h2c`, which `curl --http2` asks for, `TLS/1.0`) are served as
 * plain HTTP by Node and counted as any request.
 */
export function isWebSocketHandshake(req: AnyRequest): boolean {
  if (req.httpVersionMajor >= 2) return false
  const { upgrade, connection } = req.headers
  return (
    typeof upgrade === 'string' &&
    typeof connection === 'string' &&
    WEBSOCKET_TOKEN.test(upgrade) &&
    UPGRADE_TOKEN.test(connection)
  )
}

/** True while the request may still send body bytes (`Expect: 100-continue` taken as sent). */
export function mayHaveBody(req: AnyRequest): boolean {
  if (req.complete) return false
  if (req.headers['transfer-encoding'] !== undefined) return true
  const length = Number(req.headers['content-length'] ?? 0)
  return Number.isFinite(length) && length > 0
}

const EXPECT_CONTINUE = /^\s*100-continue\s*$/i

/**
 * A request that asked for `100 Continue` sends its body only once it got one: from Node itself (a
 * server with no `'checkContinue'` listener when the request arrived), or from whoever called
 * `writeContinue()`. Node notes that on the response (`_sent100`, read only, as Node sets it from
 * v0.x to today); without it, no body is taken to be coming, and the refusal closes at once.
 */
function hasUnreadBody(req: AnyRequest, res: AnyResponse): boolean {
  const expect = req.headers.expect
  if (typeof expect === 'string' && EXPECT_CONTINUE.test(expect)) {
    return (res as { _sent100?: unknown })._sent100 === true && mayHaveBody(req)
  }
  return mayHaveBody(req)
}
