// Section 1, overhead: the bare framework against the same app with graceful() mounted (and the other
// libraries on Express), hello-world route, autocannon, rounds of fresh server processes loaded in
// alternating slices, server CPU read from /proc/<pid>/stat around the measured slices only.
import { performance } from 'node:perf_hooks'
import autocannon from 'autocannon'
import { LIBRARIES } from './libraries.mjs'
import { runPaired } from './paired.mjs'
import { cpuMicros, withServers } from './processes.mjs'
import { runProfiles } from './profile.mjs'
import { fmtPercentSpread, fmtRatioSpread, fmtSpread, median, modeLabel, table, verdict } from './stats.mjs'

/** Client CPU at or above this share of one core means autocannon, not the server, set the pace. */
const SATURATED = 0.9

/** The runs of this section, given the mode. */
export function overheadPlan({ quick, rounds }) {
  return {
    rounds: rounds ?? (quick ? 1 : 5),
    warmupS: quick ? 0.5 : 1,
    slices: quick ? 2 : 4,
    sliceS: quick ? 0.5 : 1,
    // The paired runs (paired.mjs): each pair loaded at once for this long.
    pairS: quick ? 1 : 4,
    connections: 32,
    pipelining: 1,
  }
}

/** Load-generator arguments, identical for every arm of a mode (recorded in RESULTS.md). */
export function loadArguments(plan, mode) {
  const close = mode === 'close' ? ", headers: { connection: 'close' }" : ''
  return (
    `autocannon({ url: 'http://127.0.0.1:<port>/', connections: ${plan.connections}, pipelining: ${plan.pipelining}, ` +
    `duration: ${plan.sliceS}, maxOverallRequests: ${maxRequests(plan)}${close} }) per slice, after a ` +
    `${plan.warmupS} s warm-up with the same arguments, in the parent process`
  )
}

/** A cap on requests per load of `seconds` (or a slice), so no load is unbounded in count. */
function maxRequests(plan, seconds = plan.sliceS) {
  return Math.round(200_000 * Math.max(seconds, plan.warmupS))
}

/**
 * autocannon's options for the server on `port`: the same for every arm, slice, warm-up and profile
 * run (`seconds` only sets the request cap; the caller adds `duration`).
 */
function loadOptions(plan, port, { mode = 'keep-alive', seconds } = {}) {
  return {
    url: `http://127.0.0.1:${port}/`,
    connections: plan.connections,
    pipelining: plan.pipelining,
    maxOverallRequests: maxRequests(plan, seconds),
    ...(mode === 'close' ? { headers: { connection: 'close' } } : {}),
  }
}

/** The groups of arms measured against each other, round by round. */
function groups(available, quick, frameworks) {
  const list = []
  for (const fw of ['express', 'koa', 'fastify']) {
    const lameduck = available[fw]
    const arms = [{ id: 'bare', label: 'bare', lib: 'none', health: false }]
    // The floor: the framework's extension points graceful() uses, mounted and doing nothing. What a
    // middleware costs before it does any work, so no CPU/request target can go below it.
    if (!quick) arms.push({ id: 'noop', label: 'empty middleware', lib: 'none', noop: true, health: false })
    // --quick only keeps this code working: the health arm and the other libraries (whose wiring
    // runs in the shutdown section) are left out, and connection-per-request runs on Express only.
    if (lameduck) {
      arms.push({ id: 'lameduck', label: 'lameduck', lib: 'lameduck', health: false })
      if (!quick || fw === 'express') {
        arms.push({ id: 'lameduck-health', label: 'lameduck, health: true', lib: 'lameduck', health: true })
      }
    }
    // The server-level libraries only see the http.Server: measured once, on Express.
    if (fw === 'express' && !quick) {
      for (const lib of ['http-terminator', 'stoppable', 'terminus', 'http-graceful-shutdown']) {
        arms.push({ id: lib, label: LIBRARIES[lib].label, lib, health: false })
      }
    }
    list.push({ fw, mode: 'keep-alive', arms })
  }
  for (const fw of quick ? ['express'] : ['express', 'koa', 'fastify']) {
    const arms = [{ id: 'bare', label: 'bare', lib: 'none', health: false }]
    // The floor here too: with a connection per request, an empty hook can cost more than 2 %.
    if (!quick) arms.push({ id: 'noop', label: 'empty middleware', lib: 'none', noop: true, health: false })
    if (available[fw]) arms.push({ id: 'lameduck', label: 'lameduck', lib: 'lameduck', health: false })
    list.push({ fw, mode: 'close', arms })
  }
  return list.filter((group) => frameworks.includes(group.fw))
}

/**
 * One round of a group: a fresh server per arm, all started together, then the load alternates
 * between them in slices (A B C, C B A, A B C…), so a change in machine load during the round hits
 * every arm alike. A server is idle while the others are loaded, so its CPU is read once before its
 * first slice and once after its last.
 */
async function measureRound(plan, group) {
  return withArms(group.fw, group.arms, async (servers) => {
    const options = servers.map((server) => loadOptions(plan, server.port, { mode: group.mode }))
    for (const option of options) await autocannon({ ...option, duration: plan.warmupS })
    const totals = servers.map(() => ({ ok: 0, problems: 0, wallUs: 0, clientUs: 0, cpuStart: 0, cpuEnd: 0 }))
    const forward = servers.map((_, i) => i)
    for (let slice = 0; slice < plan.slices; slice++) {
      for (const i of slice % 2 === 0 ? forward : [...forward].reverse()) {
        const total = totals[i]
        const cpuBefore = cpuMicros(servers[i].pid)
        if (slice === 0) total.cpuStart = cpuBefore
        const clientBefore = process.cpuUsage()
        const startedAt = performance.now()
        const result = await autocannon({ ...options[i], duration: plan.sliceS })
        total.wallUs += (performance.now() - startedAt) * 1_000
        total.cpuEnd = cpuMicros(servers[i].pid)
        const client = process.cpuUsage(clientBefore)
        total.clientUs += client.user + client.system
        total.ok += result['2xx']
        total.problems += result.non2xx + result.errors + result.timeouts
      }
    }
    return totals.map((total) => {
      const serverUs = total.cpuEnd - total.cpuStart
      return {
        reqPerSec: total.ok / (total.wallUs / 1e6),
        cpuUsPerReq: total.ok > 0 ? serverUs / total.ok : Number.NaN,
        serverCpu: serverUs / total.wallUs,
        clientCpu: total.clientUs / total.wallUs,
        problems: total.problems,
      }
    })
  })
}

/** Fresh servers for `arms` of framework `fw`, ended by PID once `use(servers)` has settled. */
function withArms(fw, arms, use) {
  const configs = arms.map((arm) => ({
    fw,
    lib: arm.lib,
    timeoutMs: 10_000,
    health: arm.health === true,
    noop: arm.noop === true,
    maxLifeMs: 120_000,
  }))
  return withServers(configs, use)
}

/** Runs the section; `log` prints progress. Returns `{ markdown, summary }`. */
export async function runOverhead({ quick, rounds, available, frameworks, log }) {
  const plan = overheadPlan({ quick, rounds })
  const plan_ = groups(available, quick, frameworks)
  const results = new Map() // `${fw}/${mode}/${arm}` → measurement per round
  for (let round = 0; round < plan.rounds; round++) {
    for (const group of plan_) {
      const measured = await measureRound(plan, group)
      group.arms.forEach((arm, i) => {
        const key = `${group.fw}/${group.mode}/${arm.id}`
        const m = measured[i]
        if (!results.has(key)) results.set(key, [])
        results.get(key)[round] = m
        log(
          `  overhead round ${round + 1}/${plan.rounds} ${group.fw} ${group.mode} ${arm.label}: ` +
            `${Math.round(m.reqPerSec)} req/s, ${m.cpuUsPerReq.toFixed(1)} µs CPU/req, ` +
            `server ${Math.round(m.serverCpu * 100)}% client ${Math.round(m.clientCpu * 100)}%`,
        )
      })
    }
  }

  const paired = await runPaired({ quick, plan, available, frameworks, log, loadOptions, withArms })
  const profiles = await runProfiles({ quick, plan, available, frameworks, log, loadOptions })

  const header = [
    'framework',
    'connections',
    'variant',
    'req/s',
    'server CPU µs/req',
    'CPU/req vs bare',
    'req/s vs bare',
    'server CPU',
    'client CPU',
    'client-bound runs',
    'non-2xx/errors',
  ]
  const rows = []
  const summary = []
  for (const group of plan_) {
    const bare = results.get(`${group.fw}/${group.mode}/bare`)
    for (const arm of group.arms) {
      const runs = results.get(`${group.fw}/${group.mode}/${arm.id}`)
      const pick = (field) => runs.map((run) => run[field])
      const ratio = (field) => runs.map((run, round) => run[field] / bare[round][field])
      const cpuRatios = ratio('cpuUsPerReq')
      rows.push([
        group.fw,
        modeLabel(group.mode, true),
        arm.label,
        fmtSpread(pick('reqPerSec')),
        fmtSpread(pick('cpuUsPerReq'), 1),
        arm.id === 'bare' ? '1' : fmtRatioSpread(cpuRatios),
        arm.id === 'bare' ? '1' : fmtRatioSpread(ratio('reqPerSec')),
        fmtPercentSpread(pick('serverCpu')),
        fmtPercentSpread(pick('clientCpu')),
        `${runs.filter((run) => run.clientCpu >= SATURATED).length}/${runs.length}`,
        String(pick('problems').reduce((a, b) => a + b, 0)),
      ])
      if (arm.id === 'noop') {
        summary.push(
          `${group.fw} ${modeLabel(group.mode)}, empty middleware ` +
            `(the floor of any middleware): CPU/request ${median(cpuRatios).toFixed(3)}× bare`,
        )
      }
      if (arm.lib === 'lameduck') {
        const value = median(cpuRatios)
        summary.push(
          `${group.fw} ${modeLabel(group.mode)}, ${arm.label}: ` +
            `CPU/request ${value.toFixed(3)}× bare (target ≤ 1.02×: ${verdict(cpuRatios, 1.02)})`,
        )
      }
    }
    if (group.arms.length === 1) {
      summary.push(
        `${group.fw} ${group.mode}: lameduck adapter not built, only the bare framework was measured`,
      )
    }
  }
  const markdown = [
    `Rounds: ${plan.rounds}. Each round starts a fresh server process per arm, warms each up, then loads ` +
      `them in turn, ${plan.slices} slices of ${plan.sliceS} s each, the order reversed every slice ` +
      '(A B C, C B A, …), so drifting machine load hits every arm alike. ' +
      `Load: ${loadArguments(plan, 'keep-alive')}; the "new per request" rows add \`Connection: close\` to every ` +
      'request, so each one opens a connection; "health: true" serves the probes but the load still goes to `/`, so it ' +
      'shows what having them on costs every other request; "empty middleware" mounts the extension points ' +
      'graceful() uses, doing nothing (Express: `app.use((req, res, next) => next())`; Koa: ' +
      '`app.use((ctx, next) => next())`; Fastify: an `onRequest` hook calling `done()` and an `onRoute` hook ' +
      'wrapping each handler in a pass-through function): the floor under any middleware. Server CPU: utime+stime from `/proc/<pid>/stat`, read ' +
      "before the server's first slice and after its last (it is idle while the others are loaded); " +
      'CPU/request = that / 2xx responses. Ratios are the median of per-round ratios ' +
      '(each run against the bare run of the same round). A target is called met (or not met) only when a ' +
      'distribution-free interval for the median of those per-round ratios (the k-th smallest to the k-th largest; ' +
      'with 5 rounds, min–max, 93.75 %) lies wholly at or below it (or above it); otherwise this run does not ' +
      'decide it. "client-bound runs": runs where the load generator ' +
      `used ≥ ${SATURATED * 100}% of a core, i.e. it may have saturated before the server.`,
    '',
    table(header, rows),
    '',
    paired.markdown,
    '',
    profiles.markdown,
  ].join('\n')
  return { markdown, summary: [...summary, ...paired.summary, ...profiles.summary] }
}
