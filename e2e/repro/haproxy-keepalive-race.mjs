// HAProxy keep-alive race: HAProxy reuses an idle connection to a Node app just as the app closes
// it (server.keepAliveTimeout expired); the request, already sent, is lost.
//
// What it runs (node: built-ins and the `haproxy` binary, 2.6; no lameduck): two plain node:http
// apps with a short keepAliveTimeout (1000 ms: compressed time), HAProxy in front with
// docs/proxies/haproxy.cfg's settings (keep-alive on both sides, `timeout http-keep-alive 30s`,
// default `http-reuse safe` and `pool-purge-delay`, `retries 3` + `option redispatch`, /readyz
// checks) logging every request to stdout (%ST, %ts, %rc), and 40 keep-alive clients. Client i owns
// a quiet "lane" server (weight 0, `use-server laneI if { path_beg /lane/I/ }`, same two apps
// behind): it requests /lane/i/ (GET and POST alternately) once per the app's idle limit +-50 ms,
// and meanwhile GETs /hot (the docs' app1/app2) every 400 ms on the same connection, so its
// HAProxy session stays open whatever `timeout http-keep-alive` is and the lane request is never
// the first of its session (http-reuse safe sends a session's first request on a new connection).
// About 110 requests/s in all. The apps record how long each reused connection had been idle.
//
// Node closes an idle connection keepAliveTimeout + 1000 ms after a response, not at
// keepAliveTimeout (HTTP_SERVER_KEEP_ALIVE_TIMEOUT_BUFFER in lib/_http_server.js, nodejs/node#54863,
// present in Node 20.20; server.keepAliveTimeoutBuffer since v24.6): the script measures that limit
// first (2005 ms here) and aims the lane requests at it.
//
// Run (repo root): node e2e/repro/haproxy-keepalive-race.mjs            # baseline: ~30 s
//   --hka 800 (a) | --purge 500 (b) | --reuse never (b) | --server-close (b)
//   --app-ka 1500 --hka 1000 (c) | --retry-on "conn-failure empty-response" (d)
//   --reuse always --fresh: each lane request on a new client connection (shows the 502 form)
//   --app-ka 5000 --duration 60: real time, Node's default keepAliveTimeout (~70 s)
//   --matrix --runs 3: all of them, 3 runs each (~14 min)
// Other options: --lanes n (40; 0 = plain clients on the docs' backend only, with --clients,
// --pause lo,hi and --client-idle), --hot ms (400), --pause lo,hi, --duration s (25), --runs n,
// --verbose (prints the HAProxy config). Exit code 1 if any client request failed.
//
// Found (2026-11-28, HAProxy 2.6.12, Node 20.20.2, 2 cores shared; 3 runs per configuration):
// - Yes, the race loses requests, but with http-reuse safe the client gets no 502: HAProxy closes
//   the client's connection without a response and logs nothing (http_wait_for_response's
//   abort_keep_alive: a failed request that is not the first of its client connection is closed
//   "so that the client retries"); Node's client reports `socket hang up` (ECONNRESET). Baseline:
//   7, 5, 2 of ~495 lane requests per run (POSTs too); real time, docs config verbatim, Node's 5 s:
//   5 and 3 of 400. Only when the request is the first of its client connection (http-reuse
//   always/aggressive, --fresh) is it a logged 502 with termination state SH: 7, 6, 1.
// - `timeout http-keep-alive` applies to client connections only: with 800 ms, lane connections
//   were still reused after 2004 ms idle and 8, 3, 2 requests were lost. (c) app 1500 ms > HAProxy
//   1000 ms: 5, 5, 4 lost. http-reuse never (private connections live as long as the client's):
//   3, 1+1, 4 (lane + /hot); with hka 800 too: 3, 1+1, 3+1.
// - An idle server connection is closed by HAProxy's pool purge: at most ~3 x pool-purge-delay after
//   its last use (longest idle before reuse: 1501 ms with 500 ms, 2990 ms with 1 s, 15000 ms with
//   the default 5 s). pool-purge-delay 500ms (1.5 s < 2005 ms): 0, 0, 0 lost; 700ms (2.1 s >
//   2005 ms): 3, 0, 2. Real time, pool-purge-delay 1s (3 s < Node's 6 s): 0, 0 of 400.
// - Also 0, 0, 0: option http-server-close (no server keep-alive at all), and retry-on
//   conn-failure empty-response (HAProxy retried 5, 3, 0 requests, POSTs included).
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

const { values: opt } = parseArgs({
  options: {
    'app-ka': { type: 'string', default: '1000' },
    hka: { type: 'string', default: '30s' },
    reuse: { type: 'string' },
    purge: { type: 'string' },
    'retry-on': { type: 'string' },
    'server-close': { type: 'boolean', default: false },
    lanes: { type: 'string', default: '40' },
    fresh: { type: 'boolean', default: false },
    hot: { type: 'string', default: '400' },
    clients: { type: 'string', default: '40' },
    pause: { type: 'string' },
    'client-idle': { type: 'string', default: '600' },
    duration: { type: 'string', default: '25' },
    runs: { type: 'string', default: '1' },
    matrix: { type: 'boolean', default: false },
    verbose: { type: 'boolean', default: false },
  },
})

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const unit = (v) => (/^\d+$/.test(String(v)) ? `${v}ms` : v) // HAProxy's default unit is ms anyway

// ---------------------------------------------------------------------------------------------
// The app: a plain node:http server. Each socket remembers when its last response finished, so a
// request on a reused connection tells how long HAProxy had left that connection idle.
function startApp(keepAliveTimeout, idleLimit) {
  // Counts exclude HAProxy's health checks (one connection per check, closed by HAProxy).
  const stats = {
    conns: 0,
    requests: 0,
    reused: 0,
    idleMaxLane: 0,
    idleMaxHot: 0,
    nearLimit: 0,
    byApp: 0,
    byHaproxy: 0,
    reset: 0,
  }
  const server = http.createServer((req, res) => {
    const s = req.socket
    if (req.url === '/readyz') s.isCheck = true
    if (s.isCheck) return res.end('ready\n')
    if (!s.counted) {
      s.counted = true
      stats.conns++
    }
    stats.requests++
    if (s.lastDone !== undefined) {
      const idle = performance.now() - s.lastDone
      stats.reused++
      const k = req.url.startsWith('/lane/') ? 'idleMaxLane' : 'idleMaxHot'
      stats[k] = Math.max(stats[k], idle)
      if (idle >= idleLimit - 100) stats.nearLimit++
    }
    s.lastDone = undefined
    req.resume()
    req.on('end', () => res.end(`ok ${req.method}\n`))
    res.on('finish', () => (s.lastDone = performance.now()))
  })
  server.keepAliveTimeout = keepAliveTimeout
  server.on('connection', (socket) => {
    // Node's own 'timeout' listener destroys the idle socket; these only count who closed what.
    socket.on('timeout', () => (socket.kaExpired = true))
    socket.on('end', () => (socket.peerEnded = true))
    socket.on('error', () => (socket.sawError = true))
    socket.on('close', () => {
      if (!socket.counted) return
      if (socket.kaExpired) stats.byApp++
      else if (socket.peerEnded) stats.byHaproxy++
      else if (socket.sawError) stats.reset++
    })
  })
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, stats, port: server.address().port })),
  )
}

// How long after a response does this Node close an idle keep-alive connection? (One request on a
// raw socket, then wait for the FIN.)
async function measureIdleLimit(keepAliveTimeout) {
  const server = http.createServer((_req, res) => res.end('ok'))
  server.keepAliveTimeout = keepAliveTimeout
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const socket = net.connect(server.address().port, '127.0.0.1')
  socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  let answered
  socket.once('data', () => (answered = performance.now()))
  await new Promise((resolve) => socket.once('end', resolve))
  const limit = Math.round(performance.now() - answered)
  socket.destroy()
  server.close()
  return limit
}

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

// ---------------------------------------------------------------------------------------------
// HAProxy: docs/proxies/haproxy.cfg with our ports, logging to stdout. Only the `timeout
// http-keep-alive` value and the lines marked "variable" differ between configurations.
function haproxyConfig({ port, appPorts, hka, reuse, purge, retryOn, serverClose, lanes }) {
  const variable = [
    reuse && `  http-reuse ${reuse}`,
    retryOn && `  retry-on ${retryOn}`,
    serverClose && '  option http-server-close',
  ].filter(Boolean)
  return `global
  log stdout format raw local0 info

defaults
  mode http
  log global
  option dontlognull
  option log-health-checks
  log-format "req %HM %HU %ST %b/%s rc=%rc ts=%ts Tc=%Tc Tr=%Tr"
  option http-keep-alive
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive ${unit(hka)}
  timeout check 2s
  retries 3
  option redispatch
${variable.map((l) => `${l}  # variable\n`).join('')}
frontend web
  bind 127.0.0.1:${port}
  default_backend apps

backend apps
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server check inter 200 fall 2 rise 2${purge ? ` pool-purge-delay ${unit(purge)}  # variable` : ''}
${appPorts.map((p, i) => `  server app${i + 1} 127.0.0.1:${p}`).join('\n')}
${laneLines(lanes, appPorts)}`
}

// Lanes: one quiet server per client (weight 0, so only its own /lane/<i>/ requests reach it; the
// same two apps behind), standing for a backend server that sees a request about once per idle limit.
function laneLines(lanes, appPorts) {
  const lines = []
  for (let i = 0; i < lanes; i++) lines.push(`  use-server lane${i} if { path_beg /lane/${i}/ }`)
  for (let i = 0; i < lanes; i++)
    lines.push(`  server lane${i} 127.0.0.1:${appPorts[i % appPorts.length]} weight 0 no-check`)
  return lines.length ? `${lines.join('\n')}\n` : ''
}

function startHaproxy(cfgText) {
  const dir = mkdtempSync(join(tmpdir(), 'haproxy-ka-race-'))
  const cfg = join(dir, 'haproxy.cfg')
  writeFileSync(cfg, cfgText)
  const child = spawn('haproxy', ['-f', cfg, '-db'], { stdio: ['ignore', 'pipe', 'pipe'] })
  // Even if this script dies of an exception, do not leave HAProxy behind.
  const killOnExit = () => child.kill('SIGTERM')
  process.once('exit', killOnExit)
  child.once('exit', () => process.off('exit', killOnExit))
  const log = { requests: [], other: [] }
  let buf = ''
  const onData = (chunk) => {
    buf += chunk
    const lines = buf.split('\n')
    buf = lines.pop()
    for (const line of lines) {
      if (line.startsWith('req ')) log.requests.push(line)
      else if (line.trim()) log.other.push(line)
    }
  }
  child.stdout.on('data', onData)
  child.stderr.on('data', onData)
  const exited = new Promise((resolve) => child.once('exit', resolve))
  return { child, log, exited, dir }
}

async function waitListening(port, deadlineMs = 5000) {
  const end = Date.now() + deadlineMs
  while (Date.now() < end) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy()
        resolve(true)
      })
      s.on('error', () => resolve(false))
    })
    if (ok) return
    await sleep(50)
  }
  throw new Error(`haproxy did not listen on ${port}`)
}

// ---------------------------------------------------------------------------------------------
// Node's Agent honours the app's `Keep-Alive: timeout=1` header (HAProxy passes it through) and
// would drop every client connection after one request. keepSocketAlive is the documented hook;
// this is its documented default behaviour, without the hint.
class KeepAgent extends http.Agent {
  keepSocketAlive(socket) {
    socket.setKeepAlive(true, this.keepAliveMsecs)
    socket.unref()
    return true
  }
}

// One request on the client's keep-alive connection; resolves to the status code or the error.
function request(port, agent, path, post) {
  const body = post ? 'x'.repeat(200 + Math.floor(Math.random() * 1800)) : undefined
  return new Promise((resolve) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        agent,
        method: post ? 'POST' : 'GET',
        path,
        headers: post ? { 'content-length': Buffer.byteLength(body) } : {},
        timeout: 10_000,
      },
      (res) => {
        res.resume()
        res.on('end', () => resolve(String(res.statusCode)))
        res.on('error', (e) => resolve(`error ${e.code ?? e.message}`))
      },
    )
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })))
    // 'socket hang up': HAProxy closed our connection without an answer (abort_keep_alive, see the top).
    req.on('error', (e) =>
      resolve(`${e.code ?? 'error'} (${e.message}${req.reusedSocket ? ', reused connection' : ''})`),
    )
    req.end(body)
  })
}

function count(tally, kind, post, outcome) {
  const t = tally[kind]
  t.requests++
  if (post) t.posts++
  t.outcomes[outcome] = (t.outcomes[outcome] ?? 0) + 1
}

// Lanes mode (default): client i owns lane i. It requests /lane/i/ (GET, POST alternately), then
// again a pause later (uniform in `pause`, around the app's idle limit), so lane i's server
// connection has been idle about that long; meanwhile it keeps its own connection to HAProxy busy
// with a GET to the docs' backend (app1/app2, roundrobin) every `hot` ms, so that its HAProxy
// session stays open whatever `timeout http-keep-alive` is and the lane request is not the first
// of its session (which http-reuse safe would always send on a new connection).
// With `fresh`, each lane request goes on a new client connection instead (no /hot requests): it is
// then the first request of its HAProxy session.
async function runLaneClient(port, lane, deadline, [lo, hi], hot, fresh, tally) {
  let agent = new KeepAgent({ keepAlive: true, maxSockets: 1 })
  let n = 0
  await sleep(Math.random() * hi) // spread the clients' starts over one pause
  while (Date.now() < deadline) {
    const post = n++ % 2 === 1
    count(tally, 'lane', post, await request(port, agent, `/lane/${lane}/${post ? 'submit' : 'item'}`, post))
    const next = performance.now() + lo + Math.random() * (hi - lo)
    if (fresh) {
      agent.destroy()
      agent = new KeepAgent({ keepAlive: true, maxSockets: 1 })
      await sleep(next - performance.now())
      continue
    }
    for (;;) {
      const left = next - performance.now()
      if (left <= hot) {
        await sleep(Math.max(0, left))
        break
      }
      await sleep(hot)
      count(tally, 'hot', false, await request(port, agent, '/hot', false))
    }
  }
  agent.destroy()
}

// Plain mode (--lanes 0): clients talk to the docs' backend only, pausing `pause` between requests;
// a client that is going to pause longer than `clientIdle` closes its connection first (as a
// browser drops an idle one), so it never races HAProxy's own timeout http-keep-alive.
async function runPlainClient(port, deadline, [lo, hi], clientIdle, tally) {
  let agent = new KeepAgent({ keepAlive: true, maxSockets: 1 })
  let n = 0
  await sleep(Math.random() * hi)
  while (Date.now() < deadline) {
    const post = n++ % 2 === 1
    count(tally, 'hot', post, await request(port, agent, post ? '/submit' : '/item', post))
    const pause = lo + Math.random() * (hi - lo)
    if (pause > clientIdle) {
      agent.destroy()
      agent = new KeepAgent({ keepAlive: true, maxSockets: 1 })
    }
    await sleep(pause)
  }
  agent.destroy()
}

// ---------------------------------------------------------------------------------------------
const idleLimits = new Map()

async function runOnce(cfg) {
  const appKa = Number(cfg.appKa)
  if (!idleLimits.has(appKa)) idleLimits.set(appKa, await measureIdleLimit(appKa))
  const idleLimit = idleLimits.get(appKa)
  const lanes = Number(cfg.lanes)
  const pause = cfg.pause
    ? cfg.pause.split(',').map(Number)
    : lanes
      ? [idleLimit - 50, idleLimit + 50]
      : [Math.round(idleLimit * 0.05), Math.round(idleLimit * 1.2)]
  const apps = [await startApp(appKa, idleLimit), await startApp(appKa, idleLimit)]
  const port = await freePort()
  const cfgText = haproxyConfig({ port, appPorts: apps.map((a) => a.port), ...cfg, lanes })
  if (opt.verbose) console.log(cfgText)
  const hap = startHaproxy(cfgText)
  const t0 = Date.now()
  try {
    await waitListening(port)
    await sleep(600) // the checks bring both servers up (rise 2 x inter 200)
    const blank = () => ({ requests: 0, posts: 0, outcomes: {} })
    const tally = { lane: blank(), hot: blank() }
    const deadline = Date.now() + Number(cfg.duration) * 1000
    await Promise.all(
      Array.from({ length: lanes || Number(cfg.clients) }, (_, i) =>
        lanes
          ? runLaneClient(port, i, deadline, pause, Number(cfg.hot), cfg.fresh, tally)
          : runPlainClient(port, deadline, pause, Number(cfg.clientIdle), tally),
      ),
    )
    await sleep(200) // the last log lines
    const app = apps.map((a) => ({ ...a.stats })) // before the teardown closes everything
    // HAProxy's side: every request that did not end 200 with termination state "--", by
    // status, termination state, method, lane or not, and retries (%rc; "+" = redispatched).
    const failed = {}
    const retried = {}
    for (const line of hap.log.requests) {
      const m = /^req (\S+) (\S+) (\S+) \S+ rc=(\S+) ts=(\S+)/.exec(line)
      if (!m) continue
      const [, method, uri, status, rc, ts] = m
      if (rc !== '0') retried[method] = (retried[method] ?? 0) + 1
      if (ts !== '--' || status !== '200') {
        const key = `${status} ${ts} ${method} ${uri.startsWith('/lane/') ? 'lane' : 'hot'}${rc !== '0' ? ` rc=${rc}` : ''}`
        failed[key] = (failed[key] ?? 0) + 1
      }
    }
    return {
      tally,
      failed,
      retried,
      logged: hap.log.requests.length,
      notes: hap.log.other.filter((l) => /\[ALERT\]|DOWN|is going DOWN|error/i.test(l)),
      app,
      idleLimit,
      pause,
      secs: (Date.now() - t0) / 1000,
    }
  } finally {
    hap.child.kill('SIGTERM') // our own child, by its handle
    await Promise.race([hap.exited, sleep(3000)])
    for (const a of apps) {
      a.server.closeAllConnections()
      a.server.close()
    }
    rmSync(hap.dir, { recursive: true, force: true })
  }
}

function describe(cfg) {
  const parts = [`app keepAliveTimeout ${cfg.appKa} ms`, `timeout http-keep-alive ${unit(cfg.hka)}`]
  if (cfg.reuse) parts.push(`http-reuse ${cfg.reuse}`)
  if (cfg.purge) parts.push(`pool-purge-delay ${unit(cfg.purge)}`)
  if (cfg.retryOn) parts.push(`retry-on ${cfg.retryOn}`)
  if (cfg.serverClose) parts.push('option http-server-close')
  return parts.join(', ')
}

const summary = (t) => {
  const ok = t.outcomes['200'] ?? 0
  const n502 = t.outcomes['502'] ?? 0
  const rest = Object.entries(t.outcomes).filter(([k]) => k !== '200' && k !== '502')
  const other = rest.reduce((s, [, v]) => s + v, 0)
  return `${t.requests} (${t.posts} POST): 200 ${ok}, 502 ${n502}, other ${other}${rest.length ? ` (${rest.map(([k, v]) => `${k} x${v}`).join(', ')})` : ''}`
}

function report(name, i, r) {
  const sum = (k) => r.app.reduce((s, a) => s + a[k], 0)
  const max = (k) => Math.max(...r.app.map((a) => a[k])).toFixed(0)
  const failed = Object.entries(r.failed)
  console.log(
    `${name} run ${i + 1}: ${r.tally.lane.requests ? `lane requests ${summary(r.tally.lane)}; other ` : ''}requests ${summary(r.tally.hot)}\n` +
      `  HAProxy: ${r.logged} logged, retried (rc > 0): ${
        Object.entries(r.retried)
          .map(([m, v]) => `${m} x${v}`)
          .join(', ') || 'none'
      }; not "200 --": ${failed.length ? failed.map(([k, v]) => `${k} x${v}`).join(', ') : 'none'}\n` +
      `  apps: ${sum('requests')} requests on ${sum('conns')} connections, ${sum('reused')} on reused ones (longest idle before reuse: ` +
      `${r.tally.lane.requests ? `lane ${max('idleMaxLane')} ms, other ` : ''}${max('idleMaxHot')} ms; ${sum('nearLimit')} within 100 ms of the ${r.idleLimit} ms limit); ` +
      `connections closed by the app's keep-alive timer ${sum('byApp')}, by HAProxy ${sum('byHaproxy')} (FIN) / ${sum('reset')} (RST); ${r.secs.toFixed(1)} s`,
  )
  for (const l of r.notes.slice(0, 5)) console.log(`  haproxy: ${l}`)
}

const base = {
  appKa: opt['app-ka'],
  hka: opt.hka,
  reuse: opt.reuse,
  purge: opt.purge,
  retryOn: opt['retry-on'],
  serverClose: opt['server-close'],
  lanes: opt.lanes,
  fresh: opt.fresh,
  hot: opt.hot,
  clients: opt.clients,
  pause: opt.pause,
  clientIdle: opt['client-idle'],
  duration: opt.duration,
}
const hka80 = String(Math.round(Number(base.appKa) * 0.8))
const configs = opt.matrix
  ? [
      ['baseline', { ...base }],
      ['(a) hka 80 %', { ...base, hka: hka80 }],
      ['(b) pool-purge-delay 500ms', { ...base, purge: '500' }],
      ['(b) pool-purge-delay 700ms', { ...base, purge: '700' }],
      ['(b) http-reuse never', { ...base, reuse: 'never' }],
      ['(b) http-reuse never + hka 80 %', { ...base, reuse: 'never', hka: hka80 }],
      ['(b) option http-server-close', { ...base, serverClose: true }],
      ['(c) app ka 1.5x, hka 1x', { ...base, appKa: String(Number(base.appKa) * 1.5), hka: base.appKa }],
      ['(d) retry-on conn-failure empty-response', { ...base, retryOn: 'conn-failure empty-response' }],
      ['(e) http-reuse always, fresh client connections', { ...base, reuse: 'always', fresh: true }],
    ]
  : [['config', base]]

let failures = 0
for (const [name, cfg] of configs) {
  for (let i = 0; i < Number(opt.runs); i++) {
    const r = await runOnce(cfg)
    if (i === 0)
      console.log(
        `# ${name}: ${describe(cfg)} (Node closes an idle connection ${r.idleLimit} ms after a response); ` +
          (Number(cfg.lanes)
            ? `${cfg.lanes} clients, each with its own quiet lane server requested every ${r.pause.join('-')} ms ` +
              (cfg.fresh ? 'on a new client connection each time' : `and /hot every ${cfg.hot} ms`)
            : `${cfg.clients} clients, pauses ${r.pause.join('-')} ms, client-side idle limit ${cfg.clientIdle} ms`) +
          `, ${cfg.duration} s`,
      )
    for (const t of [r.tally.lane, r.tally.hot]) failures += t.requests - (t.outcomes['200'] ?? 0)
    report(name, i, r)
  }
}
process.exitCode = failures ? 1 : 0
