import type { Server as HttpServer, IncomingMessage, ServerResponse } from 'node:http'
import type { Http2ServerRequest, Http2Session } from 'node:http2'
import { Server as NetServer, type Socket } from 'node:net'
import { type TLSSocket, Server as TlsServer } from 'node:tls'
import type { Clock } from './options.js'
import {
  type AnyRequest,
  type AnyResponse,
  DISCARD_LIMIT_MS,
  isWebSocketHandshake,
  mayHaveBody,
  type Refusal,
  refused,
  writeRefusal,
} from './refusal.js'

type Log = { info(fields: Record<string, unknown>, message: string): void }

/** Any server `attach()` takes: `http`, `https`, `http2` (plain or secure). */
export type AttachableServer = NetServer

/** Told once when a watched response has closed — or its socket has, for a response Node dropped. */
export interface ResponseWatcher {
  closed(): void
}

interface Connection {
  readonly socket: Socket
  /** Where it sits in the tracker's `connections` array (the last one moves in on removal); -1 once closed. */
  index: number
  /**
   * Responses not yet closed, in arrival order, and at the same index the watcher the shutdown set
   * (if counted). Arrays, not a Map: almost always 0 or 1 entries (more only when pipelining), and a
   * Map filled and emptied on every request costs several times more (hashing, table rebuilds).
   */
  readonly pending: ServerResponse[]
  readonly watchers: Array<ResponseWatcher | undefined>
  /** Requests pipelined behind this connection's last response (only ever set while stopping). */
  dropped: Set<AnyRequest> | undefined
  /** While stopping: when `pending` last emptied (or the socket opened). Not kept while serving. */
  idleSince: number
  /** A response with `Connection: close` has been chosen: anything pipelined after it is refused. */
  hasLastRequest: boolean
  /** Handed over by an `'upgrade'` (WebSocket): no longer HTTP, closed at the deadline or after the close hooks. */
  upgraded: boolean
  /**
   * While stopping, for a quiet connection Node finds inside a request head: `bytesRead` when last
   * looked at, and since when it has not changed (the head has stalled that long). −1 / −∞ otherwise.
   */
  headBytes: number
  headSince: number
  /**
   * The request of the newest response to close, when its body had not all arrived by then (an
   * upload answered early, a 401 or a 413, which Node reads and throws away; or one the app goes on
   * reading after answering): until it ends the connection is neither idle nor carrying a new
   * request. While stopping, the reaper leaves it alone until the body has ended. Undefined otherwise.
   */
  bodyPending: IncomingMessage | undefined
}

/** What the connection bookkeeping tells the shutdown. */
export interface TrackerEvents {
  /** The number of open connections or sessions dropped: the drain may be complete. */
  onConnectionsChanged(): void
  /** The tracker itself refused a request (`Expect: 100-continue` or an upgrade while stopping). */
  onRefused(): void
}

/**
 * Connection bookkeeping for every attached server, from public Node API only: the gate's view of the
 * wire. Draining changes nothing here; `stop()` closes listeners, gives each connection one last
 * request and closes idle sockets once the whole server has been quiet for `idleGraceMs`.
 */
export interface ServerTracker {
  attach(server: AttachableServer): void
  has(server: AttachableServer): boolean
  /** Sees a request; also called for a request that arrived before its server was attached. Idempotent. */
  observe(req: AnyRequest, res: AnyResponse): void
  /**
   * Tells `watcher` when the observed HTTP/1 response `res` closes (or its socket does: Node drops
   * responses pipelined behind a closed connection without a `'close'`). False when `res` is not
   * tracked here (HTTP/2, already closed, dropped): the caller must watch it itself.
   */
  watch(req: AnyRequest, res: AnyResponse, watcher: ResponseWatcher): boolean
  /**
   * The watcher set on the open HTTP/1 response `res` by {@link ServerTracker.watch}, `null` when it
   * has none, `undefined` when `res` is not held here (HTTP/2, closed, never seen).
   */
  watcherOf(req: AnyRequest, res: AnyResponse): ResponseWatcher | null | undefined
  /** True for a request pipelined behind a response that closes its connection: it must not run. */
  isDropped(req: AnyRequest): boolean
  stop(): void
  /** The deadline: destroys every socket and session. Returns how many it destroyed. */
  destroyAll(): number
  /** After the close hooks: ends whatever is left (upgraded sockets, sockets from before `attach`). */
  finish(): number
  readonly openConnections: number
  /**
   * True while a server may hold connections opened before attach() that the quiet reap has not
   * reached yet (or whose count is still being asked): the drain is not complete before it has.
   */
  readonly isAwaitingReap: boolean
  /** Open HTTP/1 connections with no response pending (what the reaper closes once quiet). */
  readonly idleConnections: number
  readonly serverCount: number
}

/** Creates the bookkeeping; `refusal(httpVersionMajor)` is the shutdown's refusal. */
export function createServerTracker(options: {
  clock: Clock
  idleGraceMs: number
  log: Log
  refusal: (httpVersionMajor: number) => Refusal
  events: TrackerEvents
}): ServerTracker {
  const { clock, idleGraceMs, log, events } = options
  const servers = new Set<NetServer>()
  // Open HTTP/1 connections: an array, and on each socket a property of this tracker's own pointing
  // to its entry. Not a Map keyed by socket: hashing a socket as it opens made every later
  // connection cost more — about 8 % more server CPU per request with a new connection per request
  // (plain node:http, hello world), against about 1.5 % this way.
  const connections: Connection[] = []
  const CONNECTION: unique symbol = Symbol('lameduck connection')
  type TrackedSocket = Socket & { [CONNECTION]?: Connection }
  const sessions = new Set<Http2Session>()
  // https: raw TCP sockets until their TLS handshake completes (they never reach a request).
  const handshaking = new Set<Socket>()
  // HTTP/2 servers: their sockets belong to sessions (GOAWAY at stopping), or, with allowHTTP1, are
  // tracked at their first HTTP/1 request. Never reaped as idle HTTP/1 sockets: that would cut the
  // streams of a session. Kept only to be destroyed at the deadline and after the close hooks.
  const http2Servers = new WeakSet<NetServer>()
  const http2Sockets = new Set<Socket>()
  let stopping = false
  /**
   * While stopping: when the last request arrived anywhere, or stopping began — whichever is later.
   * Not kept while serving, where nothing reads it: no clock read on the per-request path.
   */
  let lastRequestAt = Number.NEGATIVE_INFINITY
  let reapTimer: unknown
  /** When the armed check fires; −∞ once it has fired and waits for the poll phase to run. */
  let reapDueAt = Number.POSITIVE_INFINITY
  /** finish() ran: no more reaping (a check already queued finds nothing to do). */
  let finished = false
  /**
   * HTTP/1 servers that may hold connections opened before attach(): never seen open, so only Node's
   * closeIdleConnections() reaches them, and it destroys every idle socket of its server at once.
   */
  const untracked = new Set<NetServer>()
  /**
   * Of those, the ones whose count is not known yet or that the quiet reap has not reached: until it
   * has, the drain is not complete (finish() would destroy an idle one under a request on its way).
   */
  const unreaped = new Set<NetServer>()
  /** Delay before closeIdleConnections() runs again for busy connections from before attach(); doubles. */
  let recheckMs = UNTRACKED_RECHECK_MS
  /** Upgraded connections, kept as a count so openConnections is O(1) (it runs on every close). */
  let upgradedCount = 0

  function track(socket: Socket): Connection {
    const tracked = socket as TrackedSocket
    const known = tracked[CONNECTION]
    if (known) return known
    const connection: Connection = {
      socket,
      // Closed before it was ever seen (a request entered late, from a server attached late): kept
      // out of the list, since its 'close' will not come again.
      index: socket.closed ? -1 : connections.length,
      pending: [],
      watchers: [],
      dropped: undefined,
      idleSince: stopping ? clock.now() : Number.NEGATIVE_INFINITY,
      hasLastRequest: false,
      upgraded: false,
      headBytes: -1,
      headSince: Number.NEGATIVE_INFINITY,
      bodyPending: undefined,
    }
    tracked[CONNECTION] = connection
    if (connection.index === -1) return connection
    connections.push(connection)
    // One listener for every socket (no closure, no once wrapper per connection).
    socket.on('close', onSocketClose)
    if (stopping) scheduleReap(0)
    return connection
  }

  function onSocketClose(this: Socket): void {
    const connection = (this as TrackedSocket)[CONNECTION]
    if (connection === undefined || connection.index === -1) return
    const last = connections.pop() as Connection
    if (last !== connection) {
      connections[connection.index] = last
      last.index = connection.index
    }
    connection.index = -1
    if (connection.upgraded) upgradedCount--
    // Responses still pending here never close on their own if Node dropped them (pipelined
    // behind a response that closed the connection): the socket's close is theirs.
    if (connection.pending.length > 0) {
      const watchers = connection.watchers.splice(0)
      connection.pending.length = 0
      for (const watcher of watchers) watcher?.closed()
    }
    events.onConnectionsChanged()
  }

  function onConnection(this: NetServer, socket: Socket): void {
    if (http2Servers.has(this)) {
      http2Sockets.add(socket)
      socket.once('close', () => http2Sockets.delete(socket))
    } else if (this instanceof TlsServer) {
      handshaking.add(socket)
      socket.once('close', () => handshaking.delete(socket))
    } else {
      track(socket)
    }
  }

  function onSecureConnection(this: NetServer, socket: Socket): void {
    // The raw socket under this TLS socket: the same TCP connection, so the same four addresses.
    // Public fields only, no `_parent`. The peer alone is not enough: behind a proxy or sidecar, one
    // client port may reach two attached https servers, and the other server's stalled handshake
    // would be forgotten, open until Node's handshakeTimeout (120 s).
    if (socket.remoteAddress === undefined) {
      // A pipe has no addresses to tell its handshakes apart: every one of this server's is let go,
      // never one still in use closed as stalled (a stalled one waits for Node's handshakeTimeout).
      for (const raw of handshaking) if (serverOf(raw) === this) handshaking.delete(raw)
    } else {
      for (const raw of handshaking) {
        if (
          raw.remotePort === socket.remotePort &&
          raw.localPort === socket.localPort &&
          raw.remoteAddress === socket.remoteAddress &&
          raw.localAddress === socket.localAddress
        ) {
          handshaking.delete(raw)
          break
        }
      }
    }
    track(socket)
  }

  function onSession(session: Http2Session): void {
    // Opened before its server was attached (discovered from a request, or attached late): already
    // closed, it is not waited for; its 'close' will not come again.
    if (session.destroyed) return
    sessions.add(session)
    session.once('close', () => {
      sessions.delete(session)
      events.onConnectionsChanged()
    })
    if (stopping) session.close()
  }

  // Runs on every request (twice when an adapter enters it too): one property read and one listener,
  // no weak collections — this is the per-request cost the bench measures.
  function observe(req: AnyRequest, res: AnyResponse): void {
    // HTTP/2 streams need no bookkeeping: GOAWAY at stopping ends each session after its streams.
    // Their session is known from its 'session' event, unless it opened before the server was
    // attached: then from its first request seen here (one Set lookup per HTTP/2 request).
    if (req.httpVersionMajor >= 2) {
      if (stopping) lastRequestAt = clock.now()
      const session = (req as Http2ServerRequest).stream?.session
      if (session !== undefined && !sessions.has(session)) onSession(session)
      return
    }
    const response = res as ServerResponse
    const socket = (req as IncomingMessage).socket
    const connection = (socket as TrackedSocket)[CONNECTION] ?? track(socket)
    // Seen already, or over before it was seen (its connection too): nothing to wait for.
    if (connection.index === -1 || connection.pending.includes(response) || response.closed) return
    // A WebSocket handshake the app takes over from a 'request' listener or hook: its connection is
    // upgraded, never waited for (the app closes its WebSockets in a close hook), as from 'upgrade'.
    if (isWebSocketHandshake(req)) {
      setUpgraded(connection, true)
      return
    }
    // A handshake answered as plain HTTP (a 404, a 426) left the connection carrying requests: it is
    // an HTTP connection again (one upgraded from 'upgrade' never parses another request).
    if (connection.upgraded) setUpgraded(connection, false)
    if (stopping) lastRequestAt = clock.now()
    if (connection.hasLastRequest) {
      if (connection.dropped === undefined) connection.dropped = new Set()
      connection.dropped.add(req)
      return
    }
    connection.pending.push(response)
    connection.watchers.push(undefined)
    // The response's own 'close' (emitted once, so `on`); one that never comes is covered by the
    // socket's 'close' in track(). One listener for every response, no closure per request: it finds
    // the connection again from `res.req`, which Node sets; a response built by hand without it
    // (a request emitted by the app itself) gets a closure of its own.
    if ((response as { req?: IncomingMessage }).req?.socket === socket) response.on('close', onResponseClose)
    else response.on('close', () => responseClosed(connection, response))
    if (stopping) markLast(connection, response)
  }

  function onResponseClose(this: ServerResponse): void {
    // The request's socket, the one observe() found the connection on (`req` is kept on a response).
    const connection = (this.req?.socket as TrackedSocket | undefined)?.[CONNECTION]
    if (connection !== undefined) responseClosed(connection, this)
  }

  function responseClosed(connection: Connection, response: ServerResponse): void {
    const { pending, watchers } = connection
    const at = pending.indexOf(response)
    if (at === -1) return
    const watcher = watchers[at]
    // Responses close in order but for aborts: the first one, almost always the only one.
    if (at === 0 && pending.length === 1) {
      pending.pop()
      watchers.pop()
    } else {
      pending.splice(at, 1)
      watchers.splice(at, 1)
    }
    if (pending.length === 0) {
      const req = (response as { req?: IncomingMessage }).req
      if (req !== undefined && !req.complete && req.socket === connection.socket) connection.bodyPending = req
      else if (connection.bodyPending !== undefined) connection.bodyPending = undefined
      // A response whose head went out with keep-alive before stopping began answered before its
      // upload had arrived: the connection is idle once the rest has. (A last response's socket is
      // closed after it anyway, by closeAfterBody(); waiting here too changes nothing for it.)
      if (stopping && connection.bodyPending !== undefined) awaitBody(connection)
      else if (stopping) idleFromNow(connection)
    }
    watcher?.closed()
  }

  /** Stopping, `connection` has gone idle: reaped once it and the server have been quiet long enough. */
  function idleFromNow(connection: Connection): void {
    connection.idleSince = clock.now()
    scheduleReap(idleGraceMs)
  }

  /** The HTTP/1 connection `req` came on, if tracked. */
  function connectionOf(req: AnyRequest): Connection | undefined {
    return req.httpVersionMajor >= 2
      ? undefined
      : ((req as IncomingMessage).socket as TrackedSocket | undefined)?.[CONNECTION]
  }

  function markLast(connection: Connection, response: ServerResponse): void {
    // Not setHeader('Connection', 'close'): error handlers that clear every header (Koa's) would
    // remove it, and the socket would stay open for keepAliveTimeout. With shouldKeepAlive off,
    // Node itself writes `Connection: close` when the headers go out and closes the socket after.
    if (!response.headersSent) {
      response.shouldKeepAlive = false
      sayClose(response)
      const req = (response as { req?: IncomingMessage }).req
      if (req !== undefined && req.socket === connection.socket && mayHaveBody(req)) closeAfterBody(req)
    }
    connection.hasLastRequest = true
  }

  /**
   * Node closes a last response's socket as soon as the response is sent, unread request bytes and
   * all, and a socket closed with unread input makes the kernel send RST, which can destroy the
   * response before the client has read it: a handler that answers an upload early (a 401, a 413)
   * without reading it. (Kept alive, the request's rest would have been read.) So that close, the
   * socket's destroySoon(), sends the FIN and waits until the rest of the request has been read and
   * thrown away (the request resumed, should the app have paused it) or the client has stopped
   * sending, at most DISCARD_LIMIT_MS after the response was marked last (as its request arrived,
   * or as stopping began). A refusal reads its own. A request that follows the body on the same
   * connection is parsed, and dropped as pipelined behind a last response.
   */
  function closeAfterBody(req: IncomingMessage): void {
    const closeBy = clock.now() + DISCARD_LIMIT_MS
    const restore = replaceOwn(req.socket, 'destroySoon', function destroyAfterBody(this: Socket): void {
      restore()
      const left = closeBy - clock.now()
      if (req.complete || refused.has(req) || this.destroyed || left <= 0) {
        this.destroySoon()
        return
      }
      if (this.writable) this.end()
      const stop = () => {
        clock.clearTimeout(timer)
        req.off('end', close)
        this.off('end', close)
        this.off('close', stop)
      }
      // Node's own destroySoon() (put back above): destroyed once the response's bytes are out.
      const close = () => {
        stop()
        this.destroySoon()
      }
      const timer = clock.setTimeout(close, left)
      req.once('end', close)
      this.once('end', close)
      // Closed some other way (a reset, the deadline): nothing left to wait for.
      this.once('close', stop)
      req.resume()
    })
  }

  /**
   * A body nobody reads: Node dumps the body of a request whose response finished while the app was
   * not reading it (no 'data' listener left), and one the app paused after answering is read by no
   * one. An app still reading after answering (`res.end(); req.pipe(file)`) has a listener on it.
   */
  function isUnread(req: IncomingMessage): boolean {
    return req.listenerCount('data') === 0 && req.listenerCount('readable') === 0
  }

  /**
   * Stopping, a connection whose newest response answered before its upload had all arrived, with
   * keep-alive (before stopping began, or with its head out before): the reaper would take the rest
   * of the body for a request head on its way and close the connection under it once its bytes
   * paused, or leave it open to the deadline while they kept coming. It waits for the body instead,
   * then takes the connection as idle since then: a request that follows is served as the
   * connection's last, or it is closed once quiet. A body nobody reads is thrown away (resumed, if
   * the app paused it), and a client still sending it after DISCARD_LIMIT_MS is closed (the FIN,
   * then the socket); one the app reads is the app's to finish, within the deadline.
   */
  function awaitBody(connection: Connection): void {
    const req = connection.bodyPending as IncomingMessage
    const { socket } = connection
    // Already over: a reset seen first by the response (its 'close' runs inside the socket's when
    // the connection was tracked late), or the request destroyed.
    if (socket.destroyed || req.destroyed || req.complete) {
      connection.bodyPending = undefined
      if (!socket.destroyed) idleFromNow(connection)
      return
    }
    const stop = () => {
      if (timer !== undefined) clock.clearTimeout(timer)
      req.off('end', read)
      socket.off('close', stop)
    }
    const read = () => {
      stop()
      connection.bodyPending = undefined
      idleFromNow(connection)
    }
    const unread = isUnread(req)
    const timer = unread
      ? clock.setTimeout(() => {
          stop()
          connection.bodyPending = undefined
          // Whatever still follows on this connection is pipelined behind what it was last answered.
          connection.hasLastRequest = true
          if (socket.writable) socket.end()
          socket.destroySoon()
        }, DISCARD_LIMIT_MS)
      : undefined
    req.once('end', read)
    // Closed some other way (a reset, the deadline): nothing left to wait for.
    socket.once('close', stop)
    if (unread) req.resume()
  }

  function onCheckContinue(this: NetServer, req: IncomingMessage, res: ServerResponse): void {
    if (stopping) {
      observe(req, res)
      events.onRefused()
      writeRefusal(req, res, options.refusal(req.httpVersionMajor))
      return
    }
    // The app's own listeners (guarded, after this one) answer; with none, what Node does when
    // nobody listens for 'checkContinue'.
    if (this.listenerCount('checkContinue') > 1) return
    res.writeContinue()
    this.emit('request', req, res)
  }

  function setUpgraded(connection: Connection, upgraded: boolean): void {
    if (connection.upgraded !== upgraded) upgradedCount += upgraded ? 1 : -1
    connection.upgraded = upgraded
    events.onConnectionsChanged()
  }

  function onUpgrade(_req: IncomingMessage, socket: Socket): void {
    setUpgraded(track(socket), true)
    if (!stopping) return
    events.onRefused()
    // Behind a last response whose close waits for its upload (closeAfterBody): already ended, the
    // refusal cannot be written, and Node has left the socket without its error handler.
    if (socket.writableEnded) {
      socket.destroy()
      return
    }
    const { status, headers, body } = options.refusal(1)
    const head = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`)
    // Written raw (the socket is no longer Node's to answer on), with the Date Node would add.
    socket.end(
      `HTTP/1.1 ${status} Service Unavailable\r\n${head.join('')}date: ${new Date().toUTCString()}\r\n\r\n${body}`,
    )
  }

  // biome-ignore lint/suspicious/noExplicitAny: EventEmitter listeners take any arguments
  type Listener = ((this: NetServer, ...args: any[]) => void) & {
    listener?: Listener
    [OURS]?: 'handler' | 'guard' | 'observer'
  }
  ;(onCheckContinue as Listener)[OURS] = 'handler'
  // Never wrapped by another Shutdown's observeRequests(): each sees requests with its own.
  ;(observe as Listener)[OURS] = 'observer'
  ;(onUpgrade as Listener)[OURS] = 'handler'
  /** The app's listeners wrapped by guard(), each with the listener it replaced (put back by detach()). */
  const guarded = new WeakMap<Listener, Listener>()

  /** Wraps the app's `listener` for `event` so that it does not run while stopping, where ours refuses. */
  function guard(event: GuardedEvent, listener: Listener): Listener {
    // A listener with a `listener` of its own is Node's once() wrapper (ours are never wrapped): it
    // removes itself, which it no longer finds once replaced — it would stay, dead, and still count
    // as a listener. This one removes itself instead, and calls the app's function once.
    const once = listener.listener
    const wrapper: Listener = function guardedListener(this: NetServer, ...args) {
      if (stopping) return
      if (once === undefined) return listener.apply(this, args)
      this.removeListener(event, wrapper)
      return once.apply(this, args)
    }
    // EventEmitter's removeListener(fn) also removes a wrapper whose `listener` is fn (as `once`
    // does), so the app can still remove its own listener.
    wrapper.listener = listener.listener ?? listener
    wrapper[OURS] = 'guard'
    guarded.set(wrapper, listener)
    return wrapper
  }

  /**
   * Puts `own` first among the server's `event` listeners and guards the app's. Listeners of any
   * copy of this package (another Shutdown, the CommonJS build) are left alone: wrapping each
   * other's would never end, each wrapper added being a new listener to the other.
   */
  function guardListeners(server: NetServer, event: GuardedEvent, own: Listener): void {
    const listeners = server.rawListeners(event) as Listener[]
    if (!listeners.includes(own)) server.prependListener(event, own)
    for (const listener of listeners) {
      if (listener[OURS] !== undefined) continue
      server.removeListener(event, listener)
      server.on(event, guard(event, listener))
    }
  }
  /** Per server, the listeners attach() added, removed again once the shutdown is over. */
  const added = new Map<NetServer, Array<[string, Listener]>>()
  /** Servers not listening when stopping began: a late listen() is closed at once, even after the end. */
  const notListeningAtStop = new Set<NetServer>()

  function listen(server: NetServer, event: string, listener: Listener, first = false): void {
    if (first) server.prependListener(event, listener)
    else server.on(event, listener)
    added.get(server)?.push([event, listener])
  }

  /**
   * Per server, the app's `'request'` listener that observeRequests() wrapped, its wrapper, and how
   * to turn the wrapper into a plain pass-through: once the app has removed it, or once detached,
   * a copy of it the app puts back (code that rebuilds a server's listener list) observes nothing.
   */
  const wrappedApps = new Map<NetServer, { app: Listener; wrapper: Listener; retire(): void }>()

  /**
   * Sees every request of `server` before the app does: a framework answering synchronously inside
   * its own `'request'` listener must not write its headers before a last request gets
   * `Connection: close`. The app's one listener (every framework has exactly one) is wrapped in
   * place: Node then calls one function per request instead of copying a two-listener array and
   * calling both (about 1.5 % of a Koa hello-world request's CPU). Any other set of listeners gets
   * ours prepended. `listeners('request')` still lists the app's own function, removing it still
   * works (ours is then prepended instead), and detach() puts it back where it was.
   */
  function observeRequests(server: NetServer): void {
    const listeners = server.rawListeners('request') as Listener[]
    const app = listeners[0]
    if (
      listeners.length !== 1 ||
      app === undefined ||
      app.listener !== undefined ||
      app[OURS] !== undefined
    ) {
      listen(server, 'request', observe, true)
      return
    }
    let live = true
    const wrapper: Listener = function observedRequest(this: NetServer, req, res) {
      if (live) observe(req, res)
      return app.call(this, req, res)
    }
    // EventEmitter's removeListener(app) also removes a wrapper whose `listener` is app.
    wrapper.listener = app
    wrapper[OURS] = 'observer'
    server.removeListener('request', app)
    server.on('request', wrapper)
    wrappedApps.set(server, {
      app,
      wrapper,
      retire: () => {
        live = false
      },
    })
    listen(server, 'removeListener', (event: string | symbol) => {
      const wrapped = wrappedApps.get(server)
      if (event !== 'request' || wrapped === undefined) return
      if ((server.rawListeners('request') as Listener[]).includes(wrapper)) return
      // The app removed its listener, and ours with it: requests are seen by a listener of our own.
      wrapped.retire()
      wrappedApps.delete(server)
      listen(server, 'request', observe, true)
    })
  }

  /** Puts the app's wrapped `'request'` listener back in its wrapper's place. */
  function unwrapRequests(server: NetServer): void {
    const wrapped = wrappedApps.get(server)
    wrappedApps.delete(server)
    if (wrapped === undefined) return
    wrapped.retire()
    const listeners = server.rawListeners('request') as Listener[]
    const at = listeners.indexOf(wrapped.wrapper)
    if (at === -1) return
    // Removed from the wrapper on, then added back in order: the app's own listener where it was.
    const after = listeners.slice(at + 1)
    server.removeListener('request', wrapped.wrapper)
    for (const listener of after) server.removeListener('request', listener)
    server.on('request', wrapped.app)
    for (const listener of after) server.on('request', listener)
  }

  function attach(server: AttachableServer): void {
    if (servers.has(server)) return
    servers.add(server)
    added.set(server, [])
    const isHttp2 = server.constructor.name.startsWith('Http2')
    if (isHttp2) http2Servers.add(server)
    observeRequests(server)
    listen(server, 'connection', onConnection)
    if (server instanceof TlsServer && !isHttp2) listen(server, 'secureConnection', onSecureConnection)
    if (isHttp2) listen(server, 'session', onSession)
    // Ours answers `Expect: 100-continue` whoever else listens (the app's own listeners are
    // guarded below, whenever they are added): while stopping the refusal must win, once. Only one
    // Shutdown's per server: two would both answer.
    const hasContinue =
      !isHttp2 &&
      !(server.rawListeners('checkContinue') as Listener[]).some((listener) => listener[OURS] === 'handler')
    // A server that starts listening after the shutdown began (start-up work that finished late)
    // must not accept: it is closed as soon as it listens.
    server.on('listening', onLateListen)
    // Node treats an upgrade as a plain request while nobody listens for 'upgrade', so ours joins
    // only when the app adds one (a WebSocket server), and runs first. The app's own upgrade
    // listeners are wrapped so none runs for an upgrade refused while stopping.
    const guardUpgrades = () => {
      if (added.has(server) && server.listenerCount('upgrade') > 0)
        guardListeners(server, 'upgrade', onUpgrade)
    }
    const guardContinues = () => {
      if (added.has(server) && hasContinue) guardListeners(server, 'checkContinue', onCheckContinue)
    }
    guardUpgrades()
    guardContinues()
    // Added after attach() (a WebSocket server, an app's 'checkContinue'): guarded once added.
    listen(server, 'newListener', (event: string | symbol) => {
      if (event === 'upgrade') queueMicrotask(guardUpgrades)
      else if (event === 'checkContinue') queueMicrotask(guardContinues)
    })
    if (server.listening) countUntracked(server)
    if (stopping) stopServer(server)
  }

  /**
   * Compares the server's own count with the sockets of it seen here: more means connections opened
   * before attach(). Asynchronous (getConnections), so the drain waits for the answer.
   */
  function countUntracked(server: NetServer): void {
    // http2: sessions, not reachable by closeIdleConnections() (an h2c server has none).
    const isReapable =
      !http2Servers.has(server) && typeof (server as HttpServer).closeIdleConnections === 'function'
    if (isReapable) {
      untracked.add(server)
      unreaped.add(server)
    }
    // Read now: attached while stopping, the server is closed before the count comes back.
    const address = describeAddress(server)
    countUnseen(server, (opened) => {
      if (opened <= 0 || !isReapable || finished) {
        untracked.delete(server)
        if (unreaped.delete(server)) events.onConnectionsChanged()
      }
      if (opened <= 0) return
      log.info(
        { connections: opened, server: address },
        isReapable
          ? `${opened} connection(s) opened before attach() on ${address}; closed once idle and the server quiet after stopping began; attach right after creating the server to see every connection`
          : `${opened} connection(s) opened before attach() on ${address}; HTTP/2 sessions close only once a request on them is seen; attach right after creating the server to see every connection`,
      )
      if (stopping && !finished) scheduleReap(0)
    })
  }

  /** Calls back with how many of the sockets the server counts were never seen here (0 on an error). */
  function countUnseen(server: NetServer, then: (unseen: number) => void): void {
    server.getConnections((error, count) => then(error ? 0 : count - knownSockets(server)))
  }

  /** Sockets of `server` seen here and not destroyed: what its getConnections() counts (raw TCP for https). */
  function knownSockets(server: NetServer): number {
    let known = 0
    if (http2Servers.has(server)) {
      for (const socket of http2Sockets) if (serverOf(socket) === server && !socket.destroyed) known++
      return known
    }
    // A destroyed socket has left the server's count already, but not yet `connections` (its 'close' comes later).
    for (const { socket } of connections) if (serverOf(socket) === server && !socket.destroyed) known++
    for (const socket of handshaking) if (serverOf(socket) === server && !socket.destroyed) known++
    return known
  }

  /**
   * After askIdle() has closed `server`'s idle connections from before attach(): busy ones are left by
   * Node (a response begun before attach(), which cannot be seen ending; an https handshake that
   * never completes), so while the server's count says some remain, the reap comes back, less and
   * less often. True when this was the first reap of the server (the drain may wait for it).
   */
  function reapUntracked(server: NetServer): boolean {
    countUnseen(server, (unseen) => {
      if (finished || !untracked.has(server)) return
      if (unseen <= 0) {
        untracked.delete(server)
        return
      }
      scheduleReap(Math.max(idleGraceMs, recheckMs))
      recheckMs = Math.min(recheckMs * 2, MAX_UNTRACKED_RECHECK_MS)
    })
    return unreaped.delete(server)
  }

  /**
   * Calls Node's closeIdleConnections() on `server` and returns which of `tracked` (its sockets tracked
   * here, every one) Node found idle: between two requests. A connection with the start of a request
   * in Node's parser (headers still arriving) is not idle to Node, and nothing public tells that
   * otherwise; closing it would lose that request. Node also counts a connection busy until its
   * first request begins. The tracked sockets are only noted: each one's destroy() is replaced
   * for the call, so when and how they close stays the reaper's (their own grace, TLS close_notify).
   * What Node does destroy are the sockets of the server never tracked: opened before attach().
   */
  function askIdle(server: NetServer, tracked: readonly Socket[]): Set<Socket> {
    const idle = new Set<Socket>()
    const note = function noteIdle(this: Socket): Socket {
      idle.add(this)
      return this
    }
    const restores = tracked.map((socket) => replaceOwn(socket, 'destroy', note))
    try {
      ;(server as HttpServer).closeIdleConnections()
    } finally {
      for (const restore of restores) restore()
    }
    return idle
  }

  function onLateListen(this: NetServer): void {
    // After the 'listening' listeners: the app's listen() callback may still read server.address().
    if (stopping) queueMicrotask(() => stopServer(this))
  }

  /** Gives the server back as it was: our listeners removed, the app's upgrade listeners unwrapped. */
  function detach(server: NetServer): void {
    for (const [event, listener] of added.get(server) ?? []) server.removeListener(event, listener)
    added.delete(server)
    unwrapRequests(server)
    server.removeListener('upgrade', onUpgrade)
    server.removeListener('checkContinue', onCheckContinue)
    for (const event of GUARDED_EVENTS) {
      for (const listener of server.rawListeners(event) as Listener[]) {
        const replaced = guarded.get(listener)
        if (replaced === undefined) continue
        server.removeListener(event, listener)
        server.on(event, replaced)
      }
    }
    if (!notListeningAtStop.has(server)) server.removeListener('listening', onLateListen)
  }

  function stopServer(server: NetServer): void {
    // Not http.Server#close(): since Node 19 it also destroys every idle socket at once, racing
    // clients that are about to reuse them. Stop listening only; sockets are reaped below.
    NetServer.prototype.close.call(server, () => {})
  }

  function stop(): void {
    if (stopping) return
    stopping = true
    // What happened before is not known (no clock is read while serving): a client may be about to
    // reuse a connection that has just gone idle, so stopping counts as activity, and no socket is
    // reaped before the server has been quiet for idleGraceMs since.
    lastRequestAt = clock.now()
    for (const server of servers) {
      if (!server.listening) notListeningAtStop.add(server)
      stopServer(server)
    }
    for (const session of sessions) session.close()
    for (const connection of connections) {
      if (connection.upgraded) continue
      if (connection.pending.length === 0) {
        if (connection.bodyPending !== undefined) awaitBody(connection)
        continue
      }
      // The newest response is this connection's last: everything before it is answered as usual,
      // anything after it is refused. Only the newest: closing after an older one would drop the
      // responses queued behind it, whose handlers already ran. If the newest already has its
      // headers (a stream, or a response buffered behind a slower one), the socket is left to go
      // idle and is reaped like any idle socket.
      const last = connection.pending.at(-1)
      if (last && !last.headersSent) markLast(connection, last)
    }
    scheduleReap(0)
  }

  function scheduleReap(delayMs: number): void {
    // One check armed at a time, at the earliest time asked for: a later request waits for it (the
    // check reschedules whatever is still due), an earlier one moves it (a socket gone idle must not
    // wait for a slow recheck of connections from before attach()).
    const dueAt = clock.now() + delayMs
    if (reapTimer !== undefined) {
      if (dueAt >= reapDueAt) return
      clock.clearTimeout(reapTimer)
    }
    reapDueAt = dueAt
    // Timers run before the poll phase: after a stalled event loop (a busy or starved process) the
    // timer would fire while requests sit unread in socket buffers, and the server would look quiet
    // when it is not — closing a socket with unread input sends RST. setImmediate runs after the
    // poll phase, once those requests have been read and counted.
    reapTimer = clock.setTimeout(() => {
      reapDueAt = Number.NEGATIVE_INFINITY
      const firedAt = clock.now()
      setImmediate(() => reap(firedAt, 0))
    }, delayMs)
  }

  /**
   * `turnStartedAt`: when the timer fired (or the previous check ran), i.e. just before the poll phase
   * this check follows. A poll phase that took longer than LATE_TURN_MS had a callback stall in it,
   * and requests that arrived meanwhile are still unread in the kernel — not in `readableLength`,
   * not counted as requests: judging now would close sockets under them. One more poll reads them.
   */
  function reap(turnStartedAt: number, lateTurns: number): void {
    if (finished) return
    const now = clock.now()
    if (now - turnStartedAt > LATE_TURN_MS && lateTurns < MAX_LATE_TURNS) {
      setImmediate(() => reap(now, lateTurns + 1))
      return
    }
    reapTimer = undefined
    reapDueAt = Number.POSITIVE_INFINITY
    let next = Number.POSITIVE_INFINITY
    // Quiet needs a server-wide lull (no request anywhere for idleGraceMs) before any socket closes.
    const lull = now - lastRequestAt >= idleGraceMs
    // During a lull, per http(s) server: every socket of it tracked here, and the quiet connections
    // among them, for askIdle(); servers that may hold connections never seen open are asked too.
    // Not gathered otherwise: nothing closes before a lull.
    type Asked = { tracked: Socket[]; quiet: Connection[] }
    const asked = lull ? new Map<NetServer, Asked>() : undefined
    for (const server of untracked) asked?.set(server, { tracked: [], quiet: [] })
    // Backwards: a socket closing under the loop moves an entry already visited into its place.
    for (let i = connections.length - 1; i >= 0; i--) {
      const connection = connections[i] as Connection
      const { socket } = connection
      let entry: Asked | undefined
      if (asked !== undefined) {
        // A socket without `server` (not accepted by a net server): closed by us alone.
        const server = serverOf(socket) as HttpServer | undefined
        entry = server && asked.get(server)
        if (entry === undefined && typeof server?.closeIdleConnections === 'function') {
          entry = { tracked: [], quiet: [] }
          asked.set(server, entry)
        }
        entry?.tracked.push(socket)
      }
      // Still being written to a slow client, or still reading an upload answered early: its close
      // (or the body's end, or its socket's close) schedules the next check.
      if (connection.pending.length > 0 || connection.upgraded || connection.bodyPending !== undefined)
        continue
      // A last response makes Node end its socket; one whose head had gone out with keep-alive
      // before it was marked (a server discovered late) leaves it open: idle like any other.
      if (connection.hasLastRequest && socket.writableEnded) continue
      // Quiet means no request arrived anywhere for idleGraceMs and this socket has been idle that
      // long: a client mid-reuse would have shown up as a request by now.
      const quietSince = Math.max(lastRequestAt, connection.idleSince)
      // Bytes Node has read but not parsed yet are a request on its way: not idle.
      const quiet = now - quietSince >= idleGraceMs && socket.readableLength === 0
      if (!quiet) next = Math.min(next, Math.max(quietSince + idleGraceMs, now + 1))
      // Never sent a byte: idle, though Node counts a connection as busy until its first request.
      else if (entry === undefined || socket.bytesRead === 0) closeGently(socket)
      else entry.quiet.push(connection)
    }
    if (asked !== undefined) {
      for (const socket of handshaking) socket.destroy()
      // Node's closeIdleConnections() costs a walk over every socket of the server: only for servers
      // with a quiet socket, or that may hold connections we never saw open.
      let reached = false
      for (const [server, { tracked, quiet }] of asked) {
        if (quiet.length === 0 && !untracked.has(server)) continue
        const idle = askIdle(server, tracked)
        for (const connection of quiet) {
          const stalledAt = idle.has(connection.socket) ? now : headStalledAt(connection, now)
          if (now >= stalledAt) closeGently(connection.socket)
          else next = Math.min(next, stalledAt)
        }
        if (untracked.has(server)) reached = reapUntracked(server) || reached
      }
      if (reached) events.onConnectionsChanged()
    } else {
      next = Math.min(next, lastRequestAt + idleGraceMs)
    }
    if (next !== Number.POSITIVE_INFINITY) scheduleReap(Math.max(0, next - now))
  }

  /**
   * For a quiet connection Node does not find idle: the start of a request head is in its parser, the
   * rest on its way (a slow client, a head over several packets). It is left open while its bytes
   * keep coming; this is when it is closed, once none has come for HEAD_STALL_MS (idleGraceMs if
   * longer): a client that stopped.
   */
  function headStalledAt(connection: Connection, now: number): number {
    const { bytesRead } = connection.socket
    if (connection.headBytes !== bytesRead) {
      connection.headBytes = bytesRead
      connection.headSince = now
    }
    return connection.headSince + Math.max(HEAD_STALL_MS, idleGraceMs)
  }

  function destroyAll(): number {
    let destroyed = 0
    for (let i = connections.length - 1; i >= 0; i--) {
      const connection = connections[i] as Connection
      if (connection.socket.destroyed) continue
      connection.socket.destroy()
      destroyed++
    }
    for (const session of sessions) {
      session.destroy()
      destroyed++
    }
    for (const socket of handshaking) socket.destroy()
    for (const socket of http2Sockets) socket.destroy()
    for (const server of servers) (server as HttpServer).closeAllConnections?.()
    return destroyed
  }

  return {
    attach,
    has: (server) => servers.has(server),
    observe,
    watch(req, res, watcher) {
      const connection = connectionOf(req)
      const at = connection?.pending.indexOf(res as ServerResponse) ?? -1
      if (connection === undefined || at === -1) return false
      connection.watchers[at] = watcher
      return true
    },
    watcherOf(req, res) {
      const connection = connectionOf(req)
      if (connection === undefined) return undefined
      const at = connection.pending.indexOf(res as ServerResponse)
      return at === -1 ? undefined : (connection.watchers[at] ?? null)
    },
    // Only a stopping server drops requests: the common case is one comparison.
    isDropped: (req) => stopping && connectionOf(req)?.dropped?.has(req) === true,
    stop,
    destroyAll,
    finish() {
      finished = true
      if (reapTimer !== undefined) clock.clearTimeout(reapTimer)
      reapTimer = undefined
      untracked.clear()
      unreaped.clear()
      const destroyed = destroyAll()
      for (const server of servers) detach(server)
      return destroyed
    },
    get openConnections() {
      return sessions.size + connections.length - upgradedCount
    },
    get isAwaitingReap() {
      return unreaped.size > 0
    },
    get idleConnections() {
      let idle = 0
      for (const connection of connections)
        if (!connection.upgraded && connection.pending.length === 0) idle++
      return idle
    },
    get serverCount() {
      return servers.size
    },
  }
}

/** Events whose app listeners must not run for a request the tracker refuses while stopping. */
const GUARDED_EVENTS = ['upgrade', 'checkContinue'] as const
type GuardedEvent = (typeof GUARDED_EVENTS)[number]
/**
 * Marks this package's own listeners on a server — handlers and the guards around the app's — for
 * every copy of it in the process (ESM and CommonJS builds, two versions): a registry symbol.
 */
const OURS = Symbol.for('@lameduck/core listener')

/**
 * While stopping, how long a begun request head may go without a byte before its connection is
 * closed like an idle one: longer than a lost packet's retransmission, far shorter than the deadline.
 */
const HEAD_STALL_MS = 1_000
/** A loop turn (poll phase plus callbacks) longer than this may have hidden unread requests. */
const LATE_TURN_MS = 10
/** A loop that is late turn after turn is judged anyway after this many more turns. */
const MAX_LATE_TURNS = 20
/** closeIdleConnections() runs again this long after it left busy connections from before attach()… */
const UNTRACKED_RECHECK_MS = 100
/** …then twice as long each time, up to this. */
const MAX_UNTRACKED_RECHECK_MS = 1_000

/** The server that accepted `socket`: net and tls set `server` on every accepted socket, raw and TLS. */
function serverOf(socket: Socket): unknown {
  return (socket as Socket & { server?: unknown }).server
}

/** Where `server` listens, for log lines: `host:port` or the pipe's path. */
function describeAddress(server: NetServer): string {
  const address = server.address()
  if (address === null || typeof address === 'string') return String(address)
  return address.address.includes(':')
    ? `[${address.address}]:${address.port}`
    : `${address.address}:${address.port}`
}

/**
 * Gives `socket` an own `name` method until the returned function is called, which puts back what was
 * there: an own one someone else had set, or none (the prototype's again).
 */
function replaceOwn<K extends 'destroy' | 'destroySoon'>(
  socket: Socket,
  name: K,
  replacement: Socket[K],
): () => void {
  const own = Object.hasOwn(socket, name) ? socket[name] : undefined
  socket[name] = replacement
  return () => {
    if (own === undefined) delete (socket as Partial<Socket>)[name]
    else socket[name] = own
  }
}

/** FIN, then close: nothing queued is lost, and the peer sees an orderly end, never a reset. */
function closeGently(socket: Socket): void {
  if (socket.destroyed) return
  // Plain TCP with nothing queued: close() itself sends the FIN after whatever the kernel still
  // holds, one step instead of shutdown, a loop turn and close (10,000 idle sockets: ~420 ms instead
  // of ~535 ms on the server's clock, median of 5). TLS is ended first, for its close_notify.
  if (socket.writableFinished || (socket.writableLength === 0 && !(socket as TLSSocket).encrypted)) {
    socket.destroy()
    return
  }
  socket.once('finish', () => socket.destroy())
  socket.end()
}

/** A `Connection` value Node reads as "close" (its own `RE_CONN_CLOSE`). */
const SAYS_CLOSE = /(?:^|\W)close(?:$|\W)/i

/**
 * Makes a last response say `Connection: close` even when the app sets `Connection: keep-alive`
 * itself (SSE libraries and proxies do): Node writes the app's value as given, turns keep-alive
 * back on and leaves the socket open, and a client told keep-alive may reuse a socket about to
 * close. Every way to the head goes through `writeHead` (`end()`, `write()` and `flushHeaders()`
 * call it too), so this response's own is wrapped; headers the app passes are copied, not changed.
 */
function sayClose(response: ServerResponse): void {
  const writeHead = response.writeHead
  response.writeHead = function closingWriteHead(this: ServerResponse, ...args: unknown[]) {
    const stored = this.getHeader('connection')
    if (stored !== undefined && !SAYS_CLOSE.test(String(stored))) this.setHeader('connection', 'close')
    // writeHead(status, [reason], [headers]): the reason is a string, the headers never are.
    for (let i = 1; i < args.length; i++) {
      const headers = args[i]
      if (typeof headers === 'object' && headers !== null) args[i] = withConnectionClose(headers)
    }
    return Reflect.apply(writeHead, this, args) as ServerResponse
  } as ServerResponse['writeHead']
}

function keepsOpen(name: unknown, value: unknown): boolean {
  return typeof name === 'string' && name.toLowerCase() === 'connection' && !SAYS_CLOSE.test(String(value))
}

/** `headers` in any form writeHead() takes, with `Connection: close`: a copy if that changes it. */
function withConnectionClose(headers: object): object {
  if (Array.isArray(headers)) {
    if (Array.isArray(headers[0]))
      return headers.map((entry: unknown[]) => (keepsOpen(entry[0], entry[1]) ? [entry[0], 'close'] : entry))
    const copy: unknown[] = [...headers]
    for (let n = 0; n + 1 < copy.length; n += 2) if (keepsOpen(copy[n], copy[n + 1])) copy[n + 1] = 'close'
    return copy
  }
  let copy: Record<string, unknown> | undefined
  for (const [name, value] of Object.entries(headers)) {
    if (!keepsOpen(name, value)) continue
    copy ??= { ...headers }
    copy[name] = 'close'
  }
  return copy ?? headers
}
