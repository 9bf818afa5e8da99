// Part of section 1: lameduck's own share of the server's CPU, read from a V8 CPU profile of the
// server under the same load. A ratio inside one process, so machine noise that moves the
// bare-vs-lameduck CPU/request ratio by ±10 % on a shared VM hardly moves it.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import autocannon from 'autocannon'
import { startServer } from './processes.mjs'
import { fmtSpread, median, table } from './stats.mjs'

/** Frames of lameduck's own code: the built packages, by their real path or the scoped name. */
const OWN_CODE = /\/packages\/(core|express|koa|fastify)\/dist\/|\/@lameduck\/(core|express|koa|fastify)\//

/**
 * Self time of the profile's samples, split into idle, lameduck's own functions and everything else,
 * over the window from `fromMs` to `toMs` after the profile's start (start-up, warm-up and the
 * shutdown left out).
 */
export function ownShare(profile, fromMs, toMs) {
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]))
  const from = profile.startTime + fromMs * 1_000
  const to = profile.startTime + toMs * 1_000
  let at = profile.startTime
  let idle = 0
  let own = 0
  let total = 0
  const byFunction = new Map()
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i]
    // A sample's weight is the time until the next one.
    const weight = profile.timeDeltas[i + 1] ?? 0
    if (at < from || at > to) continue
    const { functionName, url } = nodes.get(profile.samples[i]).callFrame
    total += weight
    if (functionName === '(idle)') idle += weight
    else if (OWN_CODE.test(url)) {
      own += weight
      byFunction.set(functionName, (byFunction.get(functionName) ?? 0) + weight)
    }
  }
  const busy = total - idle
  const top = [...byFunction]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 3)
    .map(([name, us]) => `${name || '(anonymous)'} ${((100 * us) / busy).toFixed(2)}%`)
  return { busyMs: busy / 1_000, ownShare: busy > 0 ? own / busy : Number.NaN, top }
}

/** One profiled run: a fresh lameduck server, warmed up, loaded for `seconds`, then SIGTERMed. */
async function profileOnce(fw, plan, seconds, loadOptions) {
  const dir = mkdtempSync(join(tmpdir(), 'lameduck-bench-profile-'))
  try {
    const server = await startServer({
      fw,
      lib: 'lameduck',
      timeoutMs: 10_000,
      health: false,
      maxLifeMs: 120_000,
      cpuProfileDir: dir,
    })
    const options = loadOptions(plan, server.port, { seconds })
    await autocannon({ ...options, duration: plan.warmupS })
    const startedAt = performance.now()
    const result = await autocannon({ ...options, duration: seconds })
    const signalAt = server.signal('SIGTERM')
    const exit = await server.waitExit(15_000)
    const file = readdirSync(dir).find((name) => name.endsWith('.cpuprofile'))
    if (exit.code !== 0 || file === undefined) return undefined
    const profile = JSON.parse(readFileSync(join(dir, file), 'utf8'))
    // The window, placed back from the profile's end (the child's exit, which the parent sees a little
    // late: the window slides early by that lag, never into the shutdown).
    const endMs = (profile.endTime - profile.startTime) / 1_000
    const toMs = endMs - (exit.at - signalAt)
    return { ...ownShare(profile, toMs - (signalAt - startedAt), toMs), requests: result['2xx'] }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * Runs the profiles of the section with the section's own `loadOptions(plan, port, { seconds })`;
 * returns `{ markdown, summary }`.
 */
export async function runProfiles({ quick, plan, available, frameworks, log, loadOptions }) {
  const runs = quick ? 1 : 3
  const seconds = quick ? 1 : 3
  const chosen = frameworks.filter((fw) => available[fw] && (!quick || fw === 'express'))
  const rows = []
  const summary = []
  for (const fw of chosen) {
    const results = []
    for (let run = 0; run < runs; run++) {
      const result = await profileOnce(fw, plan, seconds, loadOptions)
      if (result === undefined) {
        log(`  profile run ${run + 1}/${runs} ${fw}: no profile (the server did not exit 0)`)
        continue
      }
      results.push(result)
      log(
        `  profile run ${run + 1}/${runs} ${fw}: lameduck's own code ${(100 * result.ownShare).toFixed(2)}% ` +
          `of ${Math.round(result.busyMs)} ms busy (${result.top.join(', ')})`,
      )
    }
    const shares = results.map((r) => 100 * r.ownShare)
    rows.push([
      fw,
      fmtSpread(
        results.map((r) => r.requests),
        0,
      ),
      fmtSpread(
        results.map((r) => r.busyMs),
        0,
      ),
      fmtSpread(shares, 2, '%'),
      results.at(-1)?.top.join(', ') ?? '–',
    ])
    if (results.length > 0) {
      summary.push(
        `${fw} keep-alive, lameduck's own code (V8 CPU profile): ${median(shares).toFixed(2)}% of the server's busy CPU`,
      )
    }
  }
  const markdown = [
    `**lameduck's own code in a CPU profile.** ${runs} run(s) per framework: a fresh lameduck server ` +
      `started with \`--cpu-prof\`, warmed up, loaded for ${seconds} s with the same autocannon arguments, ` +
      "then SIGTERMed (the profile is written at its exit). Over the loaded window, the self time of lameduck's " +
      "functions (the built `@lameduck/*` packages) as a share of the server's busy time (all samples but idle). " +
      'A share within one process, so machine load moves it far less than the ratios. Two limits: samples ' +
      "follow V8's inlining, which differs from run to run (a lameduck function inlined into a Node caller " +
      "counts as Node's, and the reverse), hence the spread; and it leaves out the work lameduck causes in " +
      "Node's own functions — a second `'request'` listener, a `'close'` listener per response, the garbage " +
      'of both — which the ratios above include, with the framework cost of one more middleware (the ' +
      '"empty middleware" arm).',
    '',
    table(['framework', 'requests', 'busy ms', "lameduck's own self time", 'top functions (last run)'], rows),
  ].join('\n')
  return { markdown, summary }
}
