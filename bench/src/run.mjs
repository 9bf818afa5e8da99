#!/usr/bin/env node
// `pnpm bench [--quick] [--only=overhead,shutdown,scale] [--libs=lameduck,stoppable,…] [--rounds=N] [--runs=N]
//  [--fw=express,koa,fastify] [--note="…"] [--out=file]`; --libs picks the rows of the shutdown and scale
//  sections, --fw the frameworks of every section.
// Loopback only; every server in its own child process, ended by PID on every exit path.
// Benchmarks never fail on a number: the exit code is non-zero only when the bench itself broke.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { ADAPTERS, COMMON_SERVER_SETTINGS, LIBRARIES } from './libraries.mjs'
import { runOverhead } from './overhead.mjs'
import { CLOCK_TICKS, exitLagsMs, killAll, openFileLimit, runningCount } from './processes.mjs'
import { runScale } from './scale.mjs'
import { runShutdown } from './shutdown.mjs'
import { fmtSpread } from './stats.mjs'

const BENCH_DIR = dirname(dirname(fileURLToPath(import.meta.url)))
const SECTIONS = ['overhead', 'shutdown', 'scale']

// --- every exit path ends our children ------------------------------------------------------------

process.on('exit', killAll)
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    killAll()
    process.stderr.write(`\nbench: ${signal}, ended every server it had started\n`)
    process.exit(128 + os.constants.signals[signal])
  })
}

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    rounds: { type: 'string' },
    runs: { type: 'string' },
    note: { type: 'string' },
    libs: { type: 'string' },
    fw: { type: 'string' },
    out: { type: 'string' },
  },
  allowPositionals: false,
})
const quick = args.quick
const only = args.only ? args.only.split(',').map((s) => s.trim()) : SECTIONS
for (const name of only) if (!SECTIONS.includes(name)) throw new Error(`--only: unknown section "${name}"`)
const positive = (value, name) => {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`--${name} must be a whole number ≥ 1; received "${value}"`)
  return n
}
const rounds = positive(args.rounds, 'rounds')
const runs = positive(args.runs, 'runs')

// The whole bench is bounded in time too: a stuck step must not hold the machine.
const budgetMs = (quick ? 5 : 90) * 60_000
setTimeout(() => {
  process.stderr.write(`bench: over its ${budgetMs / 60_000} min budget; ending every server and exiting\n`)
  killAll()
  process.exit(1)
}, budgetMs).unref()

const log = (line) => process.stderr.write(`${line}\n`)

function version(name) {
  try {
    return JSON.parse(readFileSync(join(BENCH_DIR, 'node_modules', name, 'package.json'), 'utf8')).version
  } catch {
    return 'not installed'
  }
}

/** Which lameduck adapters can be loaded (their `dist/` exists). */
async function adapters() {
  const available = {}
  for (const [fw, name] of Object.entries(ADAPTERS)) {
    try {
      available[fw] = typeof (await import(name)).graceful === 'function'
    } catch {
      available[fw] = false
    }
  }
  return available
}

function machine() {
  const cpus = os.cpus()
  return {
    cpu: `${cpus[0]?.model ?? 'unknown'} × ${cpus.length}`,
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    load: os
      .loadavg()
      .map((v) => v.toFixed(2))
      .join(' '),
  }
}

/** Machine-wide CPU jiffies from /proc/stat: busy, idle (with iowait), steal; undefined off Linux. */
function cpuTimes() {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
    const [user, nice, system, idle, iowait, irq, softirq, steal = 0] = fields
    return { busy: user + nice + system + irq + softirq, idle: idle + iowait, steal }
  } catch {
    return undefined
  }
}

function cpuShare(from, to) {
  if (!from || !to) return 'unknown'
  const busy = to.busy - from.busy
  const idle = to.idle - from.idle
  const steal = to.steal - from.steal
  const total = busy + idle + steal
  return `${Math.round((busy / total) * 100)}% busy, ${Math.round((steal / total) * 100)}% steal reported`
}

const started = new Date()
const cpuAtStart = cpuTimes()
const startedMs = Date.now()
const available = await adapters()
const before = machine()
const missing = Object.entries(available)
  .filter(([, ok]) => !ok)
  .map(([fw]) => ADAPTERS[fw])
log(`lameduck bench${quick ? ' --quick' : ''}: ${only.join(', ')}; Node ${process.version}, ${before.cpu}`)
if (missing.length > 0) log(`  note: ${missing.join(', ')} not built (no dist/): those rows are skipped`)

const libs = args.libs ? args.libs.split(',').map((s) => s.trim()) : Object.keys(LIBRARIES)
for (const lib of libs) {
  if (!(lib in LIBRARIES))
    throw new Error(`--libs: unknown library "${lib}"; known: ${Object.keys(LIBRARIES).join(', ')}`)
}
const frameworks = args.fw ? args.fw.split(',').map((s) => s.trim()) : Object.keys(ADAPTERS)
for (const fw of frameworks) {
  if (!(fw in ADAPTERS))
    throw new Error(`--fw: unknown framework "${fw}"; known: ${Object.keys(ADAPTERS).join(', ')}`)
}
const rows = []
for (const [lib, { frameworks: where, sections, idleOnly }] of Object.entries(LIBRARIES)) {
  if (!libs.includes(lib)) continue
  for (const fw of where)
    if (frameworks.includes(fw) && (lib !== 'lameduck' || available[fw]))
      rows.push({ lib, fw, sections, idleOnly })
}
/** The rows of a section: those not limited to other sections. */
const rowsOf = (section) => rows.filter((row) => row.sections === undefined || row.sections.includes(section))

const sections = []
const summary = []
const titles = {
  overhead: '1. Overhead: graceful() against the bare framework',
  shutdown: '2. Shutdown behaviour against the other libraries',
  scale: '3. Scale',
}
for (const name of only) {
  log(`\n${titles[name]}`)
  const sectionStarted = Date.now()
  const result =
    name === 'overhead'
      ? await runOverhead({ quick, rounds, available, frameworks, log })
      : name === 'shutdown'
        ? await runShutdown({
            quick,
            runs,
            rows: rowsOf('shutdown').filter((r) => r.lib !== 'none' || r.fw === 'express'),
            log,
          })
        : await runScale({ quick, runs, rows: rowsOf('scale'), log })
  const seconds = Math.round((Date.now() - sectionStarted) / 1000)
  sections.push(`## ${titles[name]}\n\n${result.markdown}\n\n_Section time: ${seconds} s._`)
  summary.push(...result.summary)
  process.stdout.write(`\n## ${titles[name]}\n\n${result.markdown}\n`)
}

const after = machine()
const cpuDuringRun = cpuShare(cpuAtStart, cpuTimes())
const elapsedS = Math.round((Date.now() - startedMs) / 1000)
const versions = [
  'express',
  'koa',
  'fastify',
  'http-terminator',
  'stoppable',
  '@godaddy/terminus',
  'http-graceful-shutdown',
  'autocannon',
]
const report = [
  '# lameduck benchmarks',
  '',
  `Generated by \`pnpm bench${quick ? ' --quick' : ''}\` on ${started.toISOString()} in ${elapsedS} s. ` +
    'Numbers from one machine and one run of the bench: quote the medians and ratios, never a single run.',
  ...(args.note ? ['', `**Note:** ${args.note}`] : []),
  '',
  '## Machine and versions',
  '',
  `- Machine: ${before.cpu}, ${before.memory} RAM, ${before.os}; load average (1/5/15 min) ${before.load} at the ` +
    `start, ${after.load} at the end; all CPUs over the run (this bench included): ${cpuDuringRun}; ` +
    `open-file limit ${openFileLimit()}; CPU clock ticks ${CLOCK_TICKS}/s.`,
  `- Node ${process.version}; ${versions.map((name) => `${name} ${version(name)}`).join(', ')}; lameduck ` +
    `${Object.entries(ADAPTERS)
      .map(([fw, name]) => `${fw} ${available[fw] ? version(name) : '(not built, skipped)'}`)
      .join(', ')}.`,
  `- Every server: ${COMMON_SERVER_SETTINGS}`,
  ...(exitLagsMs.length > 0
    ? [
        `- Exit lag: the parent saw a child's \`exit\` ${fmtSpread(exitLagsMs, 1)} ms (median (min–max) over ` +
          `${exitLagsMs.length} exits) after the child's own \`exit\` event — process teardown plus scheduling, ` +
          'included in every "→ exit" time measured in the parent.',
      ]
    : []),
  '',
  '## Configurations (T = the timeout of the scenario)',
  '',
  ...Object.values(LIBRARIES).map(
    (lib) => `- **${lib.label}** (${lib.frameworks.join(', ')}): ${lib.config}`,
  ),
  '',
  '## Targets, as measured in this run',
  '',
  ...(summary.length > 0 ? summary.map((line) => `- ${line}`) : ['- (no lameduck adapter was built)']),
  '',
  ...sections.flatMap((section) => [section, '']),
].join('\n')

process.stdout.write(
  `\n## Targets, as measured in this run\n\n${summary.map((line) => `- ${line}`).join('\n')}\n`,
)
const outFile =
  args.out ?? (quick ? join(BENCH_DIR, 'out', 'RESULTS.quick.md') : join(BENCH_DIR, 'RESULTS.md'))
mkdirSync(dirname(outFile), { recursive: true })
writeFileSync(outFile, report)
log(`\nbench: done in ${elapsedS} s; wrote ${outFile}`)
if (runningCount() > 0) log(`bench: ${runningCount()} server(s) still running; ending them`)
killAll()
process.exit(0)
