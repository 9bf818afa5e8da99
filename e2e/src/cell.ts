import { expect } from 'vitest'
import type { Tool } from './install.ts'
import { type Cell, type RunOptions, removeRunDir, rollingRestart } from './rolling.ts'
import { cellSummary, judge, type Verdict } from './verdict.ts'

/** `E2E_KEEP_RUNS=1`: passing runs keep their directory too, to set a failing run beside them. */
const KEEP_RUNS = process.env.E2E_KEEP_RUNS === '1'

/** The longest one run may take (a nginx run waits twice for fail_timeout, 10 s: about 30 s in all). */
export const RUN_BUDGET_MS = 120_000

/**
 * Runs `cell` `runs` times, prints the summary table, then asserts that no run broke a requirement
 * (the table and every violation are in the failure message). A run that could not be carried out at
 * all (a proxy that would not start, an instance that never got traffic) counts as a failed run; two
 * in a row end the cell early, since the harness rather than lameduck is then at fault.
 */
export async function runCell(
  tool: Tool,
  cell: Cell,
  runs: number,
  options: RunOptions,
  skip: (note: string) => void,
): Promise<void> {
  if (tool.path === undefined) {
    console.warn(`SKIPPED ${cell.name}: ${tool.reason}`)
    skip(tool.reason)
    return
  }
  const verdicts: Verdict[] = []
  const broken: string[] = []
  let brokenInARow = 0
  for (let run = 1; run <= runs && brokenInARow < 2; run++) {
    try {
      const result = await rollingRestart(tool.path, cell, run, options)
      const verdict = judge(result)
      verdicts.push(verdict)
      brokenInARow = 0
      if (verdict.violations.length > 0)
        console.log(
          `${cell.name} [${options.app}], run ${run}: failed; configs and proxy logs kept in ${result.dir}`,
        )
      else if (KEEP_RUNS) console.log(`${cell.name} [${options.app}], run ${run}: kept in ${result.dir}`)
      else removeRunDir(result)
    } catch (error) {
      brokenInARow++
      broken.push(`run ${run} could not be carried out: ${(error as Error).stack ?? String(error)}`)
    }
  }
  const summary = cellSummary(`${cell.name} [${options.app}]`, verdicts)
  console.log(summary)
  const problems = [
    ...broken,
    ...verdicts.flatMap((verdict) =>
      verdict.violations.map((violation) => `run ${verdict.row.run}: ${violation}`),
    ),
  ]
  expect(problems, `${summary}\n${problems.join('\n\n')}`).toEqual([])
}
