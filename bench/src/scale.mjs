// Section 3, scale: many idle keep-alive connections closed at the signal, many in-flight requests
// drained, and the memory each in-flight request costs.
import { setTimeout as sleep } from 'node:timers/promises'
import { openMany } from './client.mjs'
import { rowLabel } from './libraries.mjs'
import { isPattern } from './pattern.mjs'
import { openFileLimit, startServer, wallClock } from './processes.mjs'
import { exitLabel } from './shutdown.mjs'
import { fmtCounts, fmtSpread, table } from './stats.mjs'

/** Counts of this section, lowered (with a note) when the open-file limit is too small. */
export function scalePlan({ quick, runs }) {
  const wantedIdle = quick ? 1_000 : 10_000
  const limit = openFileLimit()
  // Each side holds one descriptor per connection; keep a margin for Node's own handles.
  const idle = Math.min(wantedIdle, Math.max(100, Math.floor(limit - 256)))
  const notes = []
  if (idle < wantedIdle) {
    notes.push(
      `Open-file limit (ulimit -n) is ${limit}: idle connections lowered from ${wantedIdle} to ${idle}. ` +
        `Raise it (ulimit -n ${wantedIdle + 1024}) to measure ${wantedIdle}.`,
    )
  }
  const wantedInflight = quick ? 200 : 1_000
  const inflight = Math.min(wantedInflight, idle)
  return { runs: runs ?? (quick ? 1 : 3), timeoutMs: 10_000, idle, inflight, bodyBytes: 1_024, notes }
}

async function withServer(config, body) {
  const server = await startServer({ maxLifeMs: 120_000, probe: true, ...config })
  try {
    return await body(server)
  } finally {
    server.end()
    await server.exited
  }
}

/** In batches, so the server's accept queue and our own event loop stay reasonable. */
async function inBatches(items, size, task) {
  const results = []
  for (let i = 0; i < items.length; i += size)
    results.push(...(await Promise.all(items.slice(i, i + size).map(task))))
  return results
}

/** N idle keep-alive connections (each served one request), SIGTERM: when is the last one closed? */
async function idle(plan, fw, lib) {
  return withServer({ fw, lib, timeoutMs: plan.timeoutMs }, async (server) => {
    const { conns, failures } = await openMany(server.port, plan.idle, { parallel: 200 })
    const warm = await inBatches(conns, 1_000, (conn) => conn.request('/', { timeoutMs: 20_000 }))
    const ready = warm.filter((o) => o.kind === 'response' && o.status === 200 && !o.close).length
    const open = conns.filter((conn) => conn.isOpen)
    const signalAt = server.signal('SIGTERM')
    const bound = sleep(plan.timeoutMs + 5_000).then(() => undefined)
    const closes = await Promise.all(open.map((conn) => Promise.race([conn.closed, bound])))
    const exit = await server.waitExit(5_000)
    for (const conn of conns) conn.destroy()
    const closed = closes.filter(Boolean)
    const probe = await server.probe()
    return {
      // The child's own view: its last socket 'close' against the moment the signal was sent (same
      // wall clock), valid when no socket was still open at its exit.
      childAllClosedMs:
        probe && probe.open === 0 ? probe.lastSocketCloseAt - wallClock(signalAt) : Number.NaN,
      opened: conns.length,
      openFailures: failures.length,
      idle: Math.min(ready, open.length),
      allClosedMs:
        closed.length === open.length ? Math.max(...closed.map((c) => c.at)) - signalAt : Number.NaN,
      stillOpen: open.length - closed.length,
      resets: closed.filter((c) => c.code !== undefined).length,
      signalToExitMs: exit.at - signalAt,
      exit: exitLabel(exit),
    }
  })
}

/** N requests held in their handlers, SIGTERM, then released: all answered? Memory per request? */
async function inflight(plan, fw, lib) {
  return withServer({ fw, lib, timeoutMs: plan.timeoutMs }, async (server) => {
    const baseline = await server.memory()
    const { conns, failures } = await openMany(server.port, plan.inflight, { parallel: 200 })
    const from = server.stdoutLength()
    const pending = conns.map((conn) =>
      conn.request(`/hold?n=${conns.length}&bytes=${plan.bodyBytes}`, { timeoutMs: 25_000 }),
    )
    const announced = await server.waitForLine(/^held \d+$/, 15_000, from)
    // This report also releases the held requests, 500 ms later: the signal goes out first.
    const loaded = await server.memory()
    const signalAt = server.signal('SIGTERM')
    const outcomes = await Promise.all(pending)
    const exit = await server.waitExit(plan.timeoutMs + 5_000)
    for (const conn of conns) conn.destroy()
    const full = outcomes.filter(
      (o) => o.kind === 'response' && o.status === 200 && isPattern(o.body, plan.bodyBytes),
    )
    const responses = outcomes.filter((o) => o.kind === 'response')
    const lastByteAt = Math.max(...responses.map((o) => o.at))
    const perRequest = (field) =>
      baseline && loaded && announced ? (loaded[field] - baseline[field]) / conns.length : Number.NaN
    return {
      sent: conns.length,
      openFailures: failures.length,
      allHeld: announced !== undefined,
      lost: plan.inflight - full.length,
      lastToExitMs: responses.length > 0 ? exit.at - lastByteAt : Number.NaN,
      childFinishToExitMs: await server
        .probe()
        .then((p) => (p?.lastFinishAt ? p.exitAt - p.lastFinishAt : Number.NaN)),
      signalToExitMs: exit.at - signalAt,
      exit: exitLabel(exit),
      heapPerRequest: perRequest('heapUsed') + perRequest('external'),
      rssPerRequest: perRequest('rss'),
    }
  })
}

/** Runs the section over `rows` ([{ lib, fw }]); returns `{ markdown, summary }`. */
export async function runScale({ quick, runs, rows, log }) {
  const plan = scalePlan({ quick, runs })
  for (const note of plan.notes) log(`  note: ${note}`)
  // --quick only keeps this code working: lameduck (express) alone, with fewer connections.
  const chosen = quick ? rows.filter((row) => row.lib === 'lameduck' && row.fw === 'express') : rows
  const data = chosen.map((row) => ({ ...row, idle: [], inflight: [] }))
  for (let run = 0; run < plan.runs; run++) {
    for (const row of data) {
      const i = await idle(plan, row.fw, row.lib)
      row.idle.push(i)
      const head =
        `  scale run ${run + 1}/${plan.runs} ${rowLabel(row.lib, row.fw)}: ${i.idle} idle → all closed ` +
        `${Math.round(i.allClosedMs)} ms (${i.resets} reset), exit ${Math.round(i.signalToExitMs)} ms`
      if (row.idleOnly) {
        log(head)
        continue
      }
      const f = await inflight(plan, row.fw, row.lib)
      row.inflight.push(f)
      log(
        `${head}; ${f.sent} in flight: lost ${f.lost}, last response → exit ${Math.round(f.lastToExitMs)} ms, ` +
          `${(f.heapPerRequest / 1024).toFixed(1)} KiB heap/request`,
      )
    }
  }

  const exits = (results) => {
    const counts = {}
    for (const r of results) counts[r.exit] = (counts[r.exit] ?? 0) + 1
    return fmtCounts(counts)
  }
  const idleTable = table(
    [
      'library (framework)',
      'idle connections',
      'signal → all closed ms',
      "child's clock: signal → last close ms",
      'closed by reset',
      'signal → exit ms',
      'exit',
    ],
    data.map((row) => [
      rowLabel(row.lib, row.fw),
      fmtSpread(row.idle.map((r) => r.idle)),
      row.idle.some((r) => r.stillOpen > 0)
        ? `${fmtSpread(row.idle.map((r) => r.allClosedMs))}; ${Math.max(...row.idle.map((r) => r.stillOpen))} still open at T+5 s`
        : fmtSpread(row.idle.map((r) => r.allClosedMs)),
      fmtSpread(row.idle.map((r) => r.childAllClosedMs)),
      fmtSpread(row.idle.map((r) => r.resets)),
      fmtSpread(row.idle.map((r) => r.signalToExitMs)),
      exits(row.idle),
    ]),
  )
  const inflightTable = table(
    [
      'library (framework)',
      'in flight',
      'lost',
      'last response → exit ms',
      "child's clock: last finish → exit ms",
      'signal → exit ms',
      'exit',
      'heap+external KiB / request',
      'RSS KiB / request',
    ],
    data
      .filter((row) => !row.idleOnly)
      .map((row) => [
        rowLabel(row.lib, row.fw),
        fmtSpread(row.inflight.map((r) => r.sent)) +
          (row.inflight.every((r) => r.allHeld) ? '' : ' (not all held)'),
        fmtSpread(row.inflight.map((r) => r.lost)),
        fmtSpread(row.inflight.map((r) => r.lastToExitMs)),
        fmtSpread(row.inflight.map((r) => r.childFinishToExitMs)),
        fmtSpread(row.inflight.map((r) => r.signalToExitMs)),
        exits(row.inflight),
        fmtSpread(
          row.inflight.map((r) => r.heapPerRequest / 1024),
          2,
        ),
        fmtSpread(
          row.inflight.map((r) => r.rssPerRequest / 1024),
          1,
        ),
      ]),
  )
  const summary = []
  for (const row of data.filter((r) => r.lib === 'close-all')) {
    summary.push(
      `floor, ${rowLabel(row.lib, row.fw)}, scale: ${plan.idle} idle connections all closed in ` +
        `${fmtSpread(row.idle.map((r) => r.allClosedMs))} ms (child's own clock ` +
        `${fmtSpread(row.idle.map((r) => r.childAllClosedMs))} ms): every socket destroyed at once, no grace — ` +
        'what closing them costs on this machine',
    )
  }
  for (const row of data.filter((r) => r.lib === 'exit-now')) {
    summary.push(
      `floor, ${rowLabel(row.lib, row.fw)}, scale: ${plan.idle} idle connections all closed in ` +
        `${fmtSpread(row.idle.map((r) => r.allClosedMs))} ms: the kernel closes every socket at once as ` +
        'the process ends — what this client takes to see that many closes, whatever the server does',
    )
  }
  for (const row of data.filter((r) => r.lib === 'lameduck')) {
    const lost = row.inflight.reduce((total, r) => total + r.lost, 0)
    summary.push(
      `lameduck (${row.fw}), scale: ${plan.idle} idle connections all closed in ` +
        `${fmtSpread(row.idle.map((r) => r.allClosedMs))} ms (target ≤ 250; child's own clock ` +
        `${fmtSpread(row.idle.map((r) => r.childAllClosedMs))} ms), ${plan.inflight} in flight: lost ${lost} (target 0)`,
    )
  }
  const markdown = [
    `${plan.runs} run(s) per cell, median (min–max); library timeout ${plan.timeoutMs} ms; a fresh server process per run.`,
    ...plan.notes.map((note) => `\nNote: ${note}`),
    '',
    `**Idle connections.** ${plan.idle} keep-alive connections opened (200 at a time), each served one ` +
      '`GET /`, then SIGTERM; time until the client saw every one of them closed, and how many were closed ' +
      'by a reset instead of a FIN. "Node\'s closeAllConnections()" is the floor: every socket destroyed ' +
      'at the signal, with no grace and no library, so it shows what the machine itself ' +
      'takes to close that many sockets. "process.exit() at the signal" is the client\'s floor: the ' +
      'kernel closes every socket as the process ends, so its "signal → all closed" is the time this ' +
      'client takes to see that many closes (it has no in-flight row: it would cut every request).',
    '',
    idleTable,
    '',
    `**In-flight requests.** ${plan.inflight} connections, each with a \`GET /hold\` the handler holds until ` +
      `all ${plan.inflight} are in; memory read (after two GCs) before connecting and with all held; SIGTERM; ` +
      `the handlers answer ${plan.bodyBytes} B (byte-checked) 500 ms after the memory reading. Memory per ` +
      'request includes its connection, the framework and the app; compare each row with the others, not with zero.',
    '',
    inflightTable,
  ].join('\n')
  return { markdown, summary }
}
