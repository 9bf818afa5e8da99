// Server child processes: start, watch, measure, and end them by PID on every exit path of the bench.
import { execFileSync, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'

const SERVER_SCRIPT = fileURLToPath(new URL('./server.mjs', import.meta.url))
/** Every child this process started and has not yet seen exit, by PID. */
const running = new Map()
/**
 * For each child that printed a probe line at its exit: milliseconds from its own 'exit' event (its
 * clock) to the parent's 'exit' event (ours, same wall clock). Process teardown and scheduling on a
 * busy machine; it is inside every "→ exit" time measured in the parent.
 */
export const exitLagsMs = []

/** Clock ticks per second of /proc/<pid>/stat's utime and stime. */
export const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100
  }
})()

/**
 * Starts `server.mjs` with `config` ({ fw, lib, timeoutMs, health, maxLifeMs }), waits for
 * `ready <port>` and returns a handle. No IPC channel: it would hold the child's event loop open and
 * hide whether a library lets the process exit by itself. Control goes through signals.
 */
export async function startServer(config, readyMs = 15_000) {
  // config.cpuProfileDir, or BENCH_CPU_PROF=<dir> for every server: a V8 CPU profile written there
  // when the server exits (not when SIGKILLed), one sample every 100 µs (V8's default is 1 ms: too
  // few samples to tell 1 % from 2 % in a few seconds).
  const profileDir = config.cpuProfileDir ?? process.env.BENCH_CPU_PROF
  const profile = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, '--cpu-prof-interval=100'] : []
  const child = spawn(process.execPath, ['--expose-gc', ...profile, SERVER_SCRIPT, JSON.stringify(config)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_ENV: 'production' },
  })
  running.set(child.pid, child)
  let stdout = ''
  let stderr = ''
  const waiters = new Set()
  const notify = () => {
    for (const waiter of [...waiters]) waiter()
  }
  child.stdout.setEncoding('utf8')
  child.stderr.setEncoding('utf8')
  child.stdout.on('data', (chunk) => {
    stdout += chunk
    notify()
  })
  // Kept short: lameduck logs a line per event, other libraries may log per connection.
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-8_000)
  })
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      const at = performance.now()
      running.delete(child.pid)
      notify()
      resolve({ code, signal, at })
    })
  })
  // 'close' comes after 'exit' once stdout is drained: the probe line is printed at exit.
  const closed = new Promise((resolve) => child.once('close', resolve))
  void Promise.all([exited, closed]).then(([exit]) => {
    const line = stdout.split('\n').find((candidate) => candidate.startsWith('probe '))
    if (line !== undefined) exitLagsMs.push(wallClock(exit.at) - JSON.parse(line.slice(6)).exitAt)
  })
  let exitInfo
  void exited.then((info) => {
    exitInfo = info
  })
  child.once('error', () => {})

  /** Resolves with the first stdout line after `from` matching `pattern`, or undefined after `ms`. */
  function waitForLine(pattern, ms, from = 0) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms)
      function done(line) {
        clearTimeout(timer)
        waiters.delete(check)
        resolve(line)
      }
      function check() {
        const line = stdout
          .slice(from)
          .split('\n')
          .find((candidate) => pattern.test(candidate))
        if (line !== undefined) done(line)
        else if (exitInfo !== undefined || child.exitCode !== null || child.signalCode !== null)
          done(undefined)
      }
      waiters.add(check)
      check()
    })
  }

  const ready = await waitForLine(/^ready \d+$/, readyMs)
  if (ready === undefined) {
    kill(child.pid)
    throw new Error(
      `server ${config.lib}/${config.fw} did not print "ready <port>" within ${readyMs} ms; stderr:\n${stderr}`,
    )
  }
  return {
    pid: child.pid,
    port: Number(ready.split(' ')[1]),
    exited,
    get exit() {
      return exitInfo
    },
    stdoutLength: () => stdout.length,
    /** The child's `probe` line (see server.mjs), once it has exited; undefined without one. */
    async probe() {
      await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 2_000))])
      const line = stdout.split('\n').find((candidate) => candidate.startsWith('probe '))
      return line === undefined ? undefined : JSON.parse(line.slice(6))
    },
    stderr: () => stderr,
    waitForLine,
    /** Sends `signal`; returns the parent's clock (performance.now()) at the moment it was sent. */
    signal(signal) {
      const at = performance.now()
      if (running.has(child.pid)) process.kill(child.pid, signal)
      return at
    },
    /** Resolves with the exit, or SIGKILLs the child after `ms` and resolves with `{ killed: true }`. */
    async waitExit(ms) {
      const timer = new Promise((resolve) => setTimeout(resolve, ms, undefined))
      const info = await Promise.race([exited, timer])
      if (info !== undefined) return info
      kill(child.pid)
      return { ...(await exited), killed: true }
    },
    /** Asks the child for a memory report (after two GCs); resolves with it, or undefined. */
    async memory(ms = 5_000) {
      const from = stdout.length
      if (!running.has(child.pid)) return undefined
      process.kill(child.pid, 'SIGUSR2')
      const line = await waitForLine(/^mem /, ms, from)
      return line === undefined ? undefined : JSON.parse(line.slice(4))
    },
    end: () => kill(child.pid),
  }
}

/**
 * Starts a server per config, all at once, and resolves with what `use(servers)` resolves with. Every
 * one started is ended by PID afterwards, whatever happened; if one fails to start, the others are
 * ended and its error is thrown.
 */
export async function withServers(configs, use) {
  const servers = []
  try {
    const started = await Promise.allSettled(configs.map((config) => startServer(config)))
    for (const outcome of started) if (outcome.status === 'fulfilled') servers.push(outcome.value)
    const failed = started.find((outcome) => outcome.status === 'rejected')
    if (failed) throw failed.reason
    return await use(servers)
  } finally {
    for (const server of servers) server.end()
    await Promise.all(servers.map((server) => server.exited))
  }
}

/** Wall-clock milliseconds of a `performance.now()` reading, comparable with a child's probe. */
export function wallClock(now) {
  return performance.timeOrigin + now
}

/** SIGKILLs one child of ours, by PID, if it is still running. */
export function kill(pid) {
  if (!running.has(pid)) return
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    // Already gone between the check and the kill.
  }
}

/** Ends every child still running, by PID. Synchronous so it can run from an 'exit' listener. */
export function killAll() {
  for (const pid of [...running.keys()]) kill(pid)
}

/** The number of children still running (for a leak check at the end). */
export function runningCount() {
  return running.size
}

/** CPU time (user + system) of process `pid` so far, in microseconds, from /proc/<pid>/stat. */
export function cpuMicros(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // The command name may contain spaces and parentheses: fields are counted after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name and state.
  const ticks = Number(fields[11]) + Number(fields[12])
  return (ticks * 1e6) / CLOCK_TICKS
}

/** Resident set size of `pid` in bytes, from /proc/<pid>/status. */
export function rssBytes(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const match = /VmRSS:\s+(\d+) kB/.exec(status)
  return match ? Number(match[1]) * 1024 : Number.NaN
}

/** The soft limit on open files of this process (children inherit it). */
export function openFileLimit() {
  try {
    const limits = readFileSync('/proc/self/limits', 'utf8')
    const match = /Max open files\s+(\d+|unlimited)/.exec(limits)
    if (match) return match[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(match[1])
  } catch {
    // Not Linux: fall through.
  }
  return 1024
}
