// The overhead section's second measurement: the same arms, each against a bare server loaded at the
// same time on the same CPU. The alternating rounds compare arms a second apart, and on a shared VM
// the machine's speed moves by 10–20 % from one second to the next; a pair sees the same machine at
// the same instant, so what is left in its ratio is the arms' own difference.
import { execFileSync } from 'node:child_process'
import { performance } from 'node:perf_hooks'
import autocannon from 'autocannon'
import { cpuMicros } from './processes.mjs'
import { fmtPercentSpread, fmtRatioSpread, fmtSpread, median, modeLabel, table, verdict } from './stats.mjs'

/** Both servers together below this share of their CPU: they were not saturated (the load was). */
const SERVERS_BUSY = 0.9
/** Client CPU at or above this share of one core means autocannon may have set the pace. */
const SATURATED = 0.9

/** The CPUs this process may run on, from `taskset -p` (util-linux); undefined without it. */
function ownCpus() {
  try {
    const out = execFileSync('taskset', ['-c', '-p', String(process.pid)], { encoding: 'utf8' })
    const list = out.trim().split(': ').at(-1) ?? ''
    const cpus = []
    for (const part of list.split(',')) {
      const [from, to = from] = part.split('-').map(Number)
      for (let cpu = from; cpu <= to; cpu++) cpus.push(cpu)
    }
    return cpus.every(Number.isInteger) && cpus.length > 0 ? { list, cpus } : undefined
  } catch {
    return undefined
  }
}

/** Pins every thread of `pid` to the CPUs in `list` (`taskset -a`: libuv's pool and V8's threads too). */
function pin(pid, list) {
  execFileSync('taskset', ['-a', '-c', '-p', list, String(pid)], { stdio: 'ignore' })
}

/**
 * Where the pair and the load run: the pair on the last CPU this process may use, the load (this
 * process) on the others. Undefined with one CPU or without taskset: then nothing is pinned.
 */
function pinning() {
  const own = ownCpus()
  if (own === undefined || own.cpus.length < 2) return undefined
  const server = own.cpus.at(-1)
  return { original: own.list, server: String(server), client: own.cpus.slice(0, -1).join(',') }
}

/** The partners measured against a bare server, per group. */
function pairGroups(available, quick, frameworks) {
  const list = []
  for (const mode of ['keep-alive', 'close']) {
    for (const fw of frameworks) {
      if (!available[fw] || (quick && (fw !== 'express' || mode === 'close'))) continue
      const partners = []
      // A/A: a second bare server. What the method reads when there is no difference at all.
      if (!quick) partners.push({ id: 'bare-again', label: 'bare (A/A)', lib: 'none' })
      if (!quick) partners.push({ id: 'noop', label: 'empty middleware', lib: 'none', noop: true })
      partners.push({ id: 'lameduck', label: 'lameduck', lib: 'lameduck' })
      if (!quick && mode === 'keep-alive')
        partners.push({
          id: 'lameduck-health',
          label: 'lameduck, health: true',
          lib: 'lameduck',
          health: true,
        })
      list.push({ fw, mode, partners })
    }
  }
  return list
}

/**
 * One pair: a bare server and `partner`, fresh processes, both pinned to one CPU, warmed up and then
 * loaded at once with the same arguments; CPU read around the measured load only. `swap` starts
 * the partner's load first (alternated, so neither side always leads).
 */
async function measurePair({ plan, group, partner, place, swap, loadOptions, withArms }) {
  return withArms(group.fw, [{ lib: 'none' }, partner], async (servers) => {
    // Allowed for this process, so for its children too; one that has already exited fails below.
    if (place) for (const server of servers) pin(server.pid, place.server)
    const order = swap ? [1, 0] : [0, 1]
    const options = servers.map((server) =>
      loadOptions(plan, server.port, { mode: group.mode, seconds: plan.pairS }),
    )
    await Promise.all(order.map((i) => autocannon({ ...options[i], duration: plan.warmupS })))
    const cpuBefore = servers.map((server) => cpuMicros(server.pid))
    const clientBefore = process.cpuUsage()
    const startedAt = performance.now()
    const results = []
    await Promise.all(
      order.map(async (i) => {
        results[i] = await autocannon({ ...options[i], duration: plan.pairS })
      }),
    )
    const wallUs = (performance.now() - startedAt) * 1_000
    const client = process.cpuUsage(clientBefore)
    const cpu = servers.map((server, i) => cpuMicros(server.pid) - cpuBefore[i])
    const perRequest = cpu.map((us, i) => (results[i]['2xx'] > 0 ? us / results[i]['2xx'] : Number.NaN))
    return {
      cpuRatio: perRequest[1] / perRequest[0],
      rateRatio: results[1]['2xx'] / results[0]['2xx'],
      bareCpuUsPerReq: perRequest[0],
      serversBusy: (cpu[0] + cpu[1]) / wallUs,
      clientCpu: (client.user + client.system) / wallUs,
      problems: results.reduce((sum, r) => sum + r.non2xx + r.errors + r.timeouts, 0),
    }
  })
}

/**
 * Runs the pairs, `plan.rounds` rounds of every group; `loadOptions` and `withArms` are the overhead
 * section's, so the load and the servers are the same. Returns `{ markdown, summary }`.
 */
export async function runPaired({ quick, plan, available, frameworks, log, loadOptions, withArms }) {
  let place = pinning()
  const groups = pairGroups(available, quick, frameworks)
  const results = new Map() // `${fw}/${mode}/${partner}` → measurement per round
  try {
    if (place) pin(process.pid, place.client)
  } catch {
    place = undefined // Not allowed here (a container without CAP_SYS_NICE, say): measured unpinned.
  }
  try {
    for (let round = 0; round < plan.rounds; round++) {
      for (const group of groups) {
        for (const [index, partner] of group.partners.entries()) {
          const m = await measurePair({
            plan,
            group,
            partner,
            place,
            swap: (round + index) % 2 === 1,
            loadOptions,
            withArms,
          })
          const key = `${group.fw}/${group.mode}/${partner.id}`
          if (!results.has(key)) results.set(key, [])
          results.get(key).push(m)
          log(
            `  paired round ${round + 1}/${plan.rounds} ${group.fw} ${group.mode} ${partner.label} vs bare: ` +
              `CPU/req ${m.cpuRatio.toFixed(3)}×, req/s ${m.rateRatio.toFixed(3)}×, ` +
              `servers ${Math.round(m.serversBusy * 100)}% of their CPU, client ${Math.round(m.clientCpu * 100)}%`,
          )
        }
      }
    }
  } finally {
    if (place) pin(process.pid, place.original)
  }

  const header = [
    'framework',
    'connections',
    'against bare',
    'pairs',
    'CPU/req vs bare',
    'req/s vs bare',
    'bare CPU µs/req',
    'both servers, share of their CPU',
    'client CPU',
    'unsaturated / client-bound pairs',
    'non-2xx/errors',
  ]
  const rows = []
  const summary = []
  for (const group of groups) {
    const connections = modeLabel(group.mode, true)
    for (const partner of group.partners) {
      const runs = results.get(`${group.fw}/${group.mode}/${partner.id}`) ?? []
      const pick = (field) => runs.map((run) => run[field])
      const cpuRatios = pick('cpuRatio')
      const unsaturated = runs.filter((run) => run.serversBusy < SERVERS_BUSY).length
      const clientBound = runs.filter((run) => run.clientCpu >= SATURATED).length
      rows.push([
        group.fw,
        connections,
        partner.label,
        String(runs.length),
        fmtRatioSpread(cpuRatios),
        fmtRatioSpread(pick('rateRatio')),
        fmtSpread(pick('bareCpuUsPerReq'), 1),
        fmtPercentSpread(pick('serversBusy')),
        fmtPercentSpread(pick('clientCpu')),
        `${unsaturated} / ${clientBound}`,
        String(pick('problems').reduce((a, b) => a + b, 0)),
      ])
      const what = `${group.fw} ${modeLabel(group.mode)}`
      if (partner.id === 'bare-again')
        summary.push(
          `${what}, paired, A/A (the method's own error): CPU/request ${median(cpuRatios).toFixed(3)}×`,
        )
      if (partner.id === 'noop')
        summary.push(
          `${what}, paired, empty middleware (the floor): CPU/request ${median(cpuRatios).toFixed(3)}× bare`,
        )
      if (partner.lib === 'lameduck')
        summary.push(
          `${what}, paired, ${partner.label}: CPU/request ${median(cpuRatios).toFixed(3)}× bare ` +
            `(target ≤ 1.02×: ${verdict(cpuRatios, 1.02)})`,
        )
    }
  }
  const where = place
    ? `both pinned (\`taskset -a\`, every thread) to CPU ${place.server}, the load generator (this process) to CPU ${place.client}`
    : 'not pinned (taskset missing or a single CPU): the pair and the load share every CPU'
  const markdown = [
    `**Paired on one CPU.** Each pair is a bare server and the arm, fresh processes, ${where}; both warmed up together, then ` +
      `loaded at the same time for ${plan.pairS} s with the arguments above (one autocannon per server, ` +
      'started together, the order alternated). Both servers share their CPU for the whole measurement, so ' +
      "a change in the machine's speed hits both at the same instant; CPU/request is each server's " +
      'utime+stime over the measured load / its 2xx responses, and the ratio is per pair. "bare (A/A)" ' +
      "pairs two bare servers: the method's own error. Verdicts as above. Two servers sharing one CPU each " +
      'cost more per request than one alone (context switches, caches shared; compare "bare CPU µs/req" with ' +
      'the table above), and an arm with more work per request may lose more to that: a paired ratio can ' +
      'overstate what the arm costs a server that has a CPU to itself. ' +
      `"unsaturated": both servers together below ${SERVERS_BUSY * 100}% of their CPU (the load, not the ` +
      `servers, set the pace); "client-bound": the load generator at ${SATURATED * 100}% of a core or more.`,
    '',
    table(header, rows),
  ].join('\n')
  return { markdown, summary }
}
