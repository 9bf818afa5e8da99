import http, { type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import net from 'node:net'

/** Listens on 127.0.0.1, port 0; resolves with the port. */
export function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve((server.address() as AddressInfo).port)
    })
  })
}

/** Ends a test server whatever state it is in: every socket destroyed, listener closed. */
export function closeServer(server: net.Server): Promise<void> {
  ;(server as http.Server).closeAllConnections?.()
  return new Promise((resolve) => {
    if (!server.listening) return resolve()
    server.close(() => resolve())
  })
}

/** One response as the client saw it. */
export interface Response {
  status: number
  headers: IncomingHttpHeaders
  body: string
  /** True when the response came on a socket that had served an earlier request. */
  reused: boolean
  /** The local port of the socket it came on (tells connections apart). */
  localPort: number
}

/** Options of {@link request}. */
export interface RequestOptions {
  method?: string
  path?: string
  headers?: Record<string, string>
  body?: string | Buffer
  agent?: http.Agent | false
}

const used = new WeakSet<net.Socket>()

/** A plain HTTP/1.1 request to 127.0.0.1:`port`; resolves with the whole response. */
export function request(port: number, options: RequestOptions = {}): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'GET',
        path: options.path ?? '/',
        headers: options.headers,
        agent: options.agent,
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('error', reject)
        res.on('end', () => {
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
            reused,
            localPort,
          })
        })
      },
    )
    let reused = false
    let localPort = 0
    req.on('socket', (socket) => {
      reused = used.has(socket)
      used.add(socket)
      const note = () => {
        localPort = socket.localPort ?? 0
      }
      if (socket.localPort) note()
      else socket.once('connect', note)
    })
    req.on('error', reject)
    req.end(options.body)
  })
}

/** A keep-alive agent with one socket: every request reuses the same connection. */
export function keepAliveAgent(maxSockets = 1): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets })
}

/** A raw TCP connection for hand-written requests. */
export interface RawConnection {
  readonly socket: net.Socket
  write(data: string | Buffer): void
  /** Everything received so far. */
  received(): string
  /** Resolves once `text` has been received (all of it so far contains it). */
  waitFor(text: string | RegExp, ms?: number): Promise<string>
  /** Resolves with everything received once the server closed the connection, and how it closed. */
  closed: Promise<{ data: string; error: NodeJS.ErrnoException | undefined }>
}

/** Opens a raw connection to 127.0.0.1:`port`. */
export async function rawConnect(port: number): Promise<RawConnection> {
  const socket = net.connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  let data = ''
  let error: NodeJS.ErrnoException | undefined
  const waiters = new Set<() => void>()
  socket.setEncoding('latin1')
  socket.on('data', (chunk: string) => {
    data += chunk
    for (const waiter of waiters) waiter()
  })
  socket.on('error', (err) => {
    error = err
  })
  const closed = new Promise<{ data: string; error: NodeJS.ErrnoException | undefined }>((resolve) => {
    socket.once('close', () => {
      for (const waiter of waiters) waiter()
      resolve({ data, error })
    })
  })
  return {
    socket,
    write: (chunk) => socket.write(chunk),
    received: () => data,
    waitFor(text, ms = 3000) {
      const matches = () => (typeof text === 'string' ? data.includes(text) : text.test(data))
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(
            new Error(
              `timed out after ${ms} ms waiting for ${String(text)}; received: ${JSON.stringify(data)}`,
            ),
          )
        }, ms)
        const check = () => {
          if (matches()) {
            clearTimeout(timer)
            waiters.delete(check)
            resolve(data)
          } else if (socket.destroyed) {
            clearTimeout(timer)
            waiters.delete(check)
            reject(new Error(`connection closed before ${String(text)}; received: ${JSON.stringify(data)}`))
          }
        }
        waiters.add(check)
        check()
      })
    },
    closed,
  }
}

/** A parsed raw HTTP/1.1 response. */
export interface RawResponse {
  status: number
  headers: Record<string, string>
  body: string
}

/** Splits what a raw connection received into responses (Content-Length bodies only). */
export function parseResponses(data: string): RawResponse[] {
  const responses: RawResponse[] = []
  let rest = data
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n')
    if (end === -1) break
    const [statusLine = '', ...lines] = rest.slice(0, end).split('\r\n')
    const headers: Record<string, string> = {}
    for (const line of lines) {
      const colon = line.indexOf(':')
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
    }
    const length = Number(headers['content-length'] ?? 0)
    responses.push({
      status: Number(statusLine.split(' ')[1]),
      headers,
      body: rest.slice(end + 4, end + 4 + length),
    })
    rest = rest.slice(end + 4 + length)
  }
  return responses
}

/** A hand-written HTTP/1.1 request. */
export function rawRequest(
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body = '',
): string {
  const all = {
    host: 'localhost',
    ...(body ? { 'content-length': String(Buffer.byteLength(body)) } : {}),
    ...headers,
  }
  return `${method} ${path} HTTP/1.1\r\n${Object.entries(all)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n${body}`
}

/** A WebSocket handshake request for `path`, as a browser or the `ws` client sends it. */
export function websocketHandshake(path: string): string {
  return rawRequest('GET', path, {
    connection: 'Upgrade',
    upgrade: 'websocket',
    'sec-websocket-version': '13',
    'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
  })
}
