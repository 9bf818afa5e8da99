import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { type Child, type ExitInfo, startChild, stopChild } from './children.ts'
import { type HaproxyLog, readHaproxyLog, startHaproxy } from './haproxy.ts'
import { type NginxLog, readNginxLog, startNginx } from './nginx.ts'
import { freePorts } from './ports.ts'

const fixtures = fileURLToPath(new URL('../fixtures/', import.meta.url))

/** One cell of the matrix: a proxy setup and the app's drain delay. */
export type Cell =
  | {
      readonly proxy: 'haproxy'
      readonly name: string
      readonly drainDelayMs: number
      readonly retries: boolean
    }
  | {
      readonly proxy: 'nginx'
      readonly name: string
      readonly drainDelayMs: number
      readonly failTimeoutS: number
      /** A known open bug makes some runs of this cell fail: CI mode (one run) lists it as todo. */
      readonly blocked?: string
    }

/** The app under the proxy: an adapter, or `core` (the bare core, to tell adapter bugs from core bugs). */
export type App = 'express' | 'koa' | 'fastify' | 'core'

/** Knobs shared by every run, from the environment (see e2e/README.md). */
export interface RunOptions {
  /** Which fixture runs as the app instances: `fixtures/<app>-app.mjs`. */
  readonly app: App
  readonly connections: number
  /** Mean pause between a connection's requests, in ms. */
  readonly gapMs: number
  /** The app's `timeoutMs`. */
  readonly timeoutMs: number
  /** HAProxy check interval, fall and rise. */
  readonly checkIntervalMs: number
  readonly fall: number
  readonly rise: number
}

/** What the load generator saw (fixtures/load.mjs). */
export interface LoadResult {
  readonly startedAt: number
  readonly endedAt: number
  readonly stoppedBy: string
  readonly requests: number
  readonly byMethod: Readonly<Record<'GET' | 'POST', { sent: number; ok: number }>>
  readonly outcomes: Readonly<Record<string, number>>
  readonly instances: Readonly<Record<string, number>>
  readonly connectionsOpened: number
  readonly failures: readonly {
    at: number
    connection: number
    method: string
    path: string
    outcome: string
    detail: string
    reused: boolean
    ms: number
  }[]
  readonly latencyMs: { p50: number; p99: number; max: number }
}

/** One old instance's SIGTERM and what followed. */
export interface Restart {
  readonly instance: string
  readonly port: number
  readonly signalledAt: number
  readonly exit: ExitInfo
  /**
   * Milliseconds from SIGTERM to the process's own `'exit'` event (the `exit <code> <ms>` line it
   * prints), or to the suite seeing it exit when that line is missing. The app's stamp is used so a
   * busy test process, slow to notice the exit, does not count against lameduck.
   */
  readonly exitMs: number
  /** Milliseconds from SIGTERM to the suite seeing the exit (includes its own scheduling delay). */
  readonly seenExitMs: number
  /** Milliseconds from SIGTERM to the app entering `draining`: how long the signal took to be handled. */
  readonly signalMs: number | undefined
  /** The old process's worst event-loop delay from its signal to its exit (ms): a starved process shows here. */
  readonly lagMs: number | undefined
  /** Milliseconds from the old exit to the replacement listening, then to it taking proxied traffic. */
  readonly replacementReadyMs: number
  readonly replacementTrafficMs: number
  /** The old process's stdout and stderr (state changes, lameduck's log lines, exit). */
  readonly output: string
}

export interface RunResult {
  readonly cell: Cell
  readonly run: number
  readonly dir: string
  readonly durationMs: number
  readonly load: LoadResult
  readonly restarts: readonly Restart[]
  readonly haproxy?: HaproxyLog
  readonly nginx?: NginxLog
}

function startApp(options: RunOptions, cell: Cell, instance: string, port: number): Child {
  const script = join(fixtures, `${options.app}-app.mjs`)
  return startChild(instance, process.execPath, [script], {
    env: {
      PORT: String(port),
      INSTANCE: instance,
      DRAIN_DELAY_MS: String(cell.drainDelayMs),
      TIMEOUT_MS: String(options.timeoutMs),
    },
  })
}

function deadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

/**
 * One rolling restart under load: instances a1 and b1 behind the proxy, 32 keep-alive connections of
 * GETs and POSTs, in a steady state (each instance has served 200 requests); SIGTERM a1, start a2 on
 * its port once a1 has exited, wait until the proxy has sent a2 200 requests; the same for b1 → b2;
 * stop the load. Every process started here is ended by PID before
 * this returns or throws. The run's directory (configs, proxy logs) is kept; the caller removes it.
 */
export async function rollingRestart(
  binary: string,
  cell: Cell,
  run: number,
  options: RunOptions,
): Promise<RunResult> {
  const dir = mkdtempSync(join(tmpdir(), `lameduck-e2e-${cell.proxy}-`))
  const [proxyPort, portA, portB] = (await freePorts(3)) as [number, number, number]
  const started: Child[] = []
  const app = (instance: string, port: number) => {
    const child = startApp(options, cell, instance, port)
    started.push(child)
    return child
  }
  const startedAt = Date.now()
  try {
    const a1 = app('a1', portA)
    const b1 = app('b1', portB)
    await Promise.all([a1, b1].map((child) => child.waitForLine(/^ready \d+/, 15_000, 'the app to listen')))

    const servers = [
      { name: 'a', port: portA },
      { name: 'b', port: portB },
    ]
    let proxyChild: Child
    let readLog: () => Pick<RunResult, 'haproxy' | 'nginx'>
    if (cell.proxy === 'haproxy') {
      const haproxy = await startHaproxy(binary, dir, {
        listenPort: proxyPort,
        servers,
        checkIntervalMs: options.checkIntervalMs,
        fall: options.fall,
        rise: options.rise,
        retries: cell.retries,
      })
      started.push(haproxy.child)
      proxyChild = haproxy.child
      readLog = () => ({ haproxy: readHaproxyLog(haproxy.logFile) })
    } else {
      const nginx = await startNginx(binary, dir, {
        listenPort: proxyPort,
        servers,
        failTimeoutS: cell.failTimeoutS,
      })
      started.push(nginx.child)
      proxyChild = nginx.child
      readLog = () => ({ nginx: readNginxLog(nginx) })
    }

    const load = startChild(
      'load',
      join(fixtures, 'load.mjs'),
      [JSON.stringify({ port: proxyPort, connections: options.connections, gapMs: options.gapMs })],
      {
        fork: true,
      },
    )
    started.push(load)
    const loadResult = new Promise<LoadResult>((resolve, reject) => {
      load.process.on('message', (message: { type: string; result?: LoadResult }) => {
        if (message.type === 'done' && message.result) resolve(message.result)
      })
      void load.exited.then((exit) =>
        reject(
          new Error(
            `the load generator exited (${exit.code ?? exit.signal}) without a result:\n${load.output()}`,
          ),
        ),
      )
    })
    loadResult.catch(() => {}) // awaited below; this only keeps an early rejection from going unhandled
    const warm = new Promise<void>((resolve) => {
      load.process.on('message', (message: { type: string }) => {
        if (message.type === 'warm') resolve()
      })
    })
    await deadline(
      Promise.race([warm, loadResult.then(() => {})]),
      30_000,
      'the load to reach a steady state',
    )
    await Promise.all(
      [a1, b1].map((child) => child.waitForLine(/^warm /, 30_000, 'the proxy to send it 200 requests')),
    )

    const restarts: Restart[] = []
    const roll = async (old: Child, port: number, next: string): Promise<Child> => {
      const signalledAt = old.kill('SIGTERM')
      const exitBound = cell.drainDelayMs + options.timeoutMs + 5_000
      let exit: ExitInfo
      try {
        exit = await deadline(old.exited, exitBound, `${old.name} to exit after SIGTERM`)
      } catch {
        exit = await stopChild(old, 'SIGKILL', 1_000) // recorded: code null, signal SIGKILL
      }
      const replacement = app(next, port)
      await replacement.waitForLine(/^ready \d+/, 15_000, 'the replacement to listen')
      const readyAt = Date.now()
      // A rolling deploy moves on once the proxy routes to the replacement (nginx: after fail_timeout)
      // and it has been in service a little while (a Deployment's minReadySeconds): 200 requests.
      const trafficBound = (cell.proxy === 'nginx' ? cell.failTimeoutS * 1_000 : 0) + 20_000
      await replacement.waitForLine(/^traffic /, trafficBound, 'the proxy to route to the replacement')
      const trafficAt = Date.now()
      await replacement.waitForLine(/^warm /, 30_000, 'the proxy to send the replacement 200 requests')
      const stamp = (pattern: RegExp) => {
        const found = pattern.exec(old.output())?.[1]
        return found === undefined ? undefined : Number(found)
      }
      const exitedAt = stamp(/^exit -?\d+ (\d+)$/m)
      const drainingAt = stamp(/^state draining (\d+)$/m)
      restarts.push({
        instance: old.name,
        port,
        signalledAt,
        exit,
        exitMs: (exitedAt ?? exit.at) - signalledAt,
        seenExitMs: exit.at - signalledAt,
        signalMs: drainingAt === undefined ? undefined : drainingAt - signalledAt,
        lagMs: stamp(/^lag (\d+) /m),
        replacementReadyMs: readyAt - exit.at,
        replacementTrafficMs: trafficAt - readyAt,
        output: old.output(),
      })
      return replacement
    }
    const a2 = await roll(a1, portA, 'a2')
    const b2 = await roll(b1, portB, 'b2')

    load.process.send('stop')
    const result = await deadline(loadResult, 20_000, 'the load generator to finish its last requests')
    // Stop the proxy before reading its logs, so everything is flushed; then the replacements.
    await stopChild(proxyChild, 'SIGTERM')
    const logs = readLog()
    await Promise.all([a2, b2].map((child) => stopChild(child, 'SIGTERM', options.timeoutMs + 2_000)))
    const runResult: RunResult = {
      cell,
      run,
      dir,
      durationMs: Date.now() - startedAt,
      load: result,
      restarts,
      ...logs,
    }
    writeFileSync(join(dir, 'result.json'), JSON.stringify(runResult, null, 2))
    return runResult
  } catch (error) {
    ;(error as Error).message += `\n(run directory: ${dir})`
    throw error
  } finally {
    // Normally all gone by now; after a failure, SIGTERM lets nginx's master end its own workers.
    await Promise.all(started.map((child) => stopChild(child, 'SIGTERM', 2_000)))
  }
}

/** Removes a run's directory (configs and proxy logs): done for runs that met every assertion. */
export function removeRunDir(result: RunResult): void {
  rmSync(result.dir, { recursive: true, force: true })
}
