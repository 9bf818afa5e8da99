import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import type { RunFigures, Timeline } from '../src/run.ts'

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url))
const FRAMEWORKS = ['express', 'koa', 'fastify'] as const

// An adapter another engineer has not built yet is skipped, not failed: the demo test covers
// every framework whose package has a dist/ (all three once they exist).
function built(framework: string): boolean {
  return existsSync(new URL(`../node_modules/@lameduck/${framework}/dist/index.js`, import.meta.url))
}

interface DemoJson {
  framework: string
  timeline: Timeline
  baseline: string
  runs: { lameduck: Omit<RunFigures, 'output'>; baseline: Omit<RunFigures, 'output'> }
}

const started = new Set<ChildProcess>()
afterEach(() => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  started.clear()
})

function runCli(
  args: string[],
  ms: number,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  started.add(child)
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString()
  })
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  return within(
    ms,
    new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr }))),
    `pnpm demo ${args.join(' ')} to finish; stderr so far:\n${stderr}`,
  )
}

// Every request a run sent is in exactly one row: the table cannot show a figure nobody measured.
function expectRowsAddUp(figures: Omit<RunFigures, 'output'>): void {
  const b = figures.beforeSignal
  expect(b.completed + b.refused503 + b.lost + b.truncated + b.otherStatus).toBe(b.sent)
  const a = figures.afterSignal
  expect(
    a.servedKeepAlive +
      a.servedClose +
      a.clean503 +
      a.resets +
      a.truncated +
      a.refusedConnections +
      a.timeouts +
      a.otherStatus,
  ).toBe(a.sent)
  expect(figures.writes.inJournal + figures.writes.lost).toBe(figures.writes.acknowledged)
  expect(figures.writes.receipts).toBeLessThanOrEqual(figures.writes.journalOrders)
}

describe('pnpm demo', () => {
  it('rejects an unknown framework with the usage text and exit code 2', async () => {
    const { code, stderr } = await runCli(['--framework', 'hapi'], 10_000)
    expect(code).toBe(2)
    expect(stderr).toContain('--framework must be one of express, koa, fastify; received "hapi"')
    expect(stderr).toContain('usage: pnpm demo')
  })

  describe.each(FRAMEWORKS)('%s', (framework) => {
    it.skipIf(!built(framework))(
      'lameduck loses nothing under load and exits 0; the baseline is measured live',
      async () => {
        const started = Date.now()
        const { code, stdout, stderr } = await runCli(
          ['--framework', framework, '--json', '--seconds', '5'],
          35_000,
        )
        expect(code, stderr).toBe(0)
        const result = JSON.parse(stdout) as DemoJson
        expect(result.framework).toBe(framework)
        const { lameduck, baseline } = result.runs

        // lameduck's column: nothing lost, truncated or reset; every acknowledged order on disk.
        expect(lameduck.beforeSignal.sent).toBeGreaterThan(0)
        expect(lameduck.beforeSignal.completed).toBe(lameduck.beforeSignal.sent)
        expect(lameduck.beforeSignal.lost).toBe(0)
        expect(lameduck.beforeSignal.truncated).toBe(0)
        expect(lameduck.afterSignal.sent).toBeGreaterThan(0) // the load went on after SIGTERM
        expect(lameduck.afterSignal.resets).toBe(0)
        expect(lameduck.afterSignal.truncated).toBe(0)
        expect(lameduck.afterSignal.timeouts).toBe(0)
        expect(lameduck.writes.acknowledged).toBeGreaterThan(0)
        expect(lameduck.writes.lost).toBe(0)
        expect(lameduck.writes.receipts).toBe(lameduck.writes.journalOrders)
        expect(lameduck.exit).toMatchObject({ code: 0, signal: null, killed: false })
        expect(lameduck.exit.signalToExitMs).toBeLessThan(result.timeline.graceMs)
        expect(lameduck.report).toMatchObject({ reason: 'SIGTERM', graceful: true, exitCode: 0 })
        expect(lameduck.summary).toMatch(/^closed \(SIGTERM\) gracefully in \d+ ms: .* exit code 0$/)
        expectRowsAddUp(lameduck)

        // The baseline column was measured, not canned: it ran under the same load, its rows add up,
        // it printed no lameduck report, and its exit is either its own or our SIGKILL at the bound.
        expect(baseline.beforeSignal.sent).toBeGreaterThan(0)
        expect(baseline.afterSignal.sent).toBeGreaterThan(0)
        expect(baseline.writes.acknowledged).toBeGreaterThan(0)
        expect(baseline.report).toBeNull()
        expect(baseline.summary).toBeNull()
        expectRowsAddUp(baseline)
        if (baseline.exit.killed) {
          expect(baseline.exit).toMatchObject({ code: null, signal: 'SIGKILL' })
          expect(baseline.exit.signalToExitMs).toBeGreaterThanOrEqual(result.timeline.graceMs)
        } else {
          expect(baseline.exit.code).not.toBeNull()
          expect(baseline.exit.signalToExitMs).toBeLessThan(result.timeline.graceMs + 1000)
        }
        expect(Date.now() - started).toBeLessThan(30_000)
      },
      40_000,
    )
  })
})
