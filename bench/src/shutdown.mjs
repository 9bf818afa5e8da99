// Section 2, shutdown behaviour: the same app and load under each library, SIGTERM mid-work, every
// outcome counted by the client. Times are taken in this (the parent) process: from the client's last
// byte to the child's 'exit' event.
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { openConnection, openMany } from './client.mjs'
import { rowLabel } from './libraries.mjs'
import { isPattern } from './pattern.mjs'
import { startServer } from './processes.mjs'
import { fmtCounts, fmtSpread, table } from './stats.mjs'

/** Durations and sizes of this section, given the mode. */
export function shutdownPlan({ quick, runs }) {
  return {
    runs: runs ?? (quick ? 1 : 5),
    timeoutMs: 5_000,
    inflight: { requests: 20, slowMs: quick ? 800 : 1_500, bytes: 65_536, signalAtMs: 300 },
    keepAlive: { connections: 16, signalAtMs: quick ? 300 : 500, maxPerConnection: 100_000 },
    hung: { timeoutMs: 1_000, signalAtMs: 200 },
    stream: { chunks: quick ? 16 : 32, bytes: 2_048, everyMs: 50, signalAtMs: 300 },
  }
}

/** How the process ended: `0`, `1`, `SIGTERM`, or `no exit (killed)`. */
export function exitLabel(exit) {
  if (exit.killed) return 'no exit (SIGKILLed)'
  return exit.code !== null ? String(exit.code) : exit.signal
}

function describeFailure(outcome) {
  if (outcome.kind === 'response') return `${outcome.status}`
  if (outcome.kind === 'timeout') return 'no answer (client timeout)'
  if (outcome.code === 'EOF') return outcome.bytes > 0 ? 'closed mid-response' : 'closed, no response'
  return outcome.bytes > 0 ? `${outcome.code} mid-response` : outcome.code
}

/** The child's own 'last response finished → exit' (its clock), or NaN without a probe. */
async function childFinishToExit(server) {
  const probe = await server.probe()
  return probe?.lastFinishAt ? probe.exitAt - probe.lastFinishAt : Number.NaN
}

async function withServer(config, body) {
  const server = await startServer({ maxLifeMs: 60_000, probe: true, ...config })
  try {
    return await body(server)
  } finally {
    server.end()
    await server.exited
  }
}

/** 20 slow requests with 64 KiB bodies on keep-alive connections, SIGTERM while they run. */
async function inflight(plan, fw, lib) {
  const { requests, slowMs, bytes, signalAtMs } = plan.inflight
  return withServer({ fw, lib, timeoutMs: plan.timeoutMs }, async (server) => {
    const { conns, failures } = await openMany(server.port, requests)
    if (failures.length > 0) throw new Error(`in-flight: ${failures.length} connections failed to open`)
    // One request first, so each connection is a kept-alive one when the slow request goes out.
    await Promise.all(conns.map((conn) => conn.request('/')))
    const pending = conns.map((conn) =>
      conn.request(`/slow?ms=${slowMs}&bytes=${bytes}`, { timeoutMs: plan.timeoutMs + 5_000 }),
    )
    await sleep(signalAtMs)
    const signalAt = server.signal('SIGTERM')
    const outcomes = await Promise.all(pending)
    const exit = await server.waitExit(plan.timeoutMs + 5_000)
    for (const conn of conns) conn.destroy()
    const full = outcomes.filter((o) => o.kind === 'response' && o.status === 200 && isPattern(o.body, bytes))
    const lastByteAt = Math.max(...outcomes.filter((o) => o.kind === 'response').map((o) => o.at))
    const failed = {}
    for (const o of outcomes)
      if (!full.includes(o)) failed[describeFailure(o)] = (failed[describeFailure(o)] ?? 0) + 1
    return {
      full: full.length,
      lost: requests - full.length,
      failed,
      connectionClose: full.filter((o) => o.close).length,
      lastToExitMs: Number.isFinite(lastByteAt) ? exit.at - lastByteAt : Number.NaN,
      childFinishToExitMs: await childFinishToExit(server),
      signalToExitMs: exit.at - signalAt,
      exit: exitLabel(exit),
    }
  })
}

/** 16 connections sending requests back to back; SIGTERM mid-load; every outcome after it counted. */
async function keepAlive(plan, fw, lib) {
  const { connections, signalAtMs, maxPerConnection } = plan.keepAlive
  return withServer({ fw, lib, timeoutMs: plan.timeoutMs }, async (server) => {
    const after = { 200: 0, 503: 0, other: 0, reset: 0, refused: 0, timeout: 0 }
    let before200 = 0
    let beforeOther = 0
    let signalAt = Number.POSITIVE_INFINITY
    let lastResponseAt = Number.NaN
    let hardStopAt = Number.POSITIVE_INFINITY

    async function loop(first) {
      let opened = first
      let sent = 0
      while (sent < maxPerConnection && performance.now() < hardStopAt) {
        if (opened.failure) {
          // A refused connection is the clean end for a client: its retry goes to another instance.
          const isAfter = opened.failure.at >= signalAt
          if (isAfter) after[opened.failure.kind === 'refused' ? 'refused' : 'reset']++
          else beforeOther++
          return
        }
        const { conn } = opened
        const outcome = await conn.request('/', { timeoutMs: plan.timeoutMs + 2_000 })
        sent++
        const isAfter = outcome.at >= signalAt
        if (outcome.kind === 'response') {
          lastResponseAt = Number.isNaN(lastResponseAt) ? outcome.at : Math.max(lastResponseAt, outcome.at)
          if (!isAfter) {
            if (outcome.status === 200) before200++
            else beforeOther++
          } else if (outcome.status === 200 || outcome.status === 503) after[outcome.status]++
          else after.other++
          if (!outcome.close && conn.isOpen) continue
        } else if (isAfter) after[outcome.kind === 'timeout' ? 'timeout' : 'reset']++
        else beforeOther++
        conn.destroy()
        opened = await openConnection(server.port)
      }
      if (opened.conn) opened.conn.destroy()
    }

    const loops = []
    // Every connection accepted and served once before the load starts: a connection still in the
    // listener's accept queue when it closes is reset by the kernel, whatever the library does.
    const { conns, failures } = await openMany(server.port, connections)
    if (failures.length > 0) throw new Error(`keep-alive: ${failures.length} connections failed to open`)
    await Promise.all(conns.map((conn) => conn.request('/')))
    hardStopAt = performance.now() + signalAtMs + plan.timeoutMs + 3_000
    for (const conn of conns) loops.push(loop({ conn }))
    await sleep(signalAtMs)
    signalAt = server.signal('SIGTERM')
    await Promise.all(loops)
    const exit = await server.waitExit(plan.timeoutMs + 5_000)
    return {
      before200,
      beforeOther,
      after,
      lastToExitMs: exit.at - lastResponseAt,
      childFinishToExitMs: await childFinishToExit(server),
      signalToExitMs: exit.at - signalAt,
      exit: exitLabel(exit),
    }
  })
}

/** A request whose handler never answers, timeout 1 s: how and when does it end? */
async function hung(plan, fw, lib) {
  const { timeoutMs, signalAtMs } = plan.hung
  return withServer({ fw, lib, timeoutMs }, async (server) => {
    const { conn, failure } = await openConnection(server.port)
    if (failure) throw new Error(`hung: connection failed (${failure.code})`)
    await conn.request('/')
    const pending = conn.request('/hung', { timeoutMs: timeoutMs + 6_000 })
    await sleep(signalAtMs)
    const signalAt = server.signal('SIGTERM')
    const outcome = await pending
    const exit = await server.waitExit(timeoutMs + 5_000)
    conn.destroy()
    return {
      client: describeFailure(outcome),
      clientEndMs: outcome.at - signalAt,
      signalToExitMs: exit.at - signalAt,
      exit: exitLabel(exit),
    }
  })
}

/** A chunked response streaming when the signal comes: does it arrive whole? */
async function stream(plan, fw, lib) {
  const { chunks, bytes, everyMs, signalAtMs } = plan.stream
  return withServer({ fw, lib, timeoutMs: plan.timeoutMs }, async (server) => {
    const { conn, failure } = await openConnection(server.port)
    if (failure) throw new Error(`stream: connection failed (${failure.code})`)
    await conn.request('/')
    const pending = conn.request(`/stream?chunks=${chunks}&bytes=${bytes}&everyMs=${everyMs}`, {
      timeoutMs: plan.timeoutMs + 5_000,
    })
    await sleep(signalAtMs)
    const signalAt = server.signal('SIGTERM')
    const outcome = await pending
    const exit = await server.waitExit(plan.timeoutMs + 5_000)
    conn.destroy()
    const intact =
      outcome.kind === 'response' && outcome.status === 200 && isPattern(outcome.body, chunks * bytes)
    return {
      intact,
      client: intact ? 'intact' : describeFailure(outcome),
      endToExitMs: outcome.kind === 'response' ? exit.at - outcome.at : Number.NaN,
      childFinishToExitMs: await childFinishToExit(server),
      signalToExitMs: exit.at - signalAt,
      exit: exitLabel(exit),
    }
  })
}

function describe(name, r, plan) {
  if (name === 'inflight') return `in-flight ${r.full}/${plan.inflight.requests} full, exit ${r.exit}`
  if (name === 'keepAlive') return `keep-alive after signal ${fmtCounts(r.after)}, exit ${r.exit}`
  if (name === 'hung') return `hung → ${r.client}, exit ${r.exit} after ${Math.round(r.signalToExitMs)} ms`
  return `stream ${r.client}, exit ${r.exit}`
}

function exits(results) {
  const counts = {}
  for (const r of results) counts[r.exit] = (counts[r.exit] ?? 0) + 1
  return fmtCounts(counts)
}

function outcomes(results, field) {
  const counts = {}
  for (const r of results) counts[r[field]] = (counts[r[field]] ?? 0) + 1
  return fmtCounts(counts)
}

const SCENARIOS = { inflight, keepAlive, hung, stream }
const CHILD_COLUMN = "child's clock: last finish → exit ms"

/**
 * Which scenarios a row runs. `--quick` only keeps this code working: every scenario once on
 * lameduck (express), and the in-flight one on every other row, so each library's wiring still runs.
 */
function scenariosOf(row, quick) {
  if (!quick || (row.lib === 'lameduck' && row.fw === 'express')) return Object.keys(SCENARIOS)
  return ['inflight']
}

/** Runs the section over `rows` ([{ lib, fw }]); returns `{ markdown, summary }`. */
export async function runShutdown({ quick, runs, rows, log }) {
  const plan = shutdownPlan({ quick, runs })
  const data = rows.map((row) => ({ ...row, inflight: [], keepAlive: [], hung: [], stream: [] }))
  for (let run = 0; run < plan.runs; run++) {
    for (const row of data) {
      const done = []
      for (const name of scenariosOf(row, quick)) {
        const result = await SCENARIOS[name](plan, row.fw, row.lib)
        row[name].push(result)
        done.push(describe(name, result, plan))
      }
      log(`  shutdown run ${run + 1}/${plan.runs} ${rowLabel(row.lib, row.fw)}: ${done.join('; ')}`)
    }
  }

  const ms = (values) => fmtSpread(values, 0)
  const sum = (results, pick) => results.reduce((total, r) => total + pick(r), 0)
  const inflightTable = table(
    [
      'library (framework)',
      'full bodies',
      'lost or truncated',
      'how',
      'with Connection: close',
      'last response → exit ms',
      CHILD_COLUMN,
      'exit',
    ],
    data
      .filter((row) => row.inflight.length > 0)
      .map((row) => [
        rowLabel(row.lib, row.fw),
        fmtSpread(row.inflight.map((r) => r.full)),
        String(sum(row.inflight, (r) => r.lost)),
        fmtCounts(row.inflight.reduce((all, r) => mergeCounts(all, r.failed), {})),
        fmtSpread(row.inflight.map((r) => r.connectionClose)),
        ms(row.inflight.map((r) => r.lastToExitMs)),
        ms(row.inflight.map((r) => r.childFinishToExitMs)),
        exits(row.inflight),
      ]),
  )
  const keepAliveTable = table(
    [
      'library (framework)',
      '200',
      '503',
      'resets',
      'refused',
      'other',
      'last response → exit ms',
      CHILD_COLUMN,
      'exit',
    ],
    data
      .filter((row) => row.keepAlive.length > 0)
      .map((row) => [
        rowLabel(row.lib, row.fw),
        fmtSpread(row.keepAlive.map((r) => r.after[200])),
        fmtSpread(row.keepAlive.map((r) => r.after[503])),
        fmtSpread(row.keepAlive.map((r) => r.after.reset)),
        fmtSpread(row.keepAlive.map((r) => r.after.refused)),
        fmtSpread(row.keepAlive.map((r) => r.after.other + r.after.timeout + r.beforeOther)),
        ms(row.keepAlive.map((r) => r.lastToExitMs)),
        ms(row.keepAlive.map((r) => r.childFinishToExitMs)),
        exits(row.keepAlive),
      ]),
  )
  const hungTable = table(
    ['library (framework)', 'signal → exit ms', 'exit', 'client got', 'signal → client end ms'],
    data
      .filter((row) => row.hung.length > 0)
      .map((row) => [
        rowLabel(row.lib, row.fw),
        ms(row.hung.map((r) => r.signalToExitMs)),
        exits(row.hung),
        outcomes(row.hung, 'client'),
        ms(row.hung.map((r) => r.clientEndMs)),
      ]),
  )
  const streamTable = table(
    ['library (framework)', 'stream', 'end of stream → exit ms', CHILD_COLUMN, 'exit'],
    data
      .filter((row) => row.stream.length > 0)
      .map((row) => [
        rowLabel(row.lib, row.fw),
        outcomes(row.stream, 'client'),
        ms(row.stream.map((r) => r.endToExitMs)),
        ms(row.stream.map((r) => r.childFinishToExitMs)),
        exits(row.stream),
      ]),
  )

  const summary = []
  for (const row of data.filter((r) => r.lib === 'lameduck')) {
    const parts = []
    const lost = sum(row.inflight, (r) => r.lost) + row.stream.filter((r) => !r.intact).length
    parts.push(`lost/truncated ${lost} (target 0)`)
    if (row.keepAlive.length > 0) parts.push(`resets ${sum(row.keepAlive, (r) => r.after.reset)} (target 0)`)
    const exitMs = [...row.inflight, ...row.keepAlive].map((r) => r.lastToExitMs)
    const childMs = [...row.inflight, ...row.keepAlive].map((r) => r.childFinishToExitMs)
    parts.push(
      `last response → exit median ${fmtSpread(exitMs)} ms (target ≤ 20; child's own clock ${fmtSpread(childMs)} ms)`,
    )
    const graceful = [...row.inflight, ...row.keepAlive, ...row.stream]
    parts.push(`exit 0 when graceful: ${graceful.every((r) => r.exit === '0') ? 'yes' : 'no'}`)
    if (row.hung.length > 0) {
      const forcedNonZero = row.hung.every((r) => r.exit !== '0' && !r.exit.startsWith('no exit'))
      parts.push(`non-zero when forced: ${forcedNonZero ? 'yes' : 'no'}`)
    }
    summary.push(`lameduck (${row.fw}), shutdown: ${parts.join(', ')}`)
  }

  const { inflight: f, keepAlive: k, hung: h, stream: s } = plan
  const markdown = [
    `${plan.runs} run(s) per cell, a fresh server process per run; cells show the median (min–max) over runs ` +
      `unless they count outcomes over all runs. Library timeout T = ${plan.timeoutMs} ms unless stated.` +
      (quick
        ? ' `--quick`: every scenario on lameduck (express), only the in-flight one on the other rows.'
        : '') +
      " Exit times are taken in the parent, from the client's last byte to the child's `exit` event; the " +
      '"child\'s clock" column is the child\'s own view (its last response `finish` → its `exit` event), ' +
      'which leaves out how late a busy machine lets the parent see either event.',
    '',
    `**In-flight.** ${f.requests} keep-alive connections (each served one request first), then on each one ` +
      `\`GET /slow\`: ${f.slowMs} ms, then a ${f.bytes / 1024} KiB body checked byte by byte; SIGTERM ` +
      `${f.signalAtMs} ms after sending. "full bodies" and "with Connection: close" (responses telling the ` +
      'client not to reuse the connection): per run.',
    '',
    inflightTable,
    '',
    `**Keep-alive load.** ${k.connections} keep-alive connections (each served one request first) sending ` +
      `\`GET /\` back to back (a new connection after ` +
      `\`Connection: close\` or a close), SIGTERM at ${k.signalAtMs} ms. Outcomes after the signal, per run: ` +
      '200, 503, resets (ECONNRESET, or the socket closed with a request outstanding), refused (ECONNREFUSED on ' +
      'reconnecting — the clean end: a real client retries elsewhere), other (any other status, timeouts, ' +
      'failures before the signal). Each connection stops at its first refused or failed reconnect.',
    '',
    keepAliveTable,
    '',
    `**Hung request.** One \`GET /hung\` whose handler never answers; library timeout ${h.timeoutMs} ms; SIGTERM ` +
      `${h.signalAtMs} ms after sending.`,
    '',
    hungTable,
    '',
    `**Streaming response.** \`GET /stream\`: ${s.chunks} chunks of ${s.bytes / 1024} KiB every ${s.everyMs} ms ` +
      `(chunked), SIGTERM at ${s.signalAtMs} ms; the handler does not listen for shutdown.`,
    '',
    streamTable,
  ].join('\n')
  return { markdown, summary }
}

function mergeCounts(into, counts) {
  for (const [key, count] of Object.entries(counts)) into[key] = (into[key] ?? 0) + count
  return into
}
