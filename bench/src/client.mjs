// A minimal HTTP/1.1 client on raw sockets, loopback only. Node's http.Agent retries, pools and
// reports a reused socket closing under a request in ways that blur what the server did; here each
// connection is one socket, one request at a time, and every way a request can end is named.
import net from 'node:net'
import { performance } from 'node:perf_hooks'

const HOST = '127.0.0.1'
const CRLF_CRLF = Buffer.from('\r\n\r\n')
const CRLF = Buffer.from('\r\n')

/**
 * Opens a connection. Resolves with `{ conn }`, or `{ failure }` where failure.kind is `'refused'`
 * (ECONNREFUSED: nothing listening), `'reset'` (reset or closed during the handshake: a connection the
 * listener never accepted) or `'timeout'`.
 */
export function openConnection(port, { timeoutMs = 5_000 } = {}) {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: HOST })
    const timer = setTimeout(() => {
      socket.destroy()
      resolve({ failure: { kind: 'timeout', code: 'CONNECT_TIMEOUT', at: performance.now() } })
    }, timeoutMs)
    const onError = (error) => {
      clearTimeout(timer)
      const kind = error.code === 'ECONNREFUSED' ? 'refused' : 'reset'
      resolve({ failure: { kind, code: error.code ?? 'ERROR', at: performance.now() } })
    }
    socket.once('error', onError)
    socket.once('connect', () => {
      clearTimeout(timer)
      socket.off('error', onError)
      resolve({ conn: createConnection(socket) })
    })
  })
}

/**
 * Wraps a connected socket. `request(path)` resolves with one outcome, never rejects:
 * - `{ kind: 'response', status, headers, body, close, at }` (`at`: when its last byte arrived);
 * - `{ kind: 'reset', code, bytes, at }`: the socket errored or closed before the response was
 *   complete (`bytes` of it had arrived; `code` ECONNRESET, EPIPE, or EOF for a plain close);
 * - `{ kind: 'timeout', bytes, at }` after `timeoutMs` (the socket is then destroyed).
 */
export function createConnection(socket) {
  socket.setNoDelay(true)
  let buffer = Buffer.alloc(0)
  let pending // { resolve, timer, parse state }
  let errorCode
  let closedAt
  let resolveClosed
  const closed = new Promise((resolve) => {
    resolveClosed = resolve
  })

  socket.on('data', (chunk) => {
    buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk])
    if (pending) parse()
  })
  socket.on('error', (error) => {
    errorCode = error.code ?? 'ERROR'
  })
  socket.on('end', () => {
    // A body delimited by the end of the connection is complete now.
    if (pending?.mode === 'eof') finish(Buffer.concat(pending.chunks.concat(buffer)))
  })
  socket.on('close', () => {
    closedAt = performance.now()
    if (pending) fail('reset', errorCode ?? 'EOF')
    resolveClosed({ at: closedAt, code: errorCode })
  })

  function fail(kind, code) {
    const { resolve, timer, received } = pending
    pending = undefined
    clearTimeout(timer)
    resolve({ kind, code, bytes: received + buffer.length, at: performance.now() })
  }

  function finish(body) {
    const { resolve, timer, status, headers } = pending
    pending = undefined
    clearTimeout(timer)
    const close = /\bclose\b/i.test(headers.connection ?? '')
    resolve({ kind: 'response', status, headers, body, close, at: performance.now() })
  }

  function parse() {
    for (;;) {
      const state = pending
      if (!state) return
      if (state.mode === 'head') {
        const end = buffer.indexOf(CRLF_CRLF)
        if (end === -1) return
        const lines = buffer.subarray(0, end).toString('latin1').split('\r\n')
        buffer = buffer.subarray(end + 4)
        state.received += end + 4
        const status = Number(lines[0].split(' ')[1])
        if (status >= 100 && status < 200) continue // an interim answer; the real one follows
        const headers = {}
        for (const line of lines.slice(1)) {
          const colon = line.indexOf(':')
          headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
        }
        state.status = status
        state.headers = headers
        if (/chunked/i.test(headers['transfer-encoding'] ?? '')) state.mode = 'chunked'
        else if (headers['content-length'] !== undefined) {
          state.mode = 'length'
          state.left = Number(headers['content-length'])
        } else state.mode = status === 204 || status === 304 ? 'length' : 'eof'
        state.left ??= 0
      } else if (state.mode === 'length') {
        const take = Math.min(state.left, buffer.length)
        state.chunks.push(buffer.subarray(0, take))
        buffer = buffer.subarray(take)
        state.left -= take
        state.received += take
        if (state.left > 0) return
        finish(Buffer.concat(state.chunks))
      } else if (state.mode === 'chunked') {
        const lineEnd = buffer.indexOf(CRLF)
        if (lineEnd === -1) return
        const size = Number.parseInt(buffer.subarray(0, lineEnd).toString('latin1'), 16)
        if (size === 0) {
          // Last chunk, then (no) trailers and the blank line.
          const end = buffer.indexOf(CRLF_CRLF, lineEnd)
          if (end === -1) return
          buffer = buffer.subarray(end + 4)
          finish(Buffer.concat(state.chunks))
          continue
        }
        if (buffer.length < lineEnd + 2 + size + 2) return
        state.chunks.push(buffer.subarray(lineEnd + 2, lineEnd + 2 + size))
        state.received += lineEnd + 4 + size
        buffer = buffer.subarray(lineEnd + 2 + size + 2)
      } else {
        state.chunks.push(buffer)
        state.received += buffer.length
        buffer = Buffer.alloc(0)
        return
      }
    }
  }

  return {
    socket,
    closed,
    get isOpen() {
      return closedAt === undefined && !socket.destroyed && socket.writable
    },
    /** Sends `GET path` and resolves with its outcome (see above). One request at a time. */
    request(path, { timeoutMs = 10_000, headers = {} } = {}) {
      if (pending) throw new Error('one request at a time per connection')
      return new Promise((resolve) => {
        const sentAt = performance.now()
        if (closedAt !== undefined || socket.destroyed) {
          resolve({ kind: 'reset', code: errorCode ?? 'EOF', bytes: 0, at: sentAt, unsent: true })
          return
        }
        const timer = setTimeout(() => {
          if (!pending) return
          fail('timeout', 'TIMEOUT')
          socket.destroy()
        }, timeoutMs)
        pending = { resolve, timer, mode: 'head', chunks: [], received: 0, sentAt }
        const extra = Object.entries(headers)
          .map(([name, value]) => `${name}: ${value}\r\n`)
          .join('')
        socket.write(`GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\n${extra}\r\n`)
        if (buffer.length > 0) parse()
      })
    },
    destroy() {
      socket.destroy()
    },
  }
}

/** Opens `count` connections, at most `parallel` connecting at once; resolves with conns and failures. */
export async function openMany(port, count, { parallel = 200, timeoutMs = 10_000 } = {}) {
  const conns = []
  const failures = []
  let next = 0
  async function worker() {
    while (next < count) {
      next++
      const { conn, failure } = await openConnection(port, { timeoutMs })
      if (conn) conns.push(conn)
      else failures.push(failure)
    }
  }
  await Promise.all(Array.from({ length: Math.min(parallel, count) }, worker))
  return { conns, failures }
}
