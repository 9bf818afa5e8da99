import { type ChildProcess, fork, spawn } from 'node:child_process'
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs'

/** How a child process ended, and when (epoch ms, taken in the 'exit' listener). */
export interface ExitInfo {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly at: number
}

/** A process this suite started; it ends only through {@link stopChild} or {@link stopAllChildren}, by PID. */
export interface Child {
  readonly name: string
  readonly process: ChildProcess
  readonly pid: number
  /** stdout and stderr so far (empty when they go to a file). */
  output(): string
  /** Resolves with the first line matching `pattern` (already printed or yet to come). */
  waitForLine(pattern: RegExp, ms: number, what: string): Promise<string>
  readonly exited: Promise<ExitInfo>
  readonly hasExited: boolean
  /** Sends `signal` by PID; returns the time it was sent (epoch ms). */
  kill(signal: NodeJS.Signals): number
}

const running = new Set<Child>()

// Last resort when the test process itself goes away: nothing started here may outlive it.
process.once('exit', () => {
  for (const child of running) killQuietly(child.pid, 'SIGKILL')
})

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal)
  } catch {
    // Already gone.
  }
}

export interface StartOptions {
  env?: Record<string, string>
  /** Send stdout and stderr to this file instead of collecting them (a proxy's access log can be large). */
  logFile?: string
  /** Fork a Node script with an IPC channel instead of spawning a command. */
  fork?: boolean
}

/**
 * Starts `command` (or forks a Node script) as a child of this process. Where `setpriv` exists the
 * child gets `SIGKILL` when its parent dies, so even a killed test run leaves no proxy behind.
 */
export function startChild(
  name: string,
  command: string,
  args: readonly string[],
  options: StartOptions = {},
): Child {
  const env = { ...process.env, ...options.env }
  let out: number | 'pipe' = 'pipe'
  if (options.logFile !== undefined) out = openSync(options.logFile, 'a')
  let child: ChildProcess
  if (options.fork) {
    child = fork(command, [...args], { env, stdio: ['ignore', out, out, 'ipc'] })
  } else if (existsSync('/usr/bin/setpriv')) {
    child = spawn('/usr/bin/setpriv', ['--pdeathsig', 'KILL', '--', command, ...args], {
      env,
      stdio: ['ignore', out, out],
    })
  } else {
    child = spawn(command, [...args], { env, stdio: ['ignore', out, out] })
  }
  if (typeof out === 'number') closeSync(out)
  if (child.pid === undefined) throw new Error(`could not start ${name} (${command})`)

  let output = ''
  const waiters = new Set<() => void>()
  const collect = (chunk: Buffer) => {
    output += chunk.toString()
    for (const waiter of waiters) waiter()
  }
  child.stdout?.on('data', collect)
  child.stderr?.on('data', collect)
  let hasExited = false
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => {
      const at = Date.now()
      hasExited = true
      running.delete(handle)
      for (const waiter of waiters) waiter()
      resolve({ code, signal, at })
    })
  })
  child.once('error', (error) => {
    output += `\n[spawn error] ${error.message}\n`
  })

  const handle: Child = {
    name,
    process: child,
    pid: child.pid,
    output: () => output,
    waitForLine(pattern, ms, what) {
      return new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(
            new Error(
              `timed out after ${ms} ms waiting for ${what} (${name}: ${pattern}); output:\n${output.slice(-4000)}`,
            ),
          )
        }, ms)
        const check = () => {
          const line = output.split('\n').find((candidate) => pattern.test(candidate))
          if (line !== undefined) {
            waiters.delete(check)
            clearTimeout(timer)
            resolve(line)
          } else if (hasExited) {
            waiters.delete(check)
            clearTimeout(timer)
            reject(new Error(`${name} exited before ${what} (${pattern}); output:\n${output.slice(-4000)}`))
          }
        }
        waiters.add(check)
        check()
      })
    },
    exited,
    get hasExited() {
      return hasExited
    },
    kill(signal) {
      const at = Date.now()
      killQuietly(child.pid as number, signal)
      return at
    },
  }
  running.add(handle)
  return handle
}

/** Ends `child` by PID: `signal`, then `SIGKILL` if it has not exited after `graceMs`. Resolves with its exit. */
export async function stopChild(
  child: Child,
  signal: NodeJS.Signals = 'SIGTERM',
  graceMs = 5_000,
): Promise<ExitInfo> {
  if (child.hasExited) return child.exited
  if (signal === 'SIGKILL') for (const pid of childPids(child.pid)) killQuietly(pid, 'SIGKILL')
  child.kill(signal)
  let timer: NodeJS.Timeout | undefined
  const killed = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      for (const pid of childPids(child.pid)) killQuietly(pid, 'SIGKILL')
      child.kill('SIGKILL')
      resolve()
    }, graceMs)
  })
  await Promise.race([child.exited, killed])
  clearTimeout(timer)
  return child.exited
}

/** Ends every child still running (for `afterAll` and failure paths), each by PID. */
export async function stopAllChildren(): Promise<void> {
  await Promise.all([...running].map((child) => stopChild(child, 'SIGTERM', 3_000)))
}

/** PIDs of the direct children of `pid` (nginx workers under their master), from /proc. */
function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number)
  } catch {
    return []
  }
}
