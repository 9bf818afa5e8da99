import { type ChildProcess, fork } from 'node:child_process'
import { until, within } from './wait.js'

/** A fixture script running as a child process, its output collected. */
export interface Fixture {
  readonly child: ChildProcess
  readonly port: number
  /** stdout and stderr so far, interleaved in arrival order. */
  output(): string
  /** Resolves once a line matching `pattern` was printed. */
  waitForLine(pattern: RegExp | string, ms?: number): Promise<string>
  /** Resolves when the child exits, with its code, signal, and the milliseconds since `since()` was marked. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>
  /** Sends a signal; records the time. */
  kill(signal: NodeJS.Signals): number
}

const running = new Set<ChildProcess>()

/**
 * Forks `script` (an .mjs or .cjs file importing the built `dist/`), waits for it to print
 * `ready <port>`, and returns it. The child is tracked so {@link stopFixtures} can end it by PID.
 */
export async function startFixture(
  script: string,
  args: string[] = [],
  env: Record<string, string> = {},
  readyMs = 10_000,
): Promise<Fixture> {
  const child = fork(script, args, {
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    env: { ...process.env, ...env },
  })
  running.add(child)
  let output = ''
  const waiters = new Set<() => void>()
  const collect = (chunk: Buffer) => {
    output += chunk.toString()
    for (const waiter of waiters) waiter()
  }
  child.stdout?.on('data', collect)
  child.stderr?.on('data', collect)
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>(
    (resolve) => {
      child.once('exit', (code, signal) => {
        running.delete(child)
        for (const waiter of waiters) waiter()
        resolve({ code, signal, at: Date.now() })
      })
    },
  )
  const waitForLine = (pattern: RegExp | string, ms = 5_000) =>
    within(
      ms,
      new Promise<string>((resolve, reject) => {
        const check = () => {
          const line = output
            .split('\n')
            .find((l) => (typeof pattern === 'string' ? l.includes(pattern) : pattern.test(l)))
          if (line !== undefined) {
            waiters.delete(check)
            resolve(line)
          } else if (child.exitCode !== null || child.signalCode !== null) {
            waiters.delete(check)
            reject(new Error(`fixture exited before printing ${String(pattern)}; output:\n${output}`))
          }
        }
        waiters.add(check)
        check()
      }),
      `${script} to print ${String(pattern)}; output so far:\n${output}`,
    )
  const ready = await waitForLine(/^ready \d+/, readyMs)
  const port = Number(ready.split(' ')[1])
  return {
    child,
    port,
    output: () => output,
    waitForLine,
    exited,
    kill(signal) {
      child.kill(signal)
      return Date.now()
    },
  }
}

/** What lameduck logs for a signal it takes as a repeat of the one before (within 500 ms of it). */
const REPEAT = 'taken as the same request to stop'

/**
 * Sends `signal` until the fixture counts one as a new signal, shown by `counted` in its output:
 * lameduck takes a signal within 500 ms of the one before as a repeat, and logs each such one, so
 * each send waits for its own answer (that line, or `counted`) before the next. Returns when the
 * one that counted was sent.
 */
export async function signalUntilCounted(
  fixture: Fixture,
  signal: NodeJS.Signals,
  counted: string,
  ms = 3_000,
): Promise<number> {
  const deadline = Date.now() + ms
  const repeats = () => fixture.output().split(REPEAT).length - 1
  for (;;) {
    const before = repeats()
    const sentAt = fixture.kill(signal)
    await until(
      () => fixture.output().includes(counted) || repeats() > before,
      Math.max(1, deadline - Date.now()),
      `${signal} to be counted (${counted})`,
    )
    if (fixture.output().includes(counted)) return sentAt
  }
}

/** Ends, by PID, every fixture this process started that is still running (for `afterEach`). */
export async function stopFixtures(): Promise<void> {
  const children = [...running]
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve()
          child.once('exit', () => resolve())
          child.kill('SIGKILL')
        }),
    ),
  )
}
